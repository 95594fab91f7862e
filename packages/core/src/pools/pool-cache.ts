import type { PoolClient } from 'pg'
import type { Clock, TimerHandle } from '../clock.js'
import { PoolCapacityError } from '../hyperconn-error.js'
import type { EvictionReason } from '../registry/registry-events.js'
import type { TenantPool } from './tenant-pool.js'
import type { TenantKey } from '../tenant-types.js'

/** One cached pool and the bookkeeping that decides when it may be ended. */
export interface PoolEntry {
  readonly key: TenantKey
  readonly pool: TenantPool
  /** Resolved once, handed to every cache hit: `getPool` allocates nothing on the hot path. */
  readonly resolved: Promise<TenantPool>
  /** Secret strings of this tenant, for redacting errors. */
  redactions: readonly string[]
  /** Coarse time of last use (refreshed by the sweeper and on releases); for idle eviction. */
  lastUsedAt: number
  /** Use sequence number; for least-recently-used ordering. */
  lastUse: number
  /** `acquire()` calls still waiting for a client: the pool must not end under them. */
  pendingLeases: number
  /** Clients checked out of this pool right now (pool `acquire`/`release` events). */
  readonly checkedOut: Set<PoolClient>
  retired: boolean
  ended: Promise<void> | undefined
  onMaybeIdle: (() => void) | undefined
  /** `pool:end` was reported (forced at a close deadline, or when the pool really ended). */
  endReported: boolean
  readonly secretName: string
  readonly secretKey: string
  /** Fingerprint of the secret version the pool's credentials come from. */
  fingerprint: string
  /** host:port/database@user: a secret that changes it needs a new pool. */
  readonly target: string
}

export interface PoolCacheOptions {
  readonly maxPools: number
  readonly idleTtlMs: number
  readonly sweepIntervalMs: number
}

export interface PoolCacheHooks {
  create(key: TenantKey): Promise<PoolEntry>
  /** A created pool was inserted into the cache (discarded ones are never reported). */
  onCreated(entry: PoolEntry): void
  /** Called for every live pool the sweeper keeps. */
  onSweep(entry: PoolEntry): void
  onEvict(entry: PoolEntry, reason: EvictionReason): void
  onEnd(entry: PoolEntry, forced: boolean): void
}

/**
 * Pools keyed by (service, orgId) in nested maps, so no two tenants can ever share a key. Creation is
 * single-flight; `maxPools` is enforced by evicting the least recently used idle pool; idle pools are
 * ended by an unref'd sweeper. A pool is only ended once nothing is checked out of it or waiting on it.
 */
export class PoolCache {
  readonly #entries = new Map<string, Map<string, PoolEntry>>()
  readonly #pending = new Map<string, Map<string, Promise<PoolEntry>>>()
  readonly #retiring = new Set<PoolEntry>()
  readonly #options: PoolCacheOptions
  readonly #clock: Clock
  readonly #hooks: PoolCacheHooks
  #size = 0
  #pendingCount = 0
  // Date.now() per lookup was a third of getPool's cost: recency is a counter, time is refreshed by the
  // sweeper and on releases, so a pool may be ended up to one sweep interval after idleTtlMs, never before.
  #tick = 0
  #coarseNow: number
  #sweeper: TimerHandle | undefined
  readonly evictions: Record<EvictionReason, number> = { idle: 0, lru: 0, manual: 0, rotation: 0, close: 0 }
  created = 0

  constructor(options: PoolCacheOptions, clock: Clock, hooks: PoolCacheHooks) {
    this.#options = options
    this.#clock = clock
    this.#hooks = hooks
    this.#coarseNow = clock.now()
  }

