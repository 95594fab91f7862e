/**
 * Waiters grouped by tenant: FIFO within a tenant; across tenants the one holding the fewest connections
 * goes first, ties in round-robin order (the Map's insertion order: a tenant that was just served moves
 * to the back). So a tenant with 100 queued requests delays another tenant's request by at most one turn.
 */
export class FairQueue<TKey, TItem> {
  readonly #queues = new Map<TKey, TItem[]>()
  #size = 0

  get size(): number {
    return this.#size
  }

  push(key: TKey, item: TItem): void {
    const queue = this.#queues.get(key)
    if (queue === undefined) this.#queues.set(key, [item])
    else queue.push(item)
    this.#size++
  }

  /** Removes one item (a waiter that timed out or was cancelled). */
  remove(key: TKey, item: TItem): boolean {
    const queue = this.#queues.get(key)
    const index = queue?.indexOf(item) ?? -1
    if (queue === undefined || index < 0) return false
    queue.splice(index, 1)
    if (queue.length === 0) this.#queues.delete(key)
    this.#size--
    return true
  }

  /**
   * Offers each tenant's first waiter to `tryServe`, tenants with the lowest `share` first (ties in
   * rotation order); serves at most one. The served tenant moves to the back of the rotation. Returns
   * the served item, or undefined when none could be.
   */
  serveOne(tryServe: (item: TItem, key: TKey) => boolean, share: (key: TKey) => number): TItem | undefined {
    // Tenants holding nothing first, in rotation order (the common case: no sorting); then the rest by share.
    let holders: [TKey, TItem[]][] | undefined
    for (const entry of this.#queues) {
      if (share(entry[0]) > 0) (holders ??= []).push(entry)
      else {
        const served = this.#serveHead(entry, tryServe)
        if (served !== undefined) return served
      }
    }
    if (holders === undefined) return undefined
    if (holders.length > 1) holders.sort(([a], [b]) => share(a) - share(b))
    for (const entry of holders) {
      const served = this.#serveHead(entry, tryServe)
      if (served !== undefined) return served
    }
    return undefined
  }

  #serveHead([key, queue]: [TKey, TItem[]], tryServe: (item: TItem, key: TKey) => boolean): TItem | undefined {
    const head = queue[0] as TItem
    if (!tryServe(head, key)) return undefined
    queue.shift()
    this.#size--
    this.#queues.delete(key)
    if (queue.length > 0) this.#queues.set(key, queue)
    return head
  }

  /** Empties the queue, returning every item in order. */
  drain(): TItem[] {
    const all: TItem[] = []
    for (const queue of this.#queues.values()) all.push(...queue)
    this.#queues.clear()
    this.#size = 0
    return all
  }
}
