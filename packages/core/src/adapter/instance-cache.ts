/**
 * A bounded, least-recently-used map from org id to a tenant-bound ORM instance. Adapters use it so
 * `getDb(orgId)` is cheap and synchronous without growing without bound under tenant churn. Instances
 * own no connections (the registry does), so dropping one needs no cleanup.
 */
export class InstanceCache<T> {
  readonly #map = new Map<string, T>()
  readonly #max: number
  readonly #create: (orgId: string) => T

  constructor(create: (orgId: string) => T, max = 1_000) {
    this.#create = create
    this.#max = max
  }

  /** The org's instance: the cached one, else a new one from `create` (dropping the least recently used past `max`). */
  get(orgId: string): T {
    const map = this.#map
    const hit = map.get(orgId)
    if (hit !== undefined) {
      // refresh recency only when it is not already the newest entry
      if (map.size > 1) {
        map.delete(orgId)
        map.set(orgId, hit)
      }
      return hit
    }
    const created = this.#create(orgId)
    map.set(orgId, created)
    if (map.size > this.#max) map.delete(map.keys().next().value as string)
    return created
  }

  /** The cached instance, if any, without creating one or touching its recency (a hot path's cheap probe). */
  peek(orgId: string): T | undefined {
    return this.#map.get(orgId)
  }

  /** How many instances are cached. */
  get size(): number {
    return this.#map.size
  }

  /** Drop every instance. */
  clear(): void {
    this.#map.clear()
  }
}
