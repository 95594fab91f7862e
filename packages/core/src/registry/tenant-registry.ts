import { inspect } from 'node:util'
import type { QueryConfig } from 'pg'
import { InstanceCache } from '../adapter/instance-cache.js'
import { InvalidOptionsError, RegistryClosedError, SecretSourceError, UnknownServiceError, UnsupportedError } from '../hyperconn-error.js'
import { sqlStateOf } from '../pg-error.js'
import { looksLikePooler } from '../pools/connection-target.js'
import { LeasePoint } from '../pools/lease-point.js'
import { loadOtelApi } from '../telemetry/telemetry-api.js'
import { RegistryTelemetry } from '../telemetry/registry-telemetry.js'
import type { PoolGauge } from '../telemetry/registry-telemetry.js'
import type { TargetPool } from '../pools/target-pool.js'
import { TargetPoolCache } from '../pools/target-pool-cache.js'
import { TenantBindingCache } from '../pools/tenant-binding-cache.js'
import { TenantPool } from '../pools/tenant-pool.js'
import { SecretCache } from '../secrets/secret-cache.js'
import type { SecretCacheStats } from '../secrets/secret-cache.js'
import { redactText } from '../secrets/secret-redaction.js'
import type { Propagation, Tenant, TenantKey, TenantPoolAccess, TransactionOptions } from '../tenant-types.js'
import { assertValidId, TENANT_ID_PATTERN } from '../tenant-validation.js'
import { createTenantHandle, poolQuery } from '../transactions/tenant-handle.js'
import type { LifecycleHooks } from '../pools/lease-hooks.js'
import type { EvictionReason, RegistryEventName, RegistryListener } from './registry-events.js'
import { RegistryEventEmitter } from './registry-events.js'
import type { RegistryOptions, ResolvedOptions, TenantListing } from './registry-options.js'
import { resolveOptions } from './registry-options.js'

/** A tenant holding or waiting for connections right now. */
export interface TenantPoolStats {
  service: string
  orgId: string
  checkedOut: number
  waiting: number
}

/** One physical pool (a connection target shared by every tenant that connects to it). */
export interface PhysicalPoolStats {
  /** `host:port/database@user` (`#n` appended when two targets share it): no secret. */
  name: string
  server: string
  total: number
  idle: number
  checkedOut: number
  opening: number
  draining: boolean
}

/** The connection budget of one server. */
export interface ServerStats {
  server: string
  /** `connections.max`, or null while 'auto' has not been read yet. */
  max: number | null
  open: number
  /** Most connections open at once so far. */
  peak: number
  waiting: number
}

/** Plain JSON: safe to log or serve; contains no secret. */
export interface RegistryStats {
  closed: boolean
  pools: { count: number; max: number; draining: number; created: number; list: PhysicalPoolStats[] }
  tenants: { cached: number; max: number; resolving: number; active: TenantPoolStats[] }
  servers: ServerStats[]
  connections: { total: number; idle: number; waiting: number; checkedOut: number }
  evictions: Record<EvictionReason, number> & { total: number }
  connectionErrors: number
  /** Checkouts reported as leaks so far (`connection:leak` events). */
  leaks: number
  /** Read replicas seen: skipped (`down`) or not, why, and the last measured replay lag. */
  replicas: { replica: string; down: boolean; reason: string | null; lagMs: number | null }[]
  secretCache: SecretCacheStats
}

/** One server in `registry.health()`. */
export interface ServerHealth {
  /** `host:port`. */
  server: string
  /** Whether the last attempt to open a connection succeeded; null before any attempt. */
  reachable: boolean | null
  /** `connections.max` (null while 'auto' is unknown), connections open, and of those in use. */
  budget: { max: number | null; open: number; inUse: number }
  /** Callers waiting in the fair queue. */
  waiting: number
  lastConnectedAt: string | null
  /** The last failure to open a connection, redacted. */
  lastError: { message: string; sqlState: string | null; at: string } | null
  /** Reached as a read replica: its being unreachable does not make `ok` false (reads fall back to the primary). */
  replica?: true
}

