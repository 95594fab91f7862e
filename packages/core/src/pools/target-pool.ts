import pg from 'pg'
import type { Clock, TimerHandle } from '../clock.js'
import type { ConnectionBudget } from './connection-budget.js'
import type { ConnectionTarget } from './connection-target.js'
import { TenantSettings } from './tenant-settings.js'

export interface PoolSizing {
  /** Most connections of this pool (pg's `max`). */
  readonly max: number
  /** An idle connection is closed after this long; 0 = never. */
  readonly idleTimeoutMillis: number
  /**
   * A connection is closed when checked in (or found idle) after this long, less up to 10% at random per
   * connection so connections opened together do not all close together; 0 = no limit.
   */
  readonly maxLifetimeSeconds: number
  /** A connection is closed when checked in after this many checkouts; 0 = no limit. */
  readonly maxUses: number
}

export type ConnectionErrorReporter = (pool: TargetPool, error: Error, phase: 'idle' | 'checked-out') => void

// maxLifetimeSeconds is shortened by up to this fraction per connection.
const LIFETIME_JITTER = 0.1
// A socket that never answers our Terminate must not hold a budget slot forever.
const CLOSE_TIMEOUT_MS = 5_000

/**
 * One physical connection. Its pool owns its place (idle or checked out); the lease point records which
 * session settings it carries, so the next checkout knows whether a `set_config` round trip is needed.
 */
export class PooledConnection {
  readonly client: pg.Client
  readonly pool: TargetPool
  readonly createdAt: number
  /** When it is closed instead of reused (maxLifetimeSeconds with jitter); Infinity = never. */
  readonly expiresAt: number
  #carried: TenantSettings | undefined = TenantSettings.none
  /** The signature the pool filed this connection under while idle (owned by the pool). */
  #filedAs: string | undefined
  #uses = 0
  #idleSince = 0
  #dead = false
  #closedByRegistry = false

  constructor(client: pg.Client, pool: TargetPool, createdAt: number, expiresAt: number) {
    this.client = client
    this.pool = pool
    this.createdAt = createdAt
    this.expiresAt = expiresAt
  }



  /** The session settings this connection carries; undefined when unknown (a SET ran on it). */
  get carried(): TenantSettings | undefined {
    return this.#carried
  }

  carry(settings: TenantSettings | undefined): void {
    this.#carried = settings
  }

  get uses(): number {
    return this.#uses
  }

  get idleSince(): number {
    return this.#idleSince
  }

  /** The socket failed or ended: never handed out again. */
  get dead(): boolean {
    return this.#dead
  }

  /** Ended by `registry.close()` at its deadline while checked out. */
  get closedByRegistry(): boolean {
    return this.#closedByRegistry
  }

  /** @internal pool bookkeeping */
  markCheckedOut(): void {
    this.#uses++
  }

  /** @internal */
  markIdle(now: number): void {
    this.#idleSince = now
  }

  /** @internal pool bookkeeping: where the idle index holds it */
  get filedAs(): string | undefined {
    return this.#filedAs
  }

  /** @internal */
  fileAs(signature: string | undefined): void {
    this.#filedAs = signature
  }

  /** @internal */
  markDead(): void {
    this.#dead = true
  }

  /** @internal */
  markClosedByRegistry(): void {
    this.#closedByRegistry = true
  }
}

/**
 * The physical pool of one connection target: `pg.Client`s, opened only when the lease point asks
 * (after the connection budget said yes), so no hidden queue sits below the fair queue. Idle connections
 * are indexed by the settings they carry, so a tenant is preferably handed one that already carries its
 * settings (affinity: no `set_config` round trip).
 */
export class TargetPool {
  readonly target: ConnectionTarget
  /** Unique in the registry: the target's label, with `#n` when labels repeat. Safe to show. */
  readonly name: string
  readonly budget: ConnectionBudget
  readonly #sizing: PoolSizing
  readonly #clock: Clock
  readonly #report: ConnectionErrorReporter
  readonly #all = new Set<PooledConnection>()
  /** Insertion order: least recently checked in first. */
  readonly #idle = new Set<PooledConnection>()
  readonly #idleBySignature = new Map<string, Set<PooledConnection>>()
  #checkedOut = 0
  /**
   * Checked-out connections reported as leaks, each with how to take it back from its holder: they do not
   * keep the pool from being evicted.
   */
  readonly #leaked = new Map<PooledConnection, () => void>()
  #opening = 0
  #lastUsedAt: number
  #retired = false
  #reaper: TimerHandle | undefined
  #emptied: (() => void) | undefined

