import { inspect } from 'node:util'
import type { PoolClient, PoolConfig } from 'pg'
import { parse as parseConnectionString } from 'pg-connection-string'
import {
  ConnectionError,
  HyperconnError,
  InvalidOptionsError,
  RegistryClosedError,
  SecretSourceError,
  UnknownServiceError,
} from '../hyperconn-error.js'
import type { PoolEntry } from '../pools/pool-cache.js'
import { PoolCache } from '../pools/pool-cache.js'
import { sqlStateOf } from '../pg-error.js'
import type { EvictionReason, RegistryEventName, RegistryListener } from './registry-events.js'
import { RegistryEventEmitter } from './registry-events.js'
import type { RegistryOptions, ResolvedOptions } from './registry-options.js'
import { resolveOptions } from './registry-options.js'
import type { SecretBundle } from '../secrets/secret-bundle.js'
import { SecretCache } from '../secrets/secret-cache.js'
import type { SecretCacheStats } from '../secrets/secret-cache.js'
import { describeConnectionString, redactText } from '../secrets/secret-redaction.js'
import { createTenantHandle } from '../transactions/tenant-handle.js'
import { TenantPool } from '../pools/tenant-pool.js'
import type { PoolLease, Tenant, TenantKey, TenantPoolAccess } from '../tenant-types.js'
import { assertValidId } from '../tenant-validation.js'

export interface TenantPoolStats {
  service: string
  orgId: string
  totalCount: number
  idleCount: number
  waitingCount: number
  checkedOut: number
  lastUsedAt: number
}

/** Plain JSON: safe to log or serve; contains no secret. */
export interface RegistryStats {
  closed: boolean
  pools: { count: number; max: number; pending: number; draining: number; created: number }
  connections: { total: number; idle: number; waiting: number; checkedOut: number }
  evictions: Record<EvictionReason, number> & { total: number }
  connectionErrors: number
  secretCache: SecretCacheStats
  tenants: TenantPoolStats[]
}

export interface CloseOptions {
  /** How long to wait for checked-out clients before closing their connections. Default 10 000. */
  timeoutMs?: number
}

// SQLSTATEs that mean "the password in our secret is stale": refresh the secret once and retry.
const AUTH_FAILURES = new Set(['28P01', '28000'])
const AUTH_REFRESH_INTERVAL_MS = 30_000

export class Registry implements AsyncDisposable {
  readonly #options: ResolvedOptions
  readonly #events: RegistryEventEmitter
  readonly #secrets: SecretCache
  readonly #pools: PoolCache
  readonly #access: TenantPoolAccess
  readonly #lastAuthRefresh = new Map<string, number>()
  // Kept off the entry object so no inspect or stats path can ever reach it.
  readonly #passwords = new WeakMap<PoolEntry, string>()
  #closing: Promise<void> | undefined
  #connectionErrors = 0

