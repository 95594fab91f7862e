/**
 * FIFO serialisation of work on one connection. pg 8.23 deprecates calling `client.query()` while the
 * client is busy (removed in pg@9), so every statement of a transaction goes through a queue and the
 * client never sees two queries at once. Tasks start in the order they were queued.
 */
export class QueryQueue {
  // Settles (never rejects) when everything queued so far has finished.
  #tail: Promise<void> = Promise.resolve()

  /** Runs `task` after every task queued before it has settled. */
  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(task)
    this.#tail = result.then(ignore, ignore)
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
    const acquired = this.#tail.then(() => free)
    this.#tail = held
    return acquired
  }
}

function ignore(): void {}