/** `registry.health()`: plain JSON, no secret. */
export interface HealthReport {
  /** Open, and no server's last connection attempt failed. */
  ok: boolean
  closed: boolean
  servers: ServerHealth[]
}

/** Options of `registry.close`. */
export interface CloseOptions {
  /** How long to wait for checked-out connections before closing them. Default 10 000. */
  timeoutMs?: number
}

/** Options of `registry.warm`. */
export interface WarmOptions<TService extends string = string> {
  /** Warm only this service; default all of them. */
  service?: TService
  /** Also open this many connections in each physical pool these tenants use (at most `pool.max` and `connections.perTenant`). */
  connections?: number
}

/**
 * The facade users hold. It wires the pieces and forwards: secrets (`SecretCache`), tenant bindings
 * (`TenantBindingCache`), physical pools (`TargetPoolCache`) and the one lease point every connection
 * passes through (`LeasePoint`). It holds no pool or connection state of its own.
 */
export class Registry<TService extends string = string> implements AsyncDisposable {
  readonly #options: ResolvedOptions
  readonly #events: RegistryEventEmitter
  readonly #secrets: SecretCache
  readonly #bindings: TenantBindingCache
  readonly #pools: TargetPoolCache
  readonly #leases: LeasePoint
  readonly #access: TenantPoolAccess
  readonly #facades = new Map<string, InstanceCache<{ readonly pool: TenantPool; readonly resolved: Promise<TenantPool> }>>()
  readonly #sweeper: ReturnType<ResolvedOptions['clock']['setInterval']>
  #closing: Promise<void> | undefined
  #connectionErrors = 0
  readonly #telemetry: RegistryTelemetry | undefined

