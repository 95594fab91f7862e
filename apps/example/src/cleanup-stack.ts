/** Cleanups run in reverse order of registration; every one runs even if an earlier one fails. */
export class CleanupStack {
  readonly #steps: Array<{ name: string; run: () => Promise<void> | void }> = []
  #running: Promise<Error[]> | undefined

  defer(name: string, run: () => Promise<void> | void): void {
    this.#steps.push({ name, run })
  }

  /** Idempotent; resolves with the failures (never rejects) so that callers can report them and move on. */
  run(): Promise<Error[]> {
    this.#running ??= (async () => {
      const failures: Error[] = []
      for (const step of this.#steps.splice(0).reverse()) {
        try {
          await step.run()
        } catch (error) {
          const reason = error instanceof Error ? error.message : String(error)
          failures.push(new Error(`cleanup "${step.name}" failed: ${reason}`, { cause: error }))
        }
      }
      return failures
    })()
    return this.#running
  }
}
