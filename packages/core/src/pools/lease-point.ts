import type { QueryConfig, QueryResult, QueryResultRow } from 'pg'
import type { Clock, TimerHandle } from '../clock.js'
import { ConnectionError, HyperconnError, PoolSaturatedError, RegistryClosedError, TransactionClosedError } from '../hyperconn-error.js'
import type { SaturatedLimit } from '../hyperconn-error.js'
import { sqlStateOf } from '../pg-error.js'
import type { Logger } from '../registry/registry-logger.js'
import type { SecretCache } from '../secrets/secret-cache.js'
import { redactText } from '../secrets/secret-redaction.js'
import type { PoolLease, TenantKey } from '../tenant-types.js'
import { AUTO_BUDGET_QUERY, autoBudget, ConnectionBudget } from './connection-budget.js'
import { FairQueue } from './fair-queue.js'
import type { PooledConnection, TargetPool } from './target-pool.js'
import type { TargetPoolCache } from './target-pool-cache.js'
import type { TenantBinding } from './tenant-binding.js'
import type { TenantBindingCache } from './tenant-binding-cache.js'
import { TenantSettings } from './tenant-settings.js'

export interface LeaseLimits {
  /** Connections per server; 'auto' reads the server's own limit on first contact. */
  readonly max: number | 'auto'
  readonly instances: number
  readonly perTenant: number
  readonly acquireTimeoutMs: number
}

// SQLSTATEs that mean "the password in our secret is stale": refresh the secret once and retry.
const AUTH_FAILURES: ReadonlySet<string> = new Set(['28P01', '28000'])
const AUTH_REFRESH_INTERVAL_MS = 30_000
// Used when 'auto' cannot be read (the query failed): pg's own default pool size, times two.
const AUTO_FALLBACK = 20

/** What the lease point alone tracks per tenant; never shared with another module. */
interface TenantUsage {
  readonly key: TenantKey
  held: number
  /** Callers of this tenant in a fair queue now. */
  waiting: number
}

interface Waiter {
  readonly usage: TenantUsage
  readonly binding: TenantBinding
  readonly since: number
  readonly server: Server
  readonly resolve: (conn: PooledConnection | Promise<PooledConnection>) => void
  readonly reject: (error: Error) => void
  /** The limit that held it back last time it was offered a turn. */
  blockedBy: SaturatedLimit
}

interface Server {
  readonly budget: ConnectionBudget
  readonly queue: FairQueue<TenantUsage, Waiter>
  /**
   * Waiters in arrival order, which is deadline order (one `acquireTimeoutMs` for all): one timer per
   * server, set for the oldest, instead of a timer per waiter.
   */
  readonly byAge: Set<Waiter>
  expiry: TimerHandle | undefined
  /** Idle connections of other pools being closed to make room in the budget. */
  roomPending: number
  /**
   * Queued waiters that room in the budget could start (held back by connections.max or maxPools, or
   * not tried yet). Waiters held back by their pool's max or their tenant's share need a release instead.
   */
  roomWaiters: number
}

const NEEDS_ROOM: ReadonlySet<SaturatedLimit> = new Set(['connections.max', 'eviction.maxPools'])

type Started = PooledConnection | Promise<PooledConnection>

/**
 * The one place every connection is checked out and back in, whatever asked for it (an adapter,
 * `tenant.query`, a transaction, `getPool()`):
 *
 * 1. the tenant's binding (secret → target + settings), from cache or resolved once;
 * 2. a turn: the per-server budget, the tenant's `perTenant` share, the pool's `max` and `maxPools` —
 *    callers beyond them wait in a fair queue (the waiting tenant holding fewest connections first, ties
 *    round-robin, FIFO within a tenant) for up to
 *    `acquireTimeoutMs`, then get `PoolSaturatedError`; when the budget is full while another pool of
 *    the server has idle connections, one of those is closed to make room;
 * 3. a connection: an idle one carrying the tenant's settings if possible, else any idle one, else a new
 *    one; a refused password (28P01/28000) refetches the secret once and retries once;
 * 4. the tenant's settings, applied before its first query (skipped when the connection carries them).
 *
 * Release runs it backwards: a connection that comes back inside a transaction, broken, or from a
 * failed settings round trip is destroyed, never handed to the next caller; then the next waiter is served.
 */