  constructor(input: RegistryOptions<TService>) {
    const options = resolveOptions(input)
    this.#options = options
    const { clock, logger } = options
    // Loaded first: without @opentelemetry/api, createRegistry throws before anything is created.
    const telemetry =
      options.telemetry === undefined
        ? undefined
        : new RegistryTelemetry(loadOtelApi(), options.telemetry, {
            pools: () => this.#poolGauges(),
            pending: () => this.#leases.pendingByPool(),
          })
    this.#telemetry = telemetry
    this.#events = new RegistryEventEmitter((error, event) =>
      logger.error({ event, err: describeError(error) }, 'hyperconn: an event listener threw'),
    )
    this.#secrets = new SecretCache(telemetry === undefined ? options.secrets : telemetry.traceSource(options.secrets), options.secretCache, clock, {
      onFetch: (secretName, outcome, durationMs) => {
        telemetry?.secretFetched(outcome)
        this.#events.emit('secret:fetch', { secretName, outcome, durationMs })
        logger.debug({ secretName, outcome, durationMs }, 'hyperconn: secret fetched')
      },
      onStale: (secretName, error) => {
        this.#events.emit('secret:stale', { secretName })
        logger.warn({ secretName, code: error.sourceCode }, 'hyperconn: serving a stale secret')
      },
    })
    this.#bindings = new TenantBindingCache(
      { maxTenants: options.eviction.maxTenants, idleTtlMs: options.eviction.idleTtlMs },
      {
        secrets: this.#secrets,
        secretName: options.secretName,
        secretKey: options.secretKey,
        service: (name) => options.serviceConfig.get(name) as NonNullable<ReturnType<typeof options.serviceConfig.get>>,
        clientBase: options.client,
        onError: (secretName, error) =>
          this.#events.emit('secret:error', {
            secretName,
            code: error.code,
            transient: error instanceof SecretSourceError && error.transient,
          }),
      },
      clock,
    )
    this.#pools = new TargetPoolCache(
      { maxPools: options.eviction.maxPools, idleTtlMs: options.eviction.idleTtlMs },
      options.sizing,
      clock,
      {
        created: (pool) => {
          this.#events.emit('pool:create', { pool: pool.name, server: pool.target.server })
          logger.debug({ pool: pool.name }, 'hyperconn: pool created')
          if (!pool.target.pooler && looksLikePooler(pool.target.server)) {
            logger.warn(
              { pool: pool.name },
              "hyperconn: this address looks like a transaction pooler (PgBouncer, RDS Proxy, Supavisor); if it is one, set pooler: 'transaction' on the service, or tenant settings set per session would reach other clients",
            )
          }
        },
        evicted: (pool, reason) => {
          telemetry?.evicted(reason)
          this.#events.emit('pool:evict', { pool: pool.name, reason })
          logger.debug({ pool: pool.name, reason }, 'hyperconn: pool evicted')
        },
        ended: (pool, forced) => this.#events.emit('pool:end', { pool: pool.name, forced }),
      },
      (pool, error, phase) => this.#reportConnectionError(pool, error, phase),
    )
    const hooks = new Map<string, LifecycleHooks>()
    for (const [name, service] of options.serviceConfig) if (service.hooks !== undefined) hooks.set(name, service.hooks)
    this.#leases = new LeasePoint(
      this.#bindings,
      this.#pools,
      this.#secrets,
      options.connections,
      { hooks, leakDetection: options.leakDetection, validateAfterIdleMs: options.validateAfterIdleMs, telemetry },
      {
        leak: (report) => {
          telemetry?.leaked(report.reason, report)
          this.#events.emit('connection:leak', { ...report })
          logger.warn(
            { service: report.service, orgId: report.orgId, heldMs: report.heldMs, reason: report.reason, destroyed: report.destroyed, stack: report.stack },
            'hyperconn: connection leak',
          )
        },
        replicas: {
          down: (replica, reason, retryAfterMs) => {
            this.#events.emit('replica:down', { replica: replica.label, reason, retryAfterMs })
            logger.warn({ replica: replica.label, reason, retryAfterMs }, 'hyperconn: replica skipped; reads go to the primary')
          },
          up: (replica) => {
            this.#events.emit('replica:up', { replica: replica.label })
            logger.info({ replica: replica.label }, 'hyperconn: replica back in rotation')
          },
        },
      },
      clock,
      logger,
    )
    this.#access = Object.freeze({
      acquire: (key: TenantKey, read?: boolean) => this.#leases.acquire(key, read),
      pool: (key: TenantKey) => this.#facade(key).resolved,
      assertOpen: () => this.#assertOpen(),
      ...(telemetry === undefined
        ? {}
        : {
            traceTransaction: <T>(key: TenantKey, txOptions: TransactionOptions, propagation: Propagation, run: () => Promise<T>) =>
              telemetry.transaction(key, txOptions, propagation, run),
          }),
      schemaOf: (key: TenantKey) => {
        const isolation = options.serviceConfig.get(key.service)?.isolation
        return isolation?.kind === 'schema' ? isolation.schema(key.orgId) : undefined
      },
      assertSessions: (key: TenantKey) => {
        if (options.serviceConfig.get(key.service)?.pooler === true) {
          throw new UnsupportedError(
            `tenant.connection() needs one server connection for its whole scope, and service "${key.service}" is behind a transaction pooler (pooler: 'transaction'), ` +
              'which may move a client to another server connection after every transaction. Use tenant.transaction(fn) for work that must share a connection, or give the service a direct URL.',
          )
        }
      },
    })
    this.#sweeper = clock.setInterval(() => {
      this.#pools.sweep()
      this.#bindings.sweep()
      this.#leases.sweep()
    }, options.eviction.sweepIntervalMs)
    this.#sweeper.unref?.()
  }

  /**
   * The tenant's `pg.Pool`: bound to the tenant, owning no connections. Its `query` and `connect` go
   * through the lease point like every other path; `end()` is a no-op. Resolves once the tenant's
   * secret is known (so a bad tenant fails here), always with the same object for the same tenant.
   */
  getPool(service: TService, orgId: string): Promise<TenantPool> {
    // A tenant handed out before (so valid, with its binding resolved once) gets the same settled promise:
    // nothing is allocated or validated again on this path.
    const known = this.#closing === undefined ? this.#facades.get(service)?.peek(orgId) : undefined
    return known?.resolved ?? this.#getPoolSlow(service, orgId)
  }

  async #getPoolSlow(service: TService, orgId: string): Promise<TenantPool> {
    const key = this.#key(service, orgId)
    const binding = this.#bindings.get(key)
    if (binding instanceof Promise) await binding
    return this.#facade(key).pool
  }

  /** Alias of `getPool`, for hyperconn-pg users. */
  getConnection(service: TService, orgId: string): Promise<TenantPool> {
    return this.getPool(service, orgId)
  }

  /** A handle for one tenant: queries and transactions that follow the shared transaction context. */
  tenant(orgId: string, service?: TService): Tenant<TService> {
    const only = this.#options.services.length === 1 ? this.#options.services[0] : undefined
    const resolved = service ?? only
    if (resolved === undefined) throw new UnknownServiceError('(none given)', this.#options.services)
    return createTenantHandle(this.#access, this.#key(resolved, orgId)) as Tenant<TService>
  }

  /**
   * Resolve secrets (and with `connections`, open connections) ahead of traffic. Rejects with the first
   * failure after trying all.
   */
  async warm(orgIds: readonly string[], serviceOrOptions?: TService | WarmOptions<TService>): Promise<void> {
    if (!Array.isArray(orgIds)) throw new InvalidOptionsError('warm(orgIds, service?): orgIds must be an array of org ids.')
    const options: WarmOptions<string> = typeof serviceOrOptions === 'string' ? { service: serviceOrOptions } : (serviceOrOptions ?? {})
    const want = options.connections ?? 0
    if (!Number.isSafeInteger(want) || want < 0) throw new InvalidOptionsError('warm(orgIds, { connections }): connections must be a whole number >= 0.')
    const services = options.service === undefined ? this.#options.services : [options.service]
    const keys = orgIds.flatMap((orgId) => services.map((s) => this.#key(s, orgId)))
    const results = await Promise.allSettled(
      keys.map(async (key) => {
        const binding = this.#bindings.get(key)
        return binding instanceof Promise ? await binding : binding
      }),
    )
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed) throw failed.reason
    if (want === 0) return
    // One tenant per physical pool opens `want` connections at once and gives them back idle (as many as
    // one tenant may hold: more would wait for itself).
    const count = Math.min(want, this.#options.sizing.max, this.#options.connections.perTenant)
    const byTarget = new Map<string, TenantKey>()
    for (const r of results) if (r.status === 'fulfilled') byTarget.set(r.value.target.identity, r.value.key)
    await Promise.all(
      [...byTarget.values()].map(async (key) => {
        const leases = await Promise.allSettled(Array.from({ length: count }, () => this.#leases.acquire(key)))
        for (const lease of leases) if (lease.status === 'fulfilled') lease.value.release()
        const refused = leases.find((r): r is PromiseRejectedResult => r.status === 'rejected')
        if (refused !== undefined) throw refused.reason
      }),
    )
  }

  /**
   * The org ids whose secrets the secret source holds, each once, fetched lazily (Secrets Manager:
   * `ListSecrets` page by page). Secret names starting with `secretPrefix` (default `${project}-`) are
   * turned into org ids by `orgIdOf` (default: the name minus `${project}-`); a name it maps to undefined,
   * to an invalid org id, or to an org whose `secretName` is another name, is skipped. `service` is
   * checked (`UnknownServiceError`) but does not filter: the listing reads names, not values, so a tenant
   * whose secret lacks the service's key is listed (its use then fails with `SecretFormatError`).
   * Throws `UnsupportedError` when the source cannot list names or a custom `secretName` has no `orgIdOf`,
   * and `RegistryClosedError` once the registry is closing (also between items).
   */
  listTenants(service?: TService): AsyncIterable<string> {
    this.#assertOpen()
    if (service !== undefined) this.#assertService(service)
    const listing = this.#options.tenantListing
    if (listing === undefined) {
      throw new UnsupportedError(
        'registry.listTenants() cannot tell org ids from secret names: secretName is a custom function. Add createRegistry({ orgIdOf: (secretName) => orgId | undefined }), ' +
          'the inverse of secretName, and optionally secretPrefix to list only the secrets whose name starts with it.',
      )
    }
    const source = this.#options.secrets
    if (typeof source.list !== 'function') {
      throw new UnsupportedError(
        `registry.listTenants() needs a secret source that can list secret names, and this one${source.kind === undefined ? '' : ` (${source.kind})`} cannot: ` +
          'awsSecretsManager(), staticSecrets() and fileSecrets() can, and so can your own source with a list(prefix) method. Otherwise pass the org ids yourself.',
      )
    }
    return this.#listTenants(source.list.bind(source), listing)
  }

  async *#listTenants(
    list: (prefix: string) => AsyncIterable<string>,
    { prefix, orgIdOf }: TenantListing,
  ): AsyncGenerator<string, void, undefined> {
    const seen = new Set<string>()
    let skipped = 0
    for await (const secretName of list(prefix)) {
      this.#assertOpen()
      if (typeof secretName !== 'string' || !secretName.startsWith(prefix)) {
        skipped++
        continue
      }
      const orgId = orgIdOf(secretName)
      if (typeof orgId === 'string' && seen.has(orgId)) continue
      if (
        typeof orgId !== 'string' ||
        !TENANT_ID_PATTERN.test(orgId) ||
        // Only orgs whose own secret this is: getPool(orgId) reads exactly this name.
        this.#options.secretName(orgId) !== secretName
      ) {
        skipped++
        continue
      }
      seen.add(orgId)
      yield orgId
    }
    this.#options.logger.debug({ tenants: seen.size, skipped }, 'hyperconn: tenants listed')
  }

  /**
   * Forget one tenant's binding (rebuilt from its cached secret, or the source, on next use) and, if no
   * other cached tenant uses its physical pool, drain and end that pool. Resolves when it has ended.
   */
  async evict(service: TService, orgId: string): Promise<void> {
    const key = this.#key(service, orgId)
    const binding = this.#bindings.delete(key)
    if (binding === undefined) return
    const pool = this.#pools.get(binding.target)
    if (pool === undefined) return
    const shared = this.#bindings.bindings().some((other) => other.target.identity === binding.target.identity)
    if (!shared) await this.#pools.retire(pool, 'manual')
  }

  /**
   * Runs `fn` as one unit of work (a request, a Lambda invocation): every connection checked out inside
   * its async context and still held when it settles is destroyed and reported (`connection:leak`,
   * reason 'scope', and `stats().leaks`), with or without `leakDetection`. Resolves or rejects as `fn` does.
   */
  scope<T>(fn: () => Promise<T>): Promise<T> {
    if (typeof fn !== 'function') return Promise.reject(new InvalidOptionsError('registry.scope(fn): fn must be a function returning a promise.'))
    return this.#leases.scope(fn)
  }

  /**
   * Per server this registry has connected to: whether the last attempt to open a connection succeeded
   * (`reachable`, null before any), the budget in use, callers waiting, and the last failure (redacted:
   * never a password or connection string). Plain JSON, for readiness probes. It sends nothing to the
   * servers: it reports what the registry's own traffic saw.
   */
  health(): Promise<HealthReport> {
    const servers = this.#leases.health().map((s): ServerHealth => {
      const failure = s.lastFailure
      // A refused login or a missing database is one tenant's problem: the server itself answered.
      const down = failure !== undefined && failure.network && (s.lastOpenedAt ?? -Infinity) <= failure.at
      const reachable = down ? false : s.lastOpenedAt === undefined && failure === undefined ? null : true
      return {
        server: s.server,
        reachable,
        budget: { max: s.max ?? null, open: s.open, inUse: s.open - s.idle },
        waiting: s.waiting,
        lastConnectedAt: s.lastOpenedAt === undefined ? null : new Date(s.lastOpenedAt).toISOString(),
        lastError: failure === undefined ? null : { message: failure.message, sqlState: failure.sqlState ?? null, at: new Date(failure.at).toISOString() },
      }
    })
    // A replica that is down does not make the registry unready: reads fall back to the primary.
    const replicas = this.#leases.replicaServers()
    const ok = this.#closing === undefined && servers.every((s) => s.reachable !== false || replicas.has(s.server))
    return Promise.resolve({ ok, closed: this.#closing !== undefined, servers: servers.map((s) => (replicas.has(s.server) ? { ...s, replica: true } : s)) })
  }

  /** Subscribe to a typed event; returns an unsubscribe function. */
  on<E extends RegistryEventName>(event: E, listener: RegistryListener<E>): () => void {
    return this.#events.on(event, listener)
  }

  /** Remove a listener added with `on` (calling the function `on` returned does the same). */
  off<E extends RegistryEventName>(event: E, listener: RegistryListener<E>): void {
    this.#events.off(event, listener)
  }

  /** Pools, tenants, server budgets, connections, evictions and the secret cache now: plain JSON, no secret. */
  stats(): RegistryStats {
    const list: PhysicalPoolStats[] = []
    const connections = { total: 0, idle: 0, waiting: 0, checkedOut: 0 }
    const add = (pool: TargetPool, draining: boolean): void => {
      list.push({
        name: pool.name,
        server: pool.target.server,
        total: pool.size,
        idle: pool.idleCount,
        checkedOut: pool.checkedOut,
        opening: pool.opening,
        draining,
      })
      connections.total += pool.size
      connections.idle += pool.idleCount
      connections.checkedOut += pool.checkedOut
    }
    for (const pool of this.#pools.pools()) add(pool, false)
    const draining = this.#pools.draining()
    for (const pool of draining) add(pool, true)
    const servers = this.#leases.servers().map((s) => ({ ...s, max: s.max ?? null }))
    for (const s of servers) connections.waiting += s.waiting
    const evictions = this.#pools.evictions
    return {
      closed: this.#closing !== undefined,
      pools: {
        count: this.#pools.size,
        max: this.#options.eviction.maxPools,
        draining: draining.length,
        created: this.#pools.created,
        list,
      },
      tenants: {
        cached: this.#bindings.size,
        max: this.#options.eviction.maxTenants,
        resolving: this.#bindings.resolving,
        active: this.#leases.activeTenants(),
      },
      servers,
      connections,
      evictions: { ...evictions, total: Object.values(evictions).reduce((a, b) => a + b, 0) },
      connectionErrors: this.#connectionErrors,
      leaks: this.#leases.leaks,
      replicas: this.#leases.replicas(),
      secretCache: this.#secrets.stats(),
    }
  }

  /**
   * Stop the sweeper, reject new work and waiting callers with `RegistryClosedError`, wait for
   * checked-out connections, then end every pool. Connections still checked out at the deadline are
   * closed (their holders' next statement rejects with `RegistryClosedError`); the promise resolves by then.
   */
  close(options: CloseOptions = {}): Promise<void> {
    const timeoutMs = options.timeoutMs ?? 10_000
    if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs < 0)
      return Promise.reject(new InvalidOptionsError('close({ timeoutMs }): timeoutMs must be a finite number of milliseconds >= 0.'))
    this.#closing ??= this.#close(timeoutMs)
    return this.#closing
  }

  /** `close()` with the default timeout, for `await using registry = createRegistry(...)`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }

  /** `JSON.stringify(registry)` gives `{ hyperconnRegistry: stats() }`: never the options or a secret. */
  toJSON(): object {
    return { hyperconnRegistry: this.stats() }
  }

  /** `util.inspect(registry)` (what a log line of it shows) prints services and counts, never the options or a secret. */
  [inspect.custom](): string {
    const s = this.stats()
    return `Registry { services: ${inspect(this.#options.services)}, pools: ${s.pools.count}, tenants: ${s.tenants.cached}, closed: ${s.closed} }`
  }

  async #close(timeoutMs: number): Promise<void> {
    const { clock } = this.#options
    clock.clearInterval(this.#sweeper)
    let timer: ReturnType<typeof clock.setTimeout> | undefined
    const deadline = new Promise<'timeout'>((resolve) => {
      timer = clock.setTimeout(() => resolve('timeout'), timeoutMs)
    })
    const released = this.#leases.close().then(() => 'released' as const)
    const outcome = await Promise.race([released, deadline])
    if (timer) clock.clearTimeout(timer)
    if (outcome === 'timeout') {
      this.#options.logger.warn(
        { checkedOut: this.#leases.checkedOut },
        'hyperconn: closing connections still checked out at the close deadline',
      )
      this.#pools.forceCloseAll()
    } else {
      await Promise.all(this.#pools.pools().map((pool) => this.#pools.retire(pool, 'close')))
      this.#pools.forceCloseAll()
    }
    this.#bindings.clear()
    this.#facades.clear()
    this.#secrets.clear()
    this.#telemetry?.close()
    await this.#options.secrets.close?.()
  }

  /** Every physical pool's connection counts, for the telemetry gauges (read at collection only). */
  #poolGauges(): PoolGauge[] {
    const gauges: PoolGauge[] = []
    for (const pool of [...this.#pools.pools(), ...this.#pools.draining()]) {
      // Opening connections are neither: they are not counted until they are checked out.
      gauges.push({ name: pool.name, idle: pool.idleCount, used: pool.checkedOut, max: pool.max })
    }
    return gauges
  }

  #assertOpen(): void {
    if (this.#closing) throw new RegistryClosedError()
  }

  #assertService(service: string): void {
    assertValidId(service, 'service')
    if (!this.#options.serviceConfig.has(service)) throw new UnknownServiceError(service, this.#options.services)
  }

  /** Validation happens before any lookup, so rejected input creates nothing and fetches nothing. */
  #key(service: string, orgId: string): TenantKey {
    this.#assertOpen()
    this.#assertService(service)
    assertValidId(orgId, 'orgId')
    return Object.freeze({ service, orgId })
  }

  #facade(key: TenantKey): { readonly pool: TenantPool; readonly resolved: Promise<TenantPool> } {
    let byOrg = this.#facades.get(key.service)
    if (byOrg === undefined) {
      const service = key.service
      byOrg = new InstanceCache((orgId) => {
        const tenant: TenantKey = Object.freeze({ service, orgId })
        const pool = new TenantPool(tenant, {
          query: (text: string | QueryConfig, values?: unknown[]) => poolQuery(this.#access, tenant, text, values),
          lease: () => this.#leases.acquire(tenant),
          usage: () => this.#leases.usage(tenant),
        })
        return { pool, resolved: Promise.resolve(pool) }
      }, this.#options.eviction.maxTenants)
      this.#facades.set(key.service, byOrg)
    }
    return byOrg.get(key.orgId)
  }

  #reportConnectionError(pool: TargetPool, error: Error, phase: 'idle' | 'checked-out'): void {
    this.#connectionErrors++
    const sqlState = sqlStateOf(error)
    const message = redactText(error.message, pool.target.redactions())
    this.#events.emit('connection:error', { pool: pool.name, phase, message, sqlState })
    this.#options.logger.warn({ pool: pool.name, phase, sqlState, err: message }, 'hyperconn: connection error')
  }
}

function describeError(error: unknown): string {
  return redactText(error instanceof Error ? `${error.name}: ${error.message}` : String(error))
}

/**
 * Create a registry. Options are validated here; a bad option throws `InvalidOptionsError`. The service
 * names of a literal `services` list or object become the registry's `TService` union; a `string[]`
 * gives `Registry<string>`.
 */
export function createRegistry<const TService extends string>(options: RegistryOptions<TService>): Registry<TService> {
  return new Registry(options)
}

/** The union of service names of a registry type, e.g. `ServiceOf<typeof registry>` (`string` for a `Registry<string>`). */
export type ServiceOf<R extends Registry<any>> = R extends Registry<infer S> ? S : never