  /** Current time for bookkeeping, refreshing the coarse clock. */
  now(): number {
    return (this.#coarseNow = this.#clock.now())
  }

  /** Marks an entry used now (off the hot path: on release of a client). */
  touch(entry: PoolEntry): void {
    entry.lastUsedAt = this.now()
    entry.lastUse = ++this.#tick
  }

  get size(): number {
    return this.#size
  }

  get pendingCount(): number {
    return this.#pendingCount
  }

  /** Hot path: a cached pool, touched for LRU. */
  peek(service: string, orgId: string): PoolEntry | undefined {
    const entry = this.#entries.get(service)?.get(orgId)
    if (entry !== undefined) {
      entry.lastUsedAt = this.#coarseNow
      entry.lastUse = ++this.#tick
    }
    return entry
  }

  /** The cached entry, or one created once for all concurrent callers (failures are not cached). */
  get(key: TenantKey): Promise<PoolEntry> {
    const entry = this.peek(key.service, key.orgId)
    if (entry) return Promise.resolve(entry)
    let byOrg = this.#pending.get(key.service)
    const inFlight = byOrg?.get(key.orgId)
    if (inFlight) return inFlight
    if (!byOrg) this.#pending.set(key.service, (byOrg = new Map()))
    const pendingMap = byOrg
    this.#pendingCount++
    const promise = this.#create(key).finally(() => {
      pendingMap.delete(key.orgId)
      this.#pendingCount--
    })
    pendingMap.set(key.orgId, promise)
    return promise
  }

  async #create(key: TenantKey): Promise<PoolEntry> {
    // Room is made before and after the async part: concurrent creations may have filled the cap meanwhile.
    this.#makeRoom()
    const entry = await this.#hooks.create(key)
    this.touch(entry)
    try {
      this.#makeRoom()
    } catch (error) {
      void entry.pool.shutdown()
      throw error
    }
    let byOrg = this.#entries.get(key.service)
    if (!byOrg) this.#entries.set(key.service, (byOrg = new Map()))
    byOrg.set(key.orgId, entry)
    this.#size++
    this.created++
    this.#hooks.onCreated(entry)
    return entry
  }

  /**
   * LRU among idle pools; when every pool is busy the cap holds and the caller gets `PoolCapacityError`.
   * Creations in flight count against the cap, so concurrent misses can't evict each other's new pools.
   */
  #makeRoom(): void {
    while (this.#size + this.#pendingCount > this.#options.maxPools) {
      let victim: PoolEntry | undefined
      for (const byOrg of this.#entries.values()) {
        for (const entry of byOrg.values()) {
          if (isBusy(entry)) continue
          if (!victim || entry.lastUse < victim.lastUse) victim = entry
        }
      }
      if (!victim) throw new PoolCapacityError(this.#options.maxPools)
      void this.retire(victim, 'lru')
    }
  }

  /** Stop routing to this pool and end it once drained. Returns when it has ended. */
  retire(entry: PoolEntry, reason: EvictionReason): Promise<void> {
    if (entry.retired) return entry.ended ?? Promise.resolve()
    entry.retired = true
    entry.pool.retire()
    const byOrg = this.#entries.get(entry.key.service)
    if (byOrg?.get(entry.key.orgId) === entry) {
      byOrg.delete(entry.key.orgId)
      if (byOrg.size === 0) this.#entries.delete(entry.key.service)
      this.#size--
    }
    this.evictions[reason]++
    this.#retiring.add(entry)
    this.#hooks.onEvict(entry, reason)
    entry.ended = whenIdle(entry)
      .then(() => entry.pool.shutdown())
      .then(
        () => this.#hooks.onEnd(entry, false),
        () => this.#hooks.onEnd(entry, false),
      )
      .finally(() => this.#retiring.delete(entry))
    return entry.ended
  }

  /** Ends pools unused for `idleTtlMs`; runs on the sweeper timer and may be called directly. */
  sweep(): number {
    const cutoff = this.now() - this.#options.idleTtlMs - this.#options.sweepIntervalMs
    let evicted = 0
    for (const byOrg of [...this.#entries.values()]) {
      for (const entry of [...byOrg.values()]) {
        if (entry.lastUsedAt <= cutoff && !isBusy(entry)) {
          void this.retire(entry, 'idle')
          evicted++
        } else {
          this.#hooks.onSweep(entry)
        }
      }
    }
    return evicted
  }

  startSweeper(): void {
    if (this.#sweeper) return
    this.#sweeper = this.#clock.setInterval(() => this.sweep(), this.#options.sweepIntervalMs)
    this.#sweeper.unref?.()
  }

  stopSweeper(): void {
    if (this.#sweeper) this.#clock.clearInterval(this.#sweeper)
    this.#sweeper = undefined
  }

  entries(): PoolEntry[] {
    const all: PoolEntry[] = []
    for (const byOrg of this.#entries.values()) all.push(...byOrg.values())
    return all
  }

  /** Pools retired but still draining (counted in stats, force-ended on close). */
  retiring(): PoolEntry[] {
    return [...this.#retiring]
  }

  /** A cached entry without touching its recency (error paths, diagnostics). */
  find(service: string, orgId: string): PoolEntry | undefined {
    return this.#entries.get(service)?.get(orgId)
  }

  /** Stop tracking a retired pool that was force-ended (close deadline). */
  forget(entry: PoolEntry): void {
    this.#retiring.delete(entry)
  }

  /** Wait for in-flight creations (close must not leave a pool created after it returned). */
  async settlePending(): Promise<void> {
    const all: Promise<PoolEntry>[] = []
    for (const byOrg of this.#pending.values()) all.push(...byOrg.values())
    await Promise.allSettled(all)
  }
}

export function isBusy(entry: PoolEntry): boolean {
  const pool = entry.pool
  return (
    entry.pendingLeases > 0 ||
    entry.checkedOut.size > 0 ||
    pool.waitingCount > 0 ||
    // clients still connecting are neither idle nor checked out
    pool.totalCount > pool.idleCount + entry.checkedOut.size
  )
}

// pg-pool emits nothing when a new client fails to connect or a waiter times out, so a drain also looks
// again on this interval; events make the common case immediate.
const DRAIN_POLL_MS = 200

function whenIdle(entry: PoolEntry): Promise<void> {
  if (!isBusy(entry)) return Promise.resolve()
  return new Promise((resolve) => {
    const poll = setInterval(() => entry.onMaybeIdle?.(), DRAIN_POLL_MS)
    poll.unref()
    entry.onMaybeIdle = () => {
      // pg emits `release` before the client is back in the idle list: look again on the next turn.
      setImmediate(() => {
        if (entry.onMaybeIdle && !isBusy(entry)) {
          entry.onMaybeIdle = undefined
          clearInterval(poll)
          resolve()
        }
      })
    }
  })
}