  constructor(input: RegistryOptions) {
    const options = resolveOptions(input)
    this.#options = options
    this.#events = new RegistryEventEmitter((error, event) =>
      options.logger.error({ event, err: describeError(error) }, 'hyperconn: an event listener threw'),
    )
    this.#secrets = new SecretCache(options.secrets, options.secretCache, options.clock, {
      onFetch: (secretName, outcome, durationMs) => {
        this.#events.emit('secret:fetch', { secretName, outcome, durationMs })
        options.logger.debug({ secretName, outcome, durationMs }, 'hyperconn: secret fetched')
      },
      onStale: (secretName, error) => {
        this.#events.emit('secret:stale', { secretName })
        options.logger.warn({ secretName, code: error.sourceCode }, 'hyperconn: serving a stale secret')
      },
    })
    this.#pools = new PoolCache(options.eviction, options.clock, {
      create: (key) => this.#createEntry(key),
      onCreated: (entry) => {
        this.#events.emit('pool:create', { service: entry.key.service, orgId: entry.key.orgId })
        options.logger.debug({ service: entry.key.service, orgId: entry.key.orgId, target: entry.target }, 'hyperconn: pool created')
      },
      onSweep: (entry) => {
        // refresh-ahead: a rotated secret reaches busy pools too, at most one fetch per secret per TTL
        if (!this.#secrets.isFresh(entry.secretName)) this.#refreshSecret(entry)
      },
      onEvict: (entry, reason) => {
        this.#events.emit('pool:evict', { service: entry.key.service, orgId: entry.key.orgId, reason })
        options.logger.debug({ service: entry.key.service, orgId: entry.key.orgId, reason }, 'hyperconn: pool evicted')
      },
      onEnd: (entry, forced) => this.#reportEnd(entry, forced),
    })
    this.#access = Object.freeze({
      acquire: (key: TenantKey) => this.#acquire(key),
      pool: (key: TenantKey) => this.#entry(key).then((entry) => entry.pool),
      assertOpen: () => this.#assertOpen(),
      redactError: (key: TenantKey, error: unknown) => this.#redactQueryError(key, error),
    })
    this.#pools.startSweeper()
  }

  /** The tenant's pool: cached, created once for concurrent callers, never ended under a caller. */
  getPool(service: string, orgId: string): Promise<TenantPool> {
    const entry = this.#pools.peek(service, orgId)
    if (entry !== undefined && this.#closing === undefined) return entry.resolved
    return this.#getPoolSlow(service, orgId)
  }

  async #getPoolSlow(service: string, orgId: string): Promise<TenantPool> {
    return (await this.#entry(this.#key(service, orgId))).pool
  }

  /** Alias of `getPool`, for hyperconn-pg users. */
  getConnection(service: string, orgId: string): Promise<TenantPool> {
    return this.getPool(service, orgId)
  }

  /** A handle for one tenant: queries and transactions that follow the shared transaction context. */
  tenant(orgId: string, service?: string): Tenant {
    const only = this.#options.services.length === 1 ? this.#options.services[0] : undefined
    const resolved = service ?? only
    if (resolved === undefined) throw new UnknownServiceError('(none given)', this.#options.services)
    return createTenantHandle(this.#access, this.#key(resolved, orgId))
  }

  /** Resolve secrets and create pools ahead of traffic. Rejects with the first failure after trying all. */
  async warm(orgIds: readonly string[], service?: string): Promise<void> {
    if (!Array.isArray(orgIds)) throw new InvalidOptionsError('warm(orgIds, service?): orgIds must be an array of org ids.')
    const services = service === undefined ? this.#options.services : [service]
    const keys = orgIds.flatMap((orgId) => services.map((s) => this.#key(s, orgId)))
    const results = await Promise.allSettled(keys.map((key) => this.#entry(key)))
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed) throw failed.reason
  }

  /** Drain and drop one cached pool; resolves when it has ended. The next call creates a fresh pool. */
  async evict(service: string, orgId: string): Promise<void> {
    const key = this.#key(service, orgId)
    const entry = this.#pools.peek(key.service, key.orgId)
    if (entry) await this.#pools.retire(entry, 'manual')
  }

  /** Subscribe to a typed event; returns an unsubscribe function. */
  on<E extends RegistryEventName>(event: E, listener: RegistryListener<E>): () => void {
    return this.#events.on(event, listener)
  }

  off<E extends RegistryEventName>(event: E, listener: RegistryListener<E>): void {
    this.#events.off(event, listener)
  }

  stats(): RegistryStats {
    const tenants: TenantPoolStats[] = []
    const connections = { total: 0, idle: 0, waiting: 0, checkedOut: 0 }
    for (const entry of this.#pools.entries()) {
      const pool = entry.pool
      tenants.push({
        service: entry.key.service,
        orgId: entry.key.orgId,
        totalCount: pool.totalCount,
        idleCount: pool.idleCount,
        waitingCount: pool.waitingCount,
        checkedOut: entry.checkedOut.size,
        lastUsedAt: entry.lastUsedAt,
      })
    }
    for (const entry of [...this.#pools.entries(), ...this.#pools.retiring()]) {
      connections.total += entry.pool.totalCount
      connections.idle += entry.pool.idleCount
      connections.waiting += entry.pool.waitingCount
      connections.checkedOut += entry.checkedOut.size
    }
    const evictions = this.#pools.evictions
    return {
      closed: this.#closing !== undefined,
      pools: {
        count: this.#pools.size,
        max: this.#options.eviction.maxPools,
        pending: this.#pools.pendingCount,
        draining: this.#pools.retiring().length,
        created: this.#pools.created,
      },
      connections,
      evictions: { ...evictions, total: Object.values(evictions).reduce((a, b) => a + b, 0) },
      connectionErrors: this.#connectionErrors,
      secretCache: this.#secrets.stats(),
      tenants,
    }
  }

  /**
   * Stop the sweeper, reject new work with `RegistryClosedError`, drain every pool and end it. Clients
   * still checked out at the deadline have their connections closed; the promise resolves by then.
   */
  close(options: CloseOptions = {}): Promise<void> {
    const timeoutMs = options.timeoutMs ?? 10_000
    if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs < 0)
      return Promise.reject(new InvalidOptionsError('close({ timeoutMs }): timeoutMs must be a finite number of milliseconds >= 0.'))
    this.#closing ??= this.#close(timeoutMs)
    return this.#closing
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }

  toJSON(): object {
    return { hyperconnRegistry: this.stats() }
  }

  [inspect.custom](): string {
    const s = this.stats()
    return `Registry { services: ${inspect(this.#options.services)}, pools: ${s.pools.count}, closed: ${s.closed} }`
  }

  async #close(timeoutMs: number): Promise<void> {
    const { clock } = this.#options
    this.#pools.stopSweeper()
    let timer: ReturnType<typeof clock.setTimeout> | undefined
    const deadline = new Promise<'timeout'>((resolve) => {
      timer = clock.setTimeout(() => resolve('timeout'), timeoutMs)
    })
    const drained = (async () => {
      await this.#pools.settlePending()
      await Promise.all(this.#pools.entries().map((entry) => this.#pools.retire(entry, 'close')))
      await Promise.all(this.#pools.retiring().map((entry) => entry.ended ?? Promise.resolve()))
    })()
    const outcome = await Promise.race([drained.then(() => 'drained' as const), deadline])
    if (timer) clock.clearTimeout(timer)
    if (outcome === 'timeout') {
      for (const entry of [...this.#pools.entries(), ...this.#pools.retiring()]) {
        this.#options.logger.warn(
          { service: entry.key.service, orgId: entry.key.orgId, checkedOut: entry.checkedOut.size },
          'hyperconn: closing connections still checked out at the close deadline',
        )
        for (const client of entry.checkedOut) void client.end().catch(() => {})
        // ends idle clients now; waiters still queued fail at connectionTimeoutMillis
        void entry.pool.shutdown().catch(() => {})
        this.#reportEnd(entry, true)
        this.#pools.forget(entry)
      }
    }
    this.#secrets.clear()
    await this.#options.secrets.close?.()
  }

  #assertOpen(): void {
    if (this.#closing) throw new RegistryClosedError()
  }

  /** Validation happens before any lookup, so rejected input creates nothing and fetches nothing. */
  #key(service: string, orgId: string): TenantKey {
    this.#assertOpen()
    assertValidId(service, 'service')
    if (!this.#options.serviceSet.has(service)) throw new UnknownServiceError(service, this.#options.services)
    assertValidId(orgId, 'orgId')
    return Object.freeze({ service, orgId })
  }

  async #entry(key: TenantKey): Promise<PoolEntry> {
    this.#assertOpen()
    for (;;) {
      const entry = await this.#pools.get(key)
      // A retire between the lookup and now (manual evict) sends us to a fresh pool.
      if (!entry.retired) return entry
      this.#assertOpen()
    }
  }

  async #acquire(key: TenantKey): Promise<PoolLease> {
    let entry = this.#pools.peek(key.service, key.orgId)
    if (entry === undefined || entry.retired || this.#closing !== undefined) entry = await this.#entry(key)
    let client: PoolClient | undefined
    for (let attempt = 0; client === undefined; attempt++) {
      const current: PoolEntry = entry
      current.pendingLeases++
      try {
        client = await current.pool.connect()
      } catch (error) {
        const sqlState = sqlStateOf(error)
        if (attempt === 0 && sqlState !== undefined && AUTH_FAILURES.has(sqlState)) {
          // The password may have been rotated. One caller refetches the secret (only if it is still the
          // version that failed, and at most once per interval) and rebuilds the pool; every caller that
          // failed on the old pool retries once on the new one.
          if (this.#mayRefreshSecret(current.secretName)) {
            this.#secrets.invalidate(current.secretName, current.fingerprint)
            void this.#pools.retire(current, 'rotation')
          }
          entry = await this.#entry(key)
          if (entry !== current) continue
        }
        throw this.#connectionError(current, error)
      } finally {
        current.pendingLeases--
        current.onMaybeIdle?.()
      }
    }
    let released = false
    return {
      client,
      release: (destroy?: Error | boolean) => {
        if (released) return
        released = true
        // the pool's 'release' listener marks the entry used
        client.release(destroy)
      },
    }
  }

  #mayRefreshSecret(name: string): boolean {
    const now = this.#options.clock.now()
    const last = this.#lastAuthRefresh.get(name)
    if (last !== undefined && now - last < AUTH_REFRESH_INTERVAL_MS) return false
    if (this.#lastAuthRefresh.size >= 1_000) {
      for (const [other, at] of this.#lastAuthRefresh) if (now - at >= AUTH_REFRESH_INTERVAL_MS) this.#lastAuthRefresh.delete(other)
    }
    this.#lastAuthRefresh.set(name, now)
    return true
  }

  #reportEnd(entry: PoolEntry, forced: boolean): void {
    if (entry.endReported) return
    entry.endReported = true
    this.#events.emit('pool:end', { service: entry.key.service, orgId: entry.key.orgId, forced })
  }

  #refreshSecret(entry: PoolEntry): void {
    this.#secrets.get(entry.secretName).then(
      (bundle) => this.#applySecret(entry, bundle),
      () => {}, // reported through secret events; the pool keeps its last good credentials
    )
  }

  /**
   * A new version of the tenant's secret: new connections use its password; if it moved the tenant to
   * another host, port, database or user, the pool is retired and the next caller gets a new one.
   */
  #applySecret(entry: PoolEntry, bundle: SecretBundle): void {
    if (bundle.fingerprint === entry.fingerprint) return
    let connectionString: string
    try {
      connectionString = bundle.connectionString(entry.secretKey)
    } catch {
      return // malformed now: keep the last good credentials; getPool reports the format error
    }
    entry.fingerprint = bundle.fingerprint
    const parsed = parseConnectionString(connectionString)
    this.#passwords.set(entry, parsed.password ?? '')
    entry.redactions = [...new Set([...credentialsOf(connectionString, parsed.password), ...entry.redactions])].slice(0, 16)
    if (targetOf(parsed) !== entry.target && !entry.retired) {
      this.#options.logger.info(
        { service: entry.key.service, orgId: entry.key.orgId, target: describeConnectionString(connectionString) },
        'hyperconn: secret now points elsewhere; replacing the pool',
      )
      void this.#pools.retire(entry, 'rotation')
    }
  }

  async #createEntry(key: TenantKey): Promise<PoolEntry> {
    const secretName = this.#options.secretName(key.orgId)
    let bundle: SecretBundle
    try {
      bundle = await this.#secrets.get(secretName)
    } catch (error) {
      if (error instanceof HyperconnError) {
        this.#events.emit('secret:error', {
          secretName,
          code: error.code,
          transient: error instanceof SecretSourceError && error.transient,
        })
      }
      throw error
    }
    const secretKey = this.#options.secretKey(key.service)
    const connectionString = bundle.connectionString(secretKey)
    this.#assertOpen()
    const parsed = parseConnectionString(connectionString)
    const config: PoolConfig = { ...this.#options.pool }
    for (const [name, value] of Object.entries(parsed)) {
      if (value === undefined || value === null || name === 'password') continue
      ;(config as Record<string, unknown>)[name] = name === 'port' ? Number(value) : value
    }
    config.application_name ??= `hyperconn:${key.service}`
    // Asked on every new physical connection (always after `entry` below exists): uses the cached secret,
    // even stale, so a slow or failing source never delays a warm tenant, and refreshes it once expired.
    config.password = () => {
      const cached = this.#secrets.peek(secretName)
      if (cached !== undefined) this.#applySecret(entry, cached)
      if (!this.#secrets.isFresh(secretName)) this.#refreshSecret(entry)
      return Promise.resolve(this.#passwords.get(entry) ?? '')
    }
    const pool = new TenantPool(key, config, () => this.#acquire(key).then((lease) => lease.client))
    const entry: PoolEntry = {
      key,
      pool,
      resolved: Promise.resolve(pool),
      redactions: credentialsOf(connectionString, parsed.password),
      lastUsedAt: this.#options.clock.now(),
      lastUse: 0,
      pendingLeases: 0,
      checkedOut: new Set(),
      retired: false,
      ended: undefined,
      onMaybeIdle: undefined,
      endReported: false,
      secretName,
      secretKey,
      fingerprint: bundle.fingerprint,
      target: targetOf(parsed),
    }
    this.#passwords.set(entry, parsed.password ?? '')
    this.#watch(entry)
    return entry
  }

  /** Error listeners on the pool and every client: a dropped connection is reported, never a crash. */
  #watch(entry: PoolEntry): void {
    const { pool, key } = entry
    const report = (error: Error, phase: 'idle' | 'checked-out'): void => {
      this.#connectionErrors++
      const sqlState = sqlStateOf(error)
      const message = redactText(error.message, entry.redactions)
      this.#events.emit('connection:error', { service: key.service, orgId: key.orgId, phase, message, sqlState })
      this.#options.logger.warn({ service: key.service, orgId: key.orgId, phase, sqlState, err: message }, 'hyperconn: connection error')
    }
    pool.on('error', (error) => report(error, 'idle'))
    pool.on('connect', (client) => {
      client.on('error', (error: Error) => {
        // Idle clients are reported through the pool's own 'error' event above.
        if (entry.checkedOut.has(client)) report(error, 'checked-out')
      })
    })
    pool.on('acquire', (client) => {
      entry.checkedOut.add(client)
    })
    pool.on('release', (_error, client) => {
      entry.checkedOut.delete(client)
      this.#pools.touch(entry)
      entry.onMaybeIdle?.()
    })
    pool.on('remove', () => entry.onMaybeIdle?.())
  }

  #connectionError(entry: PoolEntry, error: unknown): unknown {
    if (error instanceof HyperconnError) return error
    const original = error instanceof Error ? error : new Error(String(error))
    const sqlState = sqlStateOf(original)
    const message = redactText(original.message, entry.redactions)
    const cause = new Error(message)
    if (sqlState) (cause as Error & { code?: string }).code = sqlState
    return new ConnectionError(
      `Could not connect to PostgreSQL for service "${entry.key.service}", org "${entry.key.orgId}": ${message}`,
      sqlState,
      { cause },
    )
  }

  /**
   * Query errors keep their class, code and fields (users branch on them); only text that contains a
   * credential of this tenant (current, or of a pool still draining) is masked, in place.
   */
  #redactQueryError(key: TenantKey, error: unknown): unknown {
    if (!(error instanceof Error) || error instanceof HyperconnError) return error
    const redactions: string[] = [...(this.#pools.find(key.service, key.orgId)?.redactions ?? [])]
    for (const entry of this.#pools.retiring()) {
      if (entry.key.service === key.service && entry.key.orgId === key.orgId) redactions.push(...entry.redactions)
    }
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
}

// pg DatabaseError fields that may echo query text or values
const REDACTED_FIELDS = ['message', 'detail', 'hint', 'where', 'internalQuery'] as const

/** What must never appear in output: the whole URL and its password (raw and decoded). */
function credentialsOf(connectionString: string, password: string | null | undefined): string[] {
  const out = [connectionString]
  if (password) out.push(password)
  return out
}

function targetOf(parsed: {
  host?: string | null | undefined
  port?: string | null | undefined
  database?: string | null | undefined
  user?: string | null | undefined
}): string {
  return `${parsed.host ?? ''}:${parsed.port ?? ''}/${parsed.database ?? ''}@${parsed.user ?? ''}`
}

function describeError(error: unknown): string {
  return redactText(error instanceof Error ? `${error.name}: ${error.message}` : String(error))
}

/** Create a registry. Options are validated here; a bad option throws `InvalidOptionsError`. */
export function createRegistry(options: RegistryOptions): Registry {
  return new Registry(options)
}
