import type { Clock, TimerHandle } from '../clock.js'
import { ConnectionError, HyperconnError, PoolSaturatedError, RegistryClosedError } from '../hyperconn-error.js'
import type { LeakReason, SaturatedLimit } from '../hyperconn-error.js'
import { sqlStateOf } from '../pg-error.js'
import type { Logger } from '../registry/registry-logger.js'
import type { SecretCache } from '../secrets/secret-cache.js'
import { redactInPlace, redactText } from '../secrets/secret-redaction.js'
import type { PoolLease, TenantKey } from '../tenant-types.js'
import { AUTO_BUDGET_QUERY, autoBudget, ConnectionBudget } from './connection-budget.js'
import { ConnectionLease, hookFailed } from './connection-lease.js'
import type { LeaseOwner } from './connection-lease.js'
import { FairQueue } from './fair-queue.js'
import type { LifecycleHooks } from './lease-hooks.js'
import { enterScope, scopeOf } from './lease-scope.js'
import { LeakWatch } from './leak-watch.js'
import { isRecoveryConflict, REPLICA_LAG_QUERY, ReplicaRouter } from './replica-router.js'
import type { ReplicaEvents } from './replica-router.js'
import type { AcquireNote, RegistryTelemetry } from '../telemetry/registry-telemetry.js'
import type { PooledConnection, TargetPool } from './target-pool.js'
import type { TargetPoolCache } from './target-pool-cache.js'
import type { ConnectionTarget } from './connection-target.js'
import type { TenantBinding } from './tenant-binding.js'
import type { TenantBindingCache } from './tenant-binding-cache.js'

export interface LeaseLimits {
  /** Connections per server; 'auto' reads the server's own limit on first contact. */
  readonly max: number | 'auto'
  readonly instances: number
  readonly perTenant: number
  readonly acquireTimeoutMs: number
}

/** What happens around each checkout besides the limits. */
export interface LeasePolicy {
  /** Lifecycle hooks of the services that have any (service hooks already replace registry-wide ones). */
  readonly hooks: ReadonlyMap<string, LifecycleHooks>
  readonly leakDetection: { readonly thresholdMs: number; readonly destroy: boolean } | undefined
  /** An idle connection unused for at least this long is validated before it is handed out. */
  readonly validateAfterIdleMs: number
  /** OpenTelemetry, when the registry's `telemetry` option is set. */
  readonly telemetry: RegistryTelemetry | undefined
}

/** A checkout taken from its holder or held too long, as the registry reports it. */
export interface LeakReport {
  readonly service: string
  readonly orgId: string
  readonly heldMs: number
  readonly stack: string
  readonly reason: LeakReason
  /** The connection was destroyed (its holder's next query rejects with `ConnectionLeakError`). */
  readonly destroyed: boolean
}

/** What the lease point tells the registry. */
export interface LeaseEvents {
  leak(report: LeakReport): void
  readonly replicas: ReplicaEvents
}

const NO_STACK = '(not captured: set leakDetection to record where connections are acquired)'

// SQLSTATEs that mean "the password in our secret is stale": refresh the secret once and retry.
const AUTH_FAILURES: ReadonlySet<string> = new Set(['28P01', '28000'])
const AUTH_REFRESH_INTERVAL_MS = 30_000
// Used when 'auto' cannot be read (the query failed): pg's own default pool size, times two.
const AUTO_FALLBACK = 20
// connections.max 'auto' for a server reached through a transaction pooler: PgBouncer's default max_client_conn.
const POOLER_AUTO = 100
// After a server restart every idle connection of a pool is dead; each one found costs one pass.
const MAX_DEAD_IDLE = 64

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
  /** Where it connects: the tenant's primary, or one of its replicas. */
  readonly target: ConnectionTarget
  readonly since: number
  readonly server: Server
  readonly resolve: (conn: PooledConnection | Promise<PooledConnection>) => void
  readonly reject: (error: Error) => void
  /** The limit that held it back last time it was offered a turn. */
  blockedBy: SaturatedLimit
  /** With telemetry: the waiter's trace context, so a connection opened for it is traced in its request. */
  readonly context: unknown
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
  /** Last time a connection to it opened, and the last failure to open one (redacted), for health(). */
  lastOpenedAt: number | undefined
  lastFailure: { readonly message: string; readonly sqlState: string | undefined; readonly at: number; readonly network: boolean } | undefined
}

