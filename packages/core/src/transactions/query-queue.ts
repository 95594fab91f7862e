/**
 * FIFO serialisation of work on one connection. pg 8.23 deprecates calling `client.query()` while the
 * client is busy (removed in pg@9), so every statement of a transaction goes through a queue and the
 * client never sees two queries at once. Tasks start in the order they were queued.
 */
export class QueryQueue {
  // Settles (never rejects) when everything queued so far has finished.
  #tail: Promise<void> = Promise.resolve()
  // Tasks and holds queued or running; when 0 a task starts at once (no extra promise hops per query).
  #busy = 0
  readonly #settle = (): void => {
    this.#busy--
  }

  /** Runs `task` after every task queued before it has settled. */
  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#busy++ === 0 ? start(task) : this.#tail.then(task)
    this.#tail = result.then(this.#settle, this.#settle)
    return result
  }

  /**
   * Takes the queue: resolves, once earlier tasks have settled, with a function that gives it back.
   * Tasks queued meanwhile wait. A savepoint scope holds its parent's queue for its whole lifetime,
   * so a query of the parent frame cannot slip into the open savepoint.
   */
  hold(): Promise<() => void> {
    let free!: () => void
    const held = new Promise<void>((resolve) => {
      free = resolve
    })
    const acquired = this.#busy++ === 0 ? Promise.resolve(free) : this.#tail.then(() => free)
    this.#tail = held.then(this.#settle)
    return acquired
  }
}

function start<T>(task: () => Promise<T>): Promise<T> {
  try {
    return task()
  } catch (error) {
    return Promise.reject(error instanceof Error ? error : new Error(String(error)))
  }
}