  constructor(
    target: ConnectionTarget,
    name: string,
    budget: ConnectionBudget,
    sizing: PoolSizing,
    clock: Clock,
    report: ConnectionErrorReporter,
  ) {
    this.target = target
    this.name = name
    this.budget = budget
    this.#sizing = sizing
    this.#clock = clock
    this.#report = report
    this.#lastUsedAt = clock.now()
  }

  /** Open or opening connections. */
  get size(): number {
    return this.#all.size
  }

  get idleCount(): number {
    return this.#idle.size
  }

  get checkedOut(): number {
    return this.#checkedOut
  }

  get opening(): number {
    return this.#opening
  }

  get max(): number {
    return this.#sizing.max
  }

  get lastUsedAt(): number {
    return this.#lastUsedAt
  }

  /** Nothing checked out (but leaks) or opening: the pool may be ended without waiting for a caller. */
  get unused(): boolean {
    return this.#checkedOut === this.#leaked.size && this.#opening === 0
  }

  /** Another connection may be opened here (the budget is asked separately). */
  get canGrow(): boolean {
    return !this.#retired && this.#all.size < this.#sizing.max
  }

  /**
   * An idle connection, preferring one that carries `settings`; otherwise the least recently used one
   * (its tenant is the coldest). Undefined when none is idle.
   */
  takeIdle(settings: TenantSettings): PooledConnection | undefined {
    let conn: PooledConnection | undefined
    const now = this.#clock.now()
    // Bounded: each pass closes one expired connection.
    const limit = this.#idle.size
    for (let expired = 0; expired <= limit; expired++) {
      const matching = this.#idleBySignature.get(settings.signature)
      conn = matching === undefined ? undefined : first(matching)
      conn ??= first(this.#idle)
      if (conn === undefined || conn.expiresAt > now) break
      void this.#close(conn)
      conn = undefined
    }
    if (conn === undefined) return undefined
    this.#unidle(conn)
    this.#checkedOut++
    conn.markCheckedOut()
    this.#lastUsedAt = this.#clock.now()
    return conn
  }

  /** Opens a connection and hands it out checked out. The budget slot is taken now and freed if it fails. */
  async open(): Promise<PooledConnection> {
    const client = new pg.Client({ ...this.target.clientConfig, password: () => this.target.password() })
    const now = this.#clock.now()
    const lifetimeMs = this.#sizing.maxLifetimeSeconds * 1000
    const expiresAt = lifetimeMs > 0 ? now + lifetimeMs * (1 - LIFETIME_JITTER * this.#clock.random()) : Infinity
    const conn = new PooledConnection(client, this, now, expiresAt)
    this.#all.add(conn)
    this.#opening++
    this.budget.opened()
    this.#lastUsedAt = this.#clock.now()
    // Lifelong: pg emits 'error' on the client when the socket dies, with or without a query running.
    client.on('error', (error: Error) => this.#onError(conn, error))
    client.on('end', () => this.#onEnd(conn))
    try {
      await client.connect()
    } catch (error) {
      this.#opening--
      conn.markDead()
      this.#forget(conn)
      throw error
    }
    this.#opening--
    if (conn.dead) {
      this.#forget(conn)
      throw new Error('Connection terminated while opening')
    }
    this.#checkedOut++
    conn.markCheckedOut()
    return conn
  }

  /** Back from a caller: kept idle, or closed when dead, expired, used up or the pool is retired. */
  checkIn(conn: PooledConnection): void {
    this.#checkedOut--
    this.#unleak(conn)
    const now = this.#clock.now()
    this.#lastUsedAt = now
    const maxUses = this.#sizing.maxUses
    if (this.#retired || conn.dead || !this.#all.has(conn) || (maxUses > 0 && conn.uses >= maxUses) || now >= conn.expiresAt) {
      void this.#close(conn)
      return
    }
    conn.markIdle(now)
    this.#idle.add(conn)
    this.budget.idleChanged(1)
    const signature = conn.carried?.signature
    conn.fileAs(signature)
    if (signature !== undefined) {
      const set = this.#idleBySignature.get(signature)
      if (set === undefined) this.#idleBySignature.set(signature, new Set([conn]))
      else set.add(conn)
    }
    this.#scheduleReaper()
  }

  /** Back from a caller and not to be trusted (failed query state, hook failure, open transaction). */
  destroy(conn: PooledConnection): Promise<void> {
    this.#checkedOut--
    this.#unleak(conn)
    this.#lastUsedAt = this.#clock.now()
    return this.#close(conn)
  }

  /** Closes the least recently used idle connection, to make room in the budget; undefined if none is idle. */
  closeOneIdle(): Promise<void> | undefined {
    const conn = first(this.#idle)
    return conn === undefined ? undefined : this.#close(conn)
  }

  /**
   * A checked-out connection was reported as a leak: it no longer keeps the pool in use, and if the pool
   * is retired `revoke` takes it from its holder (which checks it back in through the lease point).
   */
  markLeaked(conn: PooledConnection, revoke: () => void): void {
    if (this.#all.has(conn)) this.#leaked.set(conn, revoke)
  }

  /**
   * Stop handing out connections: idle ones and reported leaks close now (a leak's holder's next query
   * fails), other checked-out ones when they come back. Resolves once every connection is closed.
   */
  retire(): Promise<void> {
    this.#retired = true
    for (const conn of [...this.#idle]) void this.#close(conn)
    for (const revoke of [...this.#leaked.values()]) revoke()
    if (this.#all.size === 0) return Promise.resolve()
    return new Promise((resolve) => {
      const previous = this.#emptied
      this.#emptied = () => {
        previous?.()
        resolve()
      }
    })
  }

  /** `registry.close()` deadline: end connections still checked out; their holders' next query fails. */
  forceClose(): void {
    this.#retired = true
    for (const conn of [...this.#all]) {
      if (!this.#idle.has(conn)) conn.markClosedByRegistry()
      void this.#close(conn)
    }
  }

  #unleak(conn: PooledConnection): void {
    this.#leaked.delete(conn)
  }

  #unidle(conn: PooledConnection): void {
    if (!this.#idle.delete(conn)) return
    this.budget.idleChanged(-1)
    const signature = conn.filedAs
    conn.fileAs(undefined)
    if (signature === undefined) return
    const set = this.#idleBySignature.get(signature)
    if (set === undefined) return
    set.delete(conn)
    if (set.size === 0) this.#idleBySignature.delete(signature)
  }

  #close(conn: PooledConnection): Promise<void> {
    if (!this.#all.has(conn)) return Promise.resolve()
    this.#unidle(conn)
    const client = conn.client
    if (conn.dead) {
      // The socket is gone already: nothing to wait for.
      this.#forget(conn)
      return client.end().catch(() => {})
    }
    const stream = (client as unknown as { connection?: { stream?: { destroy?: () => void } } }).connection?.stream
    const timer = this.#clock.setTimeout(() => stream?.destroy?.(), CLOSE_TIMEOUT_MS)
    timer.unref?.()
    // The budget slot is freed once the socket is closed, so the server never sees more than the budget.
    return client
      .end()
      .catch(() => {})
      .finally(() => {
        this.#clock.clearTimeout(timer)
        this.#forget(conn)
      })
  }

  #forget(conn: PooledConnection): void {
    if (!this.#all.delete(conn)) return
    this.#unidle(conn)
    this.budget.closed()
    if (this.#all.size === 0) {
      const emptied = this.#emptied
      this.#emptied = undefined
      emptied?.()
    }
  }

  #onError(conn: PooledConnection, error: Error): void {
    const idle = this.#idle.has(conn)
    conn.markDead()
    if (this.#all.has(conn)) this.#report(this, error, idle ? 'idle' : 'checked-out')
    if (idle) void this.#close(conn)
  }

  #onEnd(conn: PooledConnection): void {
    conn.markDead()
    if (this.#idle.has(conn)) void this.#close(conn)
  }

  #scheduleReaper(): void {
    const ttl = this.#sizing.idleTimeoutMillis
    if (ttl <= 0 || this.#reaper !== undefined) return
    const oldest = first(this.#idle)
    if (oldest === undefined) return
    const delay = Math.max(0, oldest.idleSince + ttl - this.#clock.now())
    this.#reaper = this.#clock.setTimeout(() => {
      this.#reaper = undefined
      this.#reap()
    }, delay + 1)
    this.#reaper.unref?.()
  }

  #reap(): void {
    const cutoff = this.#clock.now() - this.#sizing.idleTimeoutMillis
    for (const conn of this.#idle) {
      if (conn.idleSince > cutoff) break
      void this.#close(conn)
    }
    this.#scheduleReaper()
  }

  /** Stops the idle timer (registry closed). */
  stopTimers(): void {
    if (this.#reaper !== undefined) this.#clock.clearTimeout(this.#reaper)
    this.#reaper = undefined
  }
}

function first<T>(set: Set<T>): T | undefined {
  for (const item of set) return item
  return undefined
}