/** One server as `registry.health()` reports it. */
export interface ServerHealthRecord {
  readonly server: string
  readonly max: number | undefined
  readonly open: number
  readonly idle: number
  readonly waiting: number
  readonly lastOpenedAt: number | undefined
  readonly lastFailure: Server['lastFailure']
}

const NEEDS_ROOM: ReadonlySet<SaturatedLimit> = new Set(['connections.max', 'eviction.maxPools'])

type Started = PooledConnection | Promise<PooledConnection>
type Lease = ConnectionLease<TenantUsage>

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
 *    one; a refused password (28P01/28000) refetches the secret once and retries once; an idle one unused
 *    for `validateAfterIdleMs` is validated first (a dead one is destroyed and another taken);
 * 4. the tenant's settings, applied before its first query (skipped when the connection carries them),
 *    then the service's `onClaim` hook (a throwing hook destroys the connection and rejects);
 * 5. watching: leak detection (held past `thresholdMs`) and `scope(fn)`.
 *
 * Release runs it backwards (see ConnectionLease: rollback or destroy, `onRelease`), then the next waiter
 * is served.
 */
export class LeasePoint implements LeaseOwner<TenantUsage> {
  readonly #bindings: TenantBindingCache
  readonly #pools: TargetPoolCache
  readonly #secrets: SecretCache
  readonly #limits: LeaseLimits
  readonly #policy: LeasePolicy
  readonly #events: LeaseEvents
  readonly #watch: LeakWatch<Lease> | undefined
  readonly #replicas: ReplicaRouter
  readonly #clock: Clock
  readonly #logger: Logger
  #leaks = 0
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
    // Served by whoever released a connection: a connection opened for the waiter belongs to its own trace.
    const telemetry = this.#policy.telemetry
    const started =
      telemetry === undefined
        ? this.#tryStart(waiter.usage, waiter.binding, waiter.target, waiter.server)
        : telemetry.within(waiter.context, () => this.#tryStart(waiter.usage, waiter.binding, waiter.target, waiter.server))
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
    policy: LeasePolicy,
    events: LeaseEvents,
    clock: Clock,
    logger: Logger,
  ) {
    this.#bindings = bindings
    this.#pools = pools
    this.#secrets = secrets
    this.#limits = limits
    this.#policy = policy
    this.#events = events
    this.#clock = clock
    this.#logger = logger
    this.#replicas = new ReplicaRouter(clock, events.replicas)
    const detection = policy.leakDetection
    this.#watch =
      detection === undefined ? undefined : new LeakWatch<Lease>(detection.thresholdMs, clock, (lease, heldMs) => this.#leaked(lease, heldMs, 'threshold'))
  }

  /** Checkouts reported as leaks so far (held past the threshold, or left held by a scope). */
  get leaks(): number {
    return this.#leaks
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

  /** Per server: budget, waiting callers and the last connection outcome (for `registry.health()`). */
  health(): ServerHealthRecord[] {
    return [...this.#servers.values()].map((server) => ({
      server: server.budget.server,
      max: server.budget.max,
      open: server.budget.open,
      idle: server.budget.idle,
      waiting: server.queue.size,
      lastOpenedAt: server.lastOpenedAt,
      lastFailure: server.lastFailure,
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

  /** Callers waiting now, by the name of the pool they wait for (its target's label before it exists). */
  pendingByPool(): Map<string, number> {
    const pending = new Map<string, number>()
    for (const server of this.#servers.values()) {
      for (const waiter of server.byAge) {
        const name = this.#poolName(waiter.target)
        pending.set(name, (pending.get(name) ?? 0) + 1)
      }
    }
    return pending
  }

  #poolName(target: ConnectionTarget): string {
    return this.#pools.get(target)?.name ?? this.#pools.peekName(target)
  }

  /** What one tenant holds and waits for now. */
  usage(key: TenantKey): { checkedOut: number; waiting: number } {
    const usage = this.#usage.get(key.service)?.get(key.orgId)
    return { checkedOut: usage?.held ?? 0, waiting: usage?.waiting ?? 0 }
  }

  /** A connection for this tenant, checked out through every rule above. */
  acquire(key: TenantKey, read = false): Promise<PoolLease> {
    const telemetry = this.#policy.telemetry
    if (telemetry === undefined) return this.#acquire(key, undefined, read)
    const note: AcquireNote = { poolName: undefined, waitedMs: 0, queued: false }
    return telemetry.traced() ? telemetry.acquireSpan(key, note, () => this.#acquire(key, note, read)) : this.#acquire(key, note, read)
  }

  async #acquire(key: TenantKey, note: AcquireNote | undefined, read: boolean): Promise<PoolLease> {
    if (this.#closed) throw new RegistryClosedError()
    // Before the first await, so the stack is the caller's; only when someone will read it.
    const origin = this.#watch === undefined ? undefined : captureOrigin()
    const started = note === undefined ? 0 : this.#clock.now()
    const cached = this.#bindings.get(key)
    let binding = cached instanceof Promise ? await cached : cached
    let authRetried = false
    // A read of a tenant with replicas goes to a healthy one; any failure there falls back to the primary.
    let replica = read && binding.replicas.length > 0 ? this.#replicas.pick(binding) : undefined
    // Each pass ends in a lease, a throw, or one connection destroyed: an auth retry, or an idle connection
    // found dead (every idle connection of a pool may be, after a server restart), so it is bounded.
    for (let attempt = 0; attempt <= MAX_DEAD_IDLE; attempt++) {
      // Checked after every await: a caller that outlived close() must not open a connection.
      if (this.#closed) throw new RegistryClosedError()
      // Looked up once per pass (the binding changes after an auth retry): checkout and lease share it.
      const usage = this.#usageOf(binding.key)
      let conn: PooledConnection
      try {
        conn = await this.#checkout(binding, replica ?? binding.target, usage, note)
      } catch (error) {
        // A connection error takes the replica out of rotation; the budget, the tenant's share or a closing
        // registry are not the replica's fault (and a shared replica must not go down for one busy tenant).
        if (replica !== undefined && !this.#closed && !(error instanceof HyperconnError)) {
          this.#replicas.failed(replica, redactText(error instanceof Error ? error.message : String(error), binding.redactions), this.#retryAfter(binding))
          replica = undefined
          continue
        }
        if (!authRetried && !this.#closed && AUTH_FAILURES.has(sqlStateOf(error) ?? '')) {
          authRetried = true
          const fresh = await this.#afterAuthFailure(binding)
          if (fresh.fingerprint !== binding.fingerprint) {
            binding = fresh
            continue
          }
        }
        throw connectionError(binding, error)
      }
      const hooks = this.#policy.hooks.get(key.service)
      const lease: Lease = new ConnectionLease(this, conn, binding, usage, hooks, origin)
      if (this.#needsValidation(conn) && !(await lease.validate())) continue
      if (replica !== undefined && !(await this.#replicaUsable(lease, replica))) {
        replica = undefined
        continue
      }
      // Checked here so a service without hooks pays no extra await per checkout. Behind a transaction
      // pooler there is no session to claim: hooks run inside each transaction instead.
      if (hooks?.onClaim !== undefined && !binding.target.pooler) {
        try {
          await lease.claim()
        } catch (error) {
          lease.release(true)
          throw hookFailed('onClaim', binding, error)
        }
      }
      if (note !== undefined) {
        note.poolName = conn.pool.name
        note.waitedMs = this.#clock.now() - started
        this.#policy.telemetry?.waited(note.poolName, key, note.waitedMs)
      }
      this.#track(lease)
      return lease
    }
    throw new ConnectionError(
      `Every idle connection tried for service "${binding.key.service}", org "${binding.key.orgId}" (${binding.target.label}) was dead. Retry; if it persists, check the server.`,
      undefined,
    )
  }

  /**
   * Runs `fn`; every connection checked out inside its async context and still held when it settles is
   * destroyed and reported as a leak (reason 'scope'), as is one whose checkout completes after that.
   */
  async scope<T>(fn: () => Promise<T>): Promise<T> {
    const { scope, result } = enterScope<Lease, T>(this, fn)
    try {
      return await result
    } finally {
      for (const lease of scope.close()) this.#leaked(lease, this.#clock.now() - lease.acquiredAt, 'scope')
    }
  }

  /**
   * A replica connection passes (it is back in rotation if it was down) unless `maxLagMs` is set and its
   * replay lag, measured at most once a second per replica, exceeds it: then it goes back to the pool, the
   * replica is skipped, and the caller reads from the primary.
   */
  async #replicaUsable(lease: Lease, replica: ConnectionTarget): Promise<boolean> {
    const maxLagMs = lease.binding.replicaRules?.maxLagMs
    if (maxLagMs !== undefined && this.#replicas.lagDue(replica)) {
      let lagMs: number
      try {
        const { rows } = await lease.client.query<{ lag_ms: number }>(REPLICA_LAG_QUERY)
        lagMs = Number(rows[0]?.lag_ms ?? 0)
      } catch (error) {
        lease.release(true)
        this.#replicas.failed(replica, redactText(error instanceof Error ? error.message : String(error), lease.binding.redactions), this.#retryAfter(lease.binding))
        return false
      }
      this.#replicas.lagged(replica, lagMs)
      if (lagMs > maxLagMs) {
        lease.release()
        this.#replicas.failed(replica, `replay lag ${Math.round(lagMs)} ms > maxLagMs ${maxLagMs}`, this.#retryAfter(lease.binding))
        return false
      }
    }
    this.#replicas.succeeded(replica)
    lease.onReplica = true
    return true
  }

  #retryAfter(binding: TenantBinding): number {
    return binding.replicaRules?.retryAfterMs ?? 30_000
  }

  /** @internal LeaseOwner: a replica canceled a statement (recovery conflict): skip it for a while. */
  replicaFailed(lease: Lease, error: unknown): void {
    if (!isRecoveryConflict(error)) return
    this.#replicas.failed(lease.conn.pool.target, 'recovery conflict', this.#retryAfter(lease.binding))
  }

  /** `host:port` of servers reached as replicas. */
  replicaServers(): ReadonlySet<string> {
    return this.#replicas.servers
  }

  /** Replicas seen, for stats(). */
  replicas(): ReturnType<ReplicaRouter['stats']> {
    return this.#replicas.stats()
  }

  /** An idle connection unused for `validateAfterIdleMs`: the server may have restarted meanwhile. */
  #needsValidation(conn: PooledConnection): boolean {
    // uses is 1 for a connection opened for this checkout.
    return conn.uses > 1 && this.#clock.now() - conn.idleSince >= this.#policy.validateAfterIdleMs
  }

  /** Leak detection and scopes watch the checkout. */
  #track(lease: Lease): void {
    const scope = scopeOf<Lease>(this)
    if (this.#watch === undefined && scope === undefined && this.#policy.telemetry === undefined) return
    lease.acquiredAt = this.#clock.now()
    this.#watch?.add(lease)
    if (scope === undefined) return
    if (!scope.open) {
      // Checked out after its scope settled (a query fn did not await): taken back at once.
      this.#leaked(lease, 0, 'scope')
      return
    }
    lease.scope = scope
    scope.add(lease)
  }

  /** Reports a leak; destroys the connection for a scope, or with leakDetection.destroy. */
  #leaked(lease: Lease, heldMs: number, reason: LeakReason): void {
    this.#leaks++
    const destroy = reason === 'scope' || this.#policy.leakDetection?.destroy === true
    const { service, orgId } = lease.binding.key
    if (destroy) lease.revoke(reason)
    // Not destroyed: it no longer keeps its pool from being evicted (the holder's queries fail then).
    else lease.conn.pool.markLeaked(lease.conn, () => lease.revoke('threshold'))
    this.#events.leak({ service, orgId, heldMs, stack: lease.stack ?? NO_STACK, reason, destroyed: destroy })
  }

  /**
   * Stop serving: waiters get `RegistryClosedError`. Resolves when every checked-out connection came
   * back (the registry applies its own deadline).
   */
  close(): Promise<void> {
    this.#closed = true
    this.#watch?.stop()
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

  /** @internal LeaseOwner: the checkout ended, stop watching it. */
  ended(lease: Lease): void {
    this.#watch?.delete(lease)
    lease.scope?.delete(lease)
  }

  /** @internal LeaseOwner: the connection is back (the lease already applied its hygiene). */
  checkIn(lease: Lease, destroy: boolean): void {
    const conn = lease.conn
    const pool = conn.pool
    // acquiredAt is 0 for a checkout that never reached its caller (validation or onClaim failed).
    if (lease.acquiredAt !== 0) this.#policy.telemetry?.released(pool.name, lease.binding.key, this.#clock.now() - lease.acquiredAt)
    if (destroy || conn.dead) void pool.destroy(conn)
    else pool.checkIn(conn)
    this.#freed(lease.usage, pool)
  }

  /** @internal LeaseOwner */
  releaseHookFailed(lease: Lease, error: unknown): void {
    const message = describe(redactInPlace(error, lease.binding.redactions), lease.binding.redactions)
    this.#logger.warn({ service: lease.binding.key.service, orgId: lease.binding.key.orgId, err: message }, 'hyperconn: onRelease hook failed; connection destroyed')
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

  #server(name: string, pooler: boolean): Server {
    let server = this.#servers.get(name)
    if (server === undefined) {
      // Behind a pooler max_connections is the server's, not the pooler's client limit: 'auto' uses
      // PgBouncer's default max_client_conn instead.
      const auto = pooler ? Math.max(1, Math.floor(POOLER_AUTO / this.#limits.instances)) : undefined
      const max = this.#limits.max === 'auto' ? auto : this.#limits.max
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
        lastOpenedAt: undefined,
        lastFailure: undefined,
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

  #checkout(binding: TenantBinding, target: ConnectionTarget, usage: TenantUsage, note: AcquireNote | undefined): Promise<PooledConnection> {
    const server = this.#server(target.server, target.pooler)
    if (server.queue.size === 0) {
      const started = this.#tryStart(usage, binding, target, server)
      if (typeof started !== 'string') return Promise.resolve(started)
    }
    if (note !== undefined) note.queued = true
    return new Promise<PooledConnection>((resolve, reject) => {
      const waiter: Waiter = {
        usage,
        binding,
        target,
        server,
        since: this.#clock.now(),
        resolve,
        reject,
        blockedBy: 'connections.max',
        context: this.#policy.telemetry?.capture(),
      }
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
  #tryStart(usage: TenantUsage, binding: TenantBinding, target: ConnectionTarget, server: Server): Started | SaturatedLimit {
    if (usage.held >= this.#limits.perTenant) return 'connections.perTenant'
    let pool = this.#pools.get(target)
    if (pool === undefined) {
      pool = this.#pools.obtain(target, server.budget)
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
      const message = redactText(error instanceof Error ? error.message : String(error), pool.target.redactions())
      const sqlState = sqlStateOf(error)
      server.lastFailure = { message, sqlState, at: this.#clock.now(), network: isNetworkFailure(sqlState) }
      this.#freed(usage, pool)
      throw error
    }
    server.lastOpenedAt = this.#clock.now()
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
            ? this.#pools.get(waiter.target)?.max
            : this.#pools.max
    this.#policy.telemetry?.timedOut(this.#poolName(waiter.target), waiter.binding.key, this.#clock.now() - waiter.since)
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

function first<T>(set: Set<T>): T | undefined {
  for (const item of set) return item
  return undefined
}

const heldBy = (usage: TenantUsage): number => usage.held

/**
 * The server could not be reached or is going away (no SQLSTATE: a socket error or timeout; 08xxx; 57P0x
 * shutdown, 53300 too many connections is not), as opposed to one tenant's login or database being wrong.
 */
function isNetworkFailure(sqlState: string | undefined): boolean {
  return sqlState === undefined || !/^[0-9A-Z]{5}$/.test(sqlState) || sqlState.startsWith('08') || sqlState.startsWith('57P')
}

/** Deep enough to reach the caller's line through an ORM's own frames. */
function captureOrigin(): Error {
  const limit = Error.stackTraceLimit
  Error.stackTraceLimit = 40
  const origin = new Error('acquired here')
  Error.stackTraceLimit = limit
  return origin
}

function describe(error: unknown, redactions: readonly string[]): string {
  return redactText(error instanceof Error ? `${error.name}: ${error.message}` : String(error), redactions)
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
