import type { Clock } from '../clock.js'
import type { EvictionReason } from '../registry/registry-events.js'
import type { ConnectionBudget } from './connection-budget.js'
import type { ConnectionTarget } from './connection-target.js'
import { TargetPool } from './target-pool.js'
import type { ConnectionErrorReporter, PoolSizing } from './target-pool.js'

const MAX_LABEL_OWNERS = 10_000

export interface PoolCacheLimits {
  /** Most physical pools at once. */
  readonly maxPools: number
  /** A pool with nothing checked out for this long is ended by the sweep. */
  readonly idleTtlMs: number
}

export interface PoolCacheEvents {
  created(pool: TargetPool): void
  evicted(pool: TargetPool, reason: EvictionReason): void
  ended(pool: TargetPool, forced: boolean): void
}

/**
 * Physical pools by connection-target identity. Creating one is synchronous (it opens nothing), so
 * there is no creation in flight to race with. At `maxPools` the least recently used unused pool makes
 * room; when every pool is in use, `obtain` says so and the caller waits its turn in the fair queue.
 */
export class TargetPoolCache {
  readonly #pools = new Map<string, TargetPool>()
  readonly #draining = new Set<TargetPool>()
  /** Which target a bare label belongs to (one entry per host:port/database@user seen). */
  readonly #labelOwners = new Map<string, string>()
  readonly #limits: PoolCacheLimits
  readonly #sizing: PoolSizing
  readonly #clock: Clock
  readonly #events: PoolCacheEvents
  readonly #report: ConnectionErrorReporter
  readonly #evictions: Record<EvictionReason, number> = { idle: 0, lru: 0, manual: 0, close: 0 }
  #created = 0

  constructor(limits: PoolCacheLimits, sizing: PoolSizing, clock: Clock, events: PoolCacheEvents, report: ConnectionErrorReporter) {
    this.#limits = limits
    this.#sizing = sizing
    this.#clock = clock
    this.#events = events
    this.#report = report
  }

  /** Pools ended so far, by reason (a copy). */
  get evictions(): Record<EvictionReason, number> {
    return { ...this.#evictions }
  }

  /**
   * Listeners run after the cache is consistent again: one that starts a query from a `pool:create` or
   * `pool:evict` listener must not re-enter `obtain` halfway through.
   */
  #announce(emit: () => void): void {
    queueMicrotask(emit)
  }

  get size(): number {
    return this.#pools.size
  }

  get created(): number {
    return this.#created
  }

  get max(): number {
    return this.#limits.maxPools
  }

  get(target: ConnectionTarget): TargetPool | undefined {
    return this.#pools.get(target.identity)
  }

  /** The target's pool, created if there is room (evicting an unused pool at the cap); undefined when full. */
  obtain(target: ConnectionTarget, budget: ConnectionBudget): TargetPool | undefined {
    const existing = this.#pools.get(target.identity)
    if (existing !== undefined) return existing
    if (this.#pools.size >= this.#limits.maxPools && !this.#evictLeastRecentlyUsed()) return undefined
    const name = this.#nameFor(target)
    const pool = new TargetPool(target, name, budget, this.#sizing, this.#clock, this.#report)
    this.#pools.set(target.identity, pool)
    this.#created++
    this.#announce(() => this.#events.created(pool))
    return pool
  }

  pools(): TargetPool[] {
    return [...this.#pools.values()]
  }

  draining(): TargetPool[] {
    return [...this.#draining]
  }

  /** Every pool of a server, live and draining (to close an idle connection when the budget is full). */
  *onServer(server: string): Iterable<TargetPool> {
    for (const pool of this.#pools.values()) if (pool.target.server === server) yield pool
    for (const pool of this.#draining) if (pool.target.server === server) yield pool
  }

  /** Stop routing to `pool`; it ends once its checked-out connections come back. Resolves then. */
  retire(pool: TargetPool, reason: EvictionReason): Promise<void> {
    if (this.#pools.get(pool.target.identity) !== pool) return pool.retire()
    this.#pools.delete(pool.target.identity)
    this.#evictions[reason]++
    this.#draining.add(pool)
    this.#announce(() => this.#events.evicted(pool, reason))
    return pool.retire().then(() => {
      pool.stopTimers()
      this.#draining.delete(pool)
      this.#events.ended(pool, false)
    })
  }

  /** Ends pools unused for `idleTtlMs`. */
  sweep(): void {
    const cutoff = this.#clock.now() - this.#limits.idleTtlMs
    for (const pool of [...this.#pools.values()]) {
      if (pool.unused && pool.lastUsedAt <= cutoff) void this.retire(pool, 'idle')
    }
  }

  /** Registry close at its deadline: end everything now; `forced` says whether work was cut off. */
  forceCloseAll(): void {
    for (const pool of [...this.#pools.values(), ...this.#draining]) {
      const cutOff = !pool.unused
      pool.forceClose()
      pool.stopTimers()
      if (this.#draining.delete(pool) || this.#pools.delete(pool.target.identity)) this.#announce(() => this.#events.ended(pool, cutOff))
    }
  }

  /**
   * Stable and unique per target: the label for the first target seen with it, label#<identity prefix>
   * for any other (two credentials or TLS settings for one database@user), so a name never moves from
   * one target to another. A draining pool's replacement of the same target gets a `-2`.
   */
  #nameFor(target: ConnectionTarget): string {
    let owner = this.#labelOwners.get(target.label)
    if (owner === undefined && this.#labelOwners.size < MAX_LABEL_OWNERS) this.#labelOwners.set(target.label, (owner = target.identity))
    const base = owner === target.identity ? target.label : `${target.label}#${target.identity.slice(0, 8)}`
    const draining = [...this.#draining].some((pool) => pool.name === base)
    return draining ? `${base}-2` : base
  }

  /** The name a pool of `target` would get now (for metrics about callers waiting for it); records nothing. */
  peekName(target: ConnectionTarget): string {
    const owner = this.#labelOwners.get(target.label)
    const base = owner === undefined || owner === target.identity ? target.label : `${target.label}#${target.identity.slice(0, 8)}`
    return [...this.#draining].some((pool) => pool.name === base) ? `${base}-2` : base
  }

  #evictLeastRecentlyUsed(): boolean {
    let victim: TargetPool | undefined
    for (const pool of this.#pools.values()) {
      if (pool.unused && (victim === undefined || pool.lastUsedAt < victim.lastUsedAt)) victim = pool
    }
    if (victim === undefined) return false
    void this.retire(victim, 'lru')
    return true
  }
}