export class LeasePoint {
  readonly #bindings: TenantBindingCache
  readonly #pools: TargetPoolCache
  readonly #secrets: SecretCache
  readonly #limits: LeaseLimits
  readonly #clock: Clock
  readonly #logger: Logger
  readonly #servers = new Map<string, Server>()
  readonly #usage = new Map<string, Map<string, TenantUsage>>()
  readonly #lastAuthRefresh = new Map<string, number>()
  #checkedOut = 0
  #closed = false
  #dispatching = false
  readonly #redispatch = new Set<Server>()
  #onAllReleased: (() => void) | undefined
  /** Offered a queued waiter by the fair queue: starts it, or records what holds it back. */
  readonly #serve = (waiter: Waiter): boolean => {
    const started = this.#tryStart(waiter.usage, waiter.binding, waiter.server)
    if (typeof started === 'string') {
      this.#blockedBy(waiter, started)
      return false
    }
    this.#dequeued(waiter)
    waiter.resolve(started)
    return true
  }

  constructor(
    bindings: TenantBindingCache,
    pools: TargetPoolCache,
    secrets: SecretCache,
    limits: LeaseLimits,
    clock: Clock,
    logger: Logger,
  ) {
    this.#bindings = bindings
    this.#pools = pools
    this.#secrets = secrets
    this.#limits = limits
    this.#clock = clock
    this.#logger = logger
  }

  get checkedOut(): number {
    return this.#checkedOut
  }

  /** Plain numbers per server, for stats. */
  servers(): { server: string; max: number | undefined; open: number; peak: number; waiting: number }[] {
    return [...this.#servers.values()].map(({ budget, queue }) => ({
      server: budget.server,
      max: budget.max,
      open: budget.open,
      peak: budget.peak,
      waiting: queue.size,
    }))
  }

  /** Tenants holding or waiting for connections now. */
  activeTenants(): { service: string; orgId: string; checkedOut: number; waiting: number }[] {
    const out: { service: string; orgId: string; checkedOut: number; waiting: number }[] = []
    for (const byOrg of this.#usage.values()) {
      for (const usage of byOrg.values()) {
        if (usage.held > 0 || usage.waiting > 0) out.push({ ...usage.key, checkedOut: usage.held, waiting: usage.waiting })
      }
    }
    return out
  }

  /** What one tenant holds and waits for now. */
  usage(key: TenantKey): { checkedOut: number; waiting: number } {
    const usage = this.#usage.get(key.service)?.get(key.orgId)
    return { checkedOut: usage?.held ?? 0, waiting: usage?.waiting ?? 0 }
  }

  /** A connection for this tenant, checked out through every rule above. */
  async acquire(key: TenantKey): Promise<PoolLease> {
    if (this.#closed) throw new RegistryClosedError()
    const cached = this.#bindings.get(key)
    let binding = cached instanceof Promise ? await cached : cached
    // At most two attempts: the second only after a refused password brought a new secret version.
    for (let attempt = 0; attempt < 2; attempt++) {
      // Checked after every await: a caller that outlived close() must not open a connection.
      if (this.#closed) throw new RegistryClosedError()
      let conn: PooledConnection
      try {
        conn = await this.#checkout(binding)
      } catch (error) {
        if (attempt === 0 && !this.#closed && AUTH_FAILURES.has(sqlStateOf(error) ?? '')) {
          const fresh = await this.#afterAuthFailure(binding)
          if (fresh.fingerprint !== binding.fingerprint) {
            binding = fresh
            continue
          }
        }
        throw connectionError(binding, error)
      }
      return new Lease(this, conn, binding, this.#usageOf(binding.key))
    }
    throw new Error('unreachable')
  }

  /**
   * Stop serving: waiters get `RegistryClosedError`. Resolves when every checked-out connection came
   * back (the registry applies its own deadline).
   */
  close(): Promise<void> {
    this.#closed = true
    for (const server of this.#servers.values()) {
      if (server.expiry !== undefined) this.#clock.clearTimeout(server.expiry)
      server.expiry = undefined
      server.byAge.clear()
      server.roomWaiters = 0
      for (const waiter of server.queue.drain()) {
        waiter.usage.waiting--
        waiter.reject(new RegistryClosedError())
      }
    }
    if (this.#checkedOut === 0) return Promise.resolve()
    return new Promise((resolve) => {
      this.#onAllReleased = resolve
    })
  }

  /** @internal Lease → lease point: the connection is back. */
  release(conn: PooledConnection, usage: TenantUsage, destroy: boolean): void {
    const pool = conn.pool
    // Hygiene: a connection in (or failed inside) a transaction, or with a query still running or queued
    // (released before it settled), must never reach another caller.
    const client = conn.client as unknown as { _txStatus?: string | null; _activeQuery?: unknown; _queryQueue?: unknown[] }
    const busy = client._activeQuery != null || (client._queryQueue?.length ?? 0) > 0
    const txStatus = client._txStatus
    if (destroy || busy || conn.dead || (txStatus !== 'I' && txStatus != null)) void pool.destroy(conn)
    else pool.checkIn(conn)
    this.#freed(usage, pool)
  }

  /** A checkout ended (released, or its connection failed to open): serve whoever can use what it freed. */
  #freed(usage: TenantUsage, pool: TargetPool): void {
    usage.held--
    this.#checkedOut--
    const server = this.#servers.get(pool.target.server)
    if (server !== undefined && server.queue.size > 0) this.#dispatch(server)
    // A pool nothing uses can make room for a waiter blocked by maxPools, on any server.
    if (pool.unused) for (const other of this.#servers.values()) if (other !== server && other.queue.size > 0) this.#dispatch(other)
    if (this.#checkedOut === 0 && this.#onAllReleased !== undefined) {
      const done = this.#onAllReleased
      this.#onAllReleased = undefined
      done()
    }
  }

  #server(name: string): Server {
    let server = this.#servers.get(name)
    if (server === undefined) {
      const max = this.#limits.max === 'auto' ? undefined : this.#limits.max
      const created: Server = {
        // Room appears when a connection closes or 'auto' is known: serve waiters then.
        budget: new ConnectionBudget(name, max, () => {
          if (created.queue.size > 0) this.#dispatch(created)
        }),
        queue: new FairQueue(),
        byAge: new Set(),
        expiry: undefined,
        roomPending: 0,
        roomWaiters: 0,
      }
      this.#servers.set(name, (server = created))
    }
    return server
  }

  #usageOf(key: TenantKey): TenantUsage {
    let byOrg = this.#usage.get(key.service)
    if (byOrg === undefined) this.#usage.set(key.service, (byOrg = new Map()))
    let usage = byOrg.get(key.orgId)
    if (usage === undefined) byOrg.set(key.orgId, (usage = { key, held: 0, waiting: 0 }))
    return usage
  }

  /**
   * Drops the records of tenants neither holding nor waiting (the registry's sweeper calls it): kept
   * between checkouts so a busy tenant's record is not rebuilt per query, and still bounded.
   */
  sweep(): void {
    for (const [service, byOrg] of this.#usage) {
      for (const [orgId, usage] of byOrg) if (usage.held === 0 && usage.waiting === 0) byOrg.delete(orgId)
      if (byOrg.size === 0) this.#usage.delete(service)
    }
  }

  #checkout(binding: TenantBinding): Promise<PooledConnection> {
    const server = this.#server(binding.target.server)
    const usage = this.#usageOf(binding.key)
    if (server.queue.size === 0) {
      const started = this.#tryStart(usage, binding, server)
      if (typeof started !== 'string') return Promise.resolve(started)
    }
    return new Promise<PooledConnection>((resolve, reject) => {
      const waiter: Waiter = { usage, binding, server, since: this.#clock.now(), resolve, reject, blockedBy: 'connections.max' }
      server.roomWaiters++
      usage.waiting++
      server.queue.push(usage, waiter)
      server.byAge.add(waiter)
      server.expiry ??= this.#scheduleExpiry(server, this.#limits.acquireTimeoutMs)
      this.#dispatch(server)
    })
  }

  /**
   * Serves waiters in fair order while any can start; each round serves one, so it ends. Not re-entered:
   * work that arrives meanwhile (an event listener querying, a connection closing) is served by the
   * running call's next round.
   */
  #dispatch(server: Server): void {
    if (this.#closed) return
    if (this.#dispatching) {
      this.#redispatch.add(server)
      return
    }
    this.#dispatching = true
    try {
      let next: Server | undefined = server
      while (next !== undefined) {
        const current: Server = next
        let served: Waiter | undefined
        // One pass always (a release or a close freed something); another only while something could still
        // start: an idle connection on the server, or budget room for a waiter room can help. A failing
        // pass costs one try per waiting tenant, so it is not repeated for nothing.
        do served = current.queue.serveOne(this.#serve, heldBy)
        while (served !== undefined && this.#mayServe(current))
        this.#redispatch.delete(current)
        next = first(this.#redispatch)
      }
    } finally {
      this.#dispatching = false
    }
  }

  #mayServe(server: Server): boolean {
    const budget = server.budget
    return budget.idle > 0 || (server.roomWaiters > 0 && budget.hasRoom())
  }

  #blockedBy(waiter: Waiter, limit: SaturatedLimit): void {
    const server = waiter.server
    if (NEEDS_ROOM.has(waiter.blockedBy)) server.roomWaiters--
    if (NEEDS_ROOM.has(limit)) server.roomWaiters++
    waiter.blockedBy = limit
  }

  /** A waiter left the queue (served or expired). */
  #dequeued(waiter: Waiter): void {
    waiter.usage.waiting--
    waiter.server.byAge.delete(waiter)
    if (NEEDS_ROOM.has(waiter.blockedBy)) waiter.server.roomWaiters--
  }

  /** Rejects waiters past their deadline, oldest first, then sets the timer for the next one. */
  #scheduleExpiry(server: Server, delay: number): TimerHandle {
    const timer = this.#clock.setTimeout(() => {
      server.expiry = undefined
      const deadline = this.#clock.now() - this.#limits.acquireTimeoutMs
      for (const waiter of server.byAge) {
        if (waiter.since > deadline) {
          server.expiry = this.#scheduleExpiry(server, waiter.since - deadline)
          return
        }
        this.#expire(server, waiter)
      }
    }, Math.max(1, delay))
    return timer
  }

  /**
   * Starts a checkout now if every limit allows: an idle connection (sync) or a new one (a promise).
   * Otherwise returns the limit in the way. Never waits and never loops.
   */
  #tryStart(usage: TenantUsage, binding: TenantBinding, server: Server): Started | SaturatedLimit {
    if (usage.held >= this.#limits.perTenant) return 'connections.perTenant'
    let pool = this.#pools.get(binding.target)
    if (pool === undefined) {
      pool = this.#pools.obtain(binding.target, server.budget)
      if (pool === undefined) return 'eviction.maxPools'
    }
    const idle = pool.takeIdle(binding.settings)
    if (idle !== undefined) {
      usage.held++
      this.#checkedOut++
      return idle
    }
    if (!pool.canGrow) return 'pool.max'
    const budget = server.budget
    if (!budget.hasRoom()) {
      // As many closes in flight as callers waiting for room, at most: each frees one slot.
      if (!budget.discovering && server.roomPending < Math.max(1, server.queue.size)) this.#makeRoom(server, pool)
      return 'connections.max'
    }
    usage.held++
    this.#checkedOut++
    return this.#open(pool, server, usage)
  }

  /** Closes one idle connection of another pool on this server; its slot is free once the socket is closed. */
  #makeRoom(server: Server, except: TargetPool): void {
    for (const other of this.#pools.onServer(server.budget.server)) {
      if (other === except) continue
      const closing = other.closeOneIdle()
      if (closing === undefined) continue
      server.roomPending++
      void closing.finally(() => server.roomPending--)
      return
    }
  }

  async #open(pool: TargetPool, server: Server, usage: TenantUsage): Promise<PooledConnection> {
    const discover = server.budget.discovering
    let conn: PooledConnection
    try {
      conn = await pool.open()
    } catch (error) {
      this.#freed(usage, pool)
      throw error
    }
    if (discover && server.budget.discovering) await this.#discoverBudget(conn, server.budget)
    return conn
  }

  /** `connections.max: 'auto'`, read from the server on the first connection. */
  async #discoverBudget(conn: PooledConnection, budget: ConnectionBudget): Promise<void> {
    let max = AUTO_FALLBACK
    try {
      const result = await conn.client.query<{ max: number; reserved: number }>(AUTO_BUDGET_QUERY)
      const row = result.rows[0]
      if (row !== undefined) max = autoBudget(row.max, row.reserved, this.#limits.instances)
    } catch (error) {
      this.#logger.warn(
        { server: budget.server, sqlState: sqlStateOf(error), fallback: AUTO_FALLBACK },
        "hyperconn: could not read max_connections for connections.max 'auto'; using the fallback",
      )
    }
    budget.setMax(max)
    this.#logger.info({ server: budget.server, max }, 'hyperconn: connection budget')
  }

  #expire(server: Server, waiter: Waiter): void {
    if (!server.queue.remove(waiter.usage, waiter)) return
    this.#dequeued(waiter)
    if (server.budget.discovering) {
      // 'auto' is still unknown: the first connection to the server has not come back.
      waiter.reject(
        new ConnectionError(
          `Waited ${this.#clock.now() - waiter.since} ms for the first connection to ${server.budget.server} (needed to read max_connections for connections.max 'auto'): the server did not answer in time. Check that it is reachable, or set connections.max to a number.`,
          undefined,
        ),
      )
      return
    }
    const { service, orgId } = waiter.binding.key
    const limitValue =
      waiter.blockedBy === 'connections.max'
        ? server.budget.max
        : waiter.blockedBy === 'connections.perTenant'
          ? this.#limits.perTenant
          : waiter.blockedBy === 'pool.max'
            ? this.#pools.get(waiter.binding.target)?.max
            : this.#pools.max
    waiter.reject(new PoolSaturatedError(service, orgId, this.#clock.now() - waiter.since, waiter.blockedBy, limitValue, server.budget.server))
  }

  /**
   * The password may have been rotated. One caller refetches the secret (only if it is still the version
   * that failed, and at most once per interval); every caller gets the binding that results.
   */
  async #afterAuthFailure(binding: TenantBinding): Promise<TenantBinding> {
    const now = this.#clock.now()
    const last = this.#lastAuthRefresh.get(binding.secretName)
    if (last === undefined || now - last >= AUTH_REFRESH_INTERVAL_MS) {
      if (this.#lastAuthRefresh.size >= 1_000) {
        for (const [name, at] of this.#lastAuthRefresh) if (now - at >= AUTH_REFRESH_INTERVAL_MS) this.#lastAuthRefresh.delete(name)
      }
      this.#lastAuthRefresh.set(binding.secretName, now)
      this.#secrets.invalidate(binding.secretName, binding.fingerprint)
      this.#bindings.invalidate(binding)
    }
    try {
      const next = this.#bindings.get(binding.key)
      return next instanceof Promise ? await next : next
    } catch {
      return binding
    }
  }
}

