import type { Clock, TimerHandle } from '../clock.js'

/** What the watch needs of a checkout. */
export interface Watched {
  readonly acquiredAt: number
}

/**
 * Checkouts held longer than `thresholdMs`: one timer, set for the oldest checkout. Checkouts are added in
 * acquire order, which is deadline order (one threshold for all), so a firing only looks at the front.
 * Each checkout is reported once; a released one is simply forgotten.
 */
export class LeakWatch<T extends Watched> {
  readonly thresholdMs: number
  readonly #clock: Clock
  readonly #report: (checkout: T, heldMs: number) => void
  readonly #held = new Set<T>()
  #timer: TimerHandle | undefined

  constructor(thresholdMs: number, clock: Clock, report: (checkout: T, heldMs: number) => void) {
    this.thresholdMs = thresholdMs
    this.#clock = clock
    this.#report = report
  }

  add(checkout: T): void {
    this.#held.add(checkout)
    this.#timer ??= this.#schedule(this.thresholdMs)
  }

  delete(checkout: T): void {
    this.#held.delete(checkout)
  }

  stop(): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer)
    this.#timer = undefined
    this.#held.clear()
  }

  #schedule(delay: number): TimerHandle {
    const timer = this.#clock.setTimeout(() => this.#fire(), Math.max(1, delay))
    // A leak report must never keep a process (or a frozen Lambda) alive.
    timer.unref?.()
    return timer
  }

  #fire(): void {
    this.#timer = undefined
    const now = this.#clock.now()
    for (const checkout of this.#held) {
      const heldMs = now - checkout.acquiredAt
      if (heldMs < this.thresholdMs) {
        this.#timer = this.#schedule(this.thresholdMs - heldMs)
        return
      }
      this.#held.delete(checkout)
      this.#report(checkout, heldMs)
    }
  }
}