/**
 * A checked-out connection of one tenant. The tenant's session settings are applied before its first
 * query (`query`, `prepare`) or transaction-locally right after BEGIN (`begin`).
 */
class Lease implements PoolLease {
  readonly #point: LeasePoint
  readonly #conn: PooledConnection
  readonly #binding: TenantBinding
  readonly #usage: TenantUsage
  #prepared = false
  #inTransaction = false
  #untrusted = false
  #released = false

  constructor(point: LeasePoint, conn: PooledConnection, binding: TenantBinding, usage: TenantUsage) {
    this.#point = point
    this.#conn = conn
    this.#binding = binding
    this.#usage = usage
  }

  get client(): PooledConnection['client'] {
    return this.#conn.client
  }

  get processID(): number | undefined {
    return (this.#conn.client as unknown as { processID?: number | null }).processID ?? undefined
  }

  async query<R extends QueryResultRow = any>(config: string | QueryConfig, values?: unknown[]): Promise<QueryResult<R>> {
    if (this.#released) throw released()
    if (!this.#prepared && !this.#inTransaction) {
      await this.prepare()
      // Released meanwhile: the connection may already serve someone else.
      if (this.#released) throw released()
    }
    let result: QueryResult<R>
    try {
      result = await this.#conn.client.query<R>(config, values)
    } catch (error) {
      // A failed multi-statement query may have run a SET before failing: assume the worst.
      this.#conn.carry(undefined)
      throw error
    }
    observe(this.#conn, result)
    return result
  }

  /** Session level: the connection carries the tenant's settings from now on (skipped if it already does). */
  async prepare(): Promise<void> {
    if (this.#prepared) return
    if (this.#released) throw released()
    const target = this.#binding.settings
    const carried = this.#conn.carried
    if (carried?.signature !== target.signature) {
      try {
        const known = carried ?? (await this.#reset())
        if (known.signature !== target.signature) {
          await this.#conn.client.query(target.transitionFrom(known, false))
          this.#conn.carry(target)
        }
      } catch (error) {
        throw this.#settingsFailed(error)
      }
    }
    this.#prepared = true
  }

  /**
   * BEGIN, then the tenant's settings transaction-locally (skipped if the connection carries them). The
   * lease then belongs to that transaction: its statements need no session-level settings, and the
   * transaction releases it when it ends.
   */
  async begin(sql: string): Promise<void> {
    if (this.#released) throw released()
    const target = this.#binding.settings
    let carried: TenantSettings
    try {
      carried = this.#conn.carried ?? (await this.#reset())
    } catch (error) {
      throw this.#settingsFailed(error)
    }
    await this.#conn.client.query(sql)
    this.#inTransaction = true
    if (carried.signature === target.signature) return
    try {
      await this.#conn.client.query(target.transitionFrom(carried, true))
    } catch (error) {
      throw this.#settingsFailed(error)
    }
  }

  /**
   * The raw connection has been handed to code that sends statements around `query` (a `getPool()`
   * client): what it carries afterwards is unknown, so the next checkout resets it.
   */
  forgetCarried(): void {
    this.#conn.carry(undefined)
  }

  /**
   * Rewrites an error from this connection so it carries no secret of the tenant, keeping its class and
   * fields (users branch on them). A connection the registry ended at its close deadline reports that.
   */
  redact(error: unknown): unknown {
    if (this.#conn.closedByRegistry && !(error instanceof HyperconnError)) {
      return new RegistryClosedError(
        `The registry was closed (registry.close() reached its timeoutMs) while this connection of service "${this.#binding.key.service}", org "${this.#binding.key.orgId}" was in use; its work did not complete.`,
        { cause: redactInPlace(error, this.#binding.redactions) },
      )
    }
    return redactInPlace(error, this.#binding.redactions)
  }

  release(destroy?: Error | boolean): void {
    if (this.#released) return
    this.#released = true
    this.#point.release(this.#conn, this.#usage, destroy === true || destroy instanceof Error || this.#untrusted)
  }

  /** Settings never half-applied: any failure makes the connection untrusted (destroyed on release). */
  #settingsFailed(error: unknown): ConnectionError {
    this.#untrusted = true
    const { service, orgId } = this.#binding.key
    const sqlState = sqlStateOf(error)
    const message = redactText(error instanceof Error ? error.message : String(error), this.#binding.redactions)
    return new ConnectionError(
      `Could not apply the session settings of service "${service}", org "${orgId}" (${this.#binding.settings.names.join(', ') || 'reset'}): ${message}. ` +
        "Check the setting names and values in the secret's options=-c ..., the service's tenantSettings and isolation.",
      sqlState,
      { cause: new Error(message) },
    )
  }

  /**
   * A connection whose state a caller changed is reset to its defaults first (one extra round trip).
   * RESET ALL leaves the role and session authorization alone: those are reset explicitly.
   */
  async #reset(): Promise<TenantSettings> {
    await this.#conn.client.query('SET SESSION AUTHORIZATION DEFAULT; RESET ROLE; RESET ALL')
    this.#conn.carry(TenantSettings.none)
    return TenantSettings.none
  }
}

function released(): TransactionClosedError {
  return new TransactionClosedError('this connection was already released')
}

function first<T>(set: Set<T>): T | undefined {
  for (const item of set) return item
  return undefined
}

const heldBy = (usage: TenantUsage): number => usage.held

/** A SET/RESET/DISCARD a caller ran changes what the connection carries in ways we cannot see. */
function observe(conn: PooledConnection, result: QueryResult | QueryResult[]): void {
  if (Array.isArray(result)) {
    for (const one of result) observe(conn, one)
    return
  }
  const command = result.command
  if (command === 'SET' || command === 'RESET' || command === 'DISCARD') conn.carry(undefined)
}

// pg DatabaseError fields that may echo query text or values
const REDACTED_FIELDS = ['message', 'detail', 'hint', 'where', 'internalQuery'] as const

function redactInPlace(error: unknown, redactions: readonly string[]): unknown {
  if (!(error instanceof Error) || error instanceof HyperconnError) return error
  const fields = error as unknown as Record<string, unknown>
  let leaked = false
  for (const field of REDACTED_FIELDS) {
    const value = fields[field]
    if (typeof value !== 'string') continue
    const clean = redactText(value, redactions)
    if (clean !== value) {
      leaked = true
      fields[field] = clean
    }
  }
  if (leaked && typeof error.stack === 'string') error.stack = redactText(error.stack, redactions)
  return error
}

function connectionError(binding: TenantBinding, error: unknown): unknown {
  if (error instanceof HyperconnError) return error
  const original = error instanceof Error ? error : new Error(String(error))
  const sqlState = sqlStateOf(original)
  const message = redactText(original.message, binding.redactions)
  const cause = new Error(message)
  if (sqlState !== undefined) (cause as Error & { code?: string }).code = sqlState
  return new ConnectionError(
    `Could not connect to PostgreSQL for service "${binding.key.service}", org "${binding.key.orgId}" (${binding.target.label}): ${message}`,
    sqlState,
    { cause },
  )
}
