import pg from 'pg'
import { createTenantHandle } from '../../src/transactions/tenant-handle.js'
import type { PoolLease, Tenant, TenantKey, TenantPoolAccess } from '../../src/tenant-types.js'

/**
 * A minimal `TenantPoolAccess` over real pg.Pools, one per (service, orgId), for transaction tests
 * that must not depend on the registry. Pools are created on first use from `configFor(key)`.
 */
export interface TestPoolAccessOptions {
  /** Replaces the identity redaction, e.g. to prove that errors pass through it. */
  redact?: (error: unknown) => unknown
  /** Runs after pool.connect() and before the lease is handed out (e.g. to kill the backend). */
  onAcquire?: (client: pg.PoolClient, key: TenantKey) => Promise<void> | void
}

export class TestPoolAccess implements TenantPoolAccess, AsyncDisposable {
  readonly #configFor: (key: TenantKey) => pg.PoolConfig
  readonly #options: TestPoolAccessOptions
  readonly #pools = new Map<string, Map<string, pg.Pool>>()
  /** Every error that went through redactError, for assertions. */
  readonly redacted: unknown[] = []
  /** Every client handed out, in order. */
  readonly clients: pg.PoolClient[] = []
  /** How each lease was released: undefined (returned) or the destroy reason. */
  readonly releases: (Error | boolean | undefined)[] = []
  /** Leases currently checked out (not yet released). */
  openLeases = 0

  constructor(configFor: (key: TenantKey) => pg.PoolConfig, options: TestPoolAccessOptions = {}) {
    this.#configFor = configFor
    this.#options = options
  }

  tenant(orgId: string, service = 'core'): Tenant {
    return createTenantHandle(this, { service, orgId })
  }

  poolFor(key: TenantKey): pg.Pool {
    let orgs = this.#pools.get(key.service)
    if (orgs === undefined) this.#pools.set(key.service, (orgs = new Map()))
    let pool = orgs.get(key.orgId)
    if (pool === undefined) {
      pool = new pg.Pool(this.#configFor(key))
      // Idle clients killed by DROP DATABASE ... WITH (FORCE) at the end of a file must not crash it.
      pool.on('error', () => {})
      // the TenantPoolAccess contract: every client keeps an 'error' listener for its whole life
      pool.on('connect', (client) => client.on('error', () => {}))
      orgs.set(key.orgId, pool)
    }
    return pool
  }

  async acquire(key: TenantKey): Promise<PoolLease> {
    const client = await this.poolFor(key).connect()
    await this.#options.onAcquire?.(client, key)
    this.clients.push(client)
    this.openLeases++
    let released = false
    const redact = (error: unknown): unknown => {
      this.redacted.push(error)
      return this.#options.redact === undefined ? error : this.#options.redact(error)
    }
    return {
      client,
      get processID() {
        return (client as unknown as { processID?: number }).processID
      },
      query: (config, values) => client.query(config, values),
      prepare: () => Promise.resolve(),
      forgetCarried: () => {},
      begin: async (sql) => {
        await client.query(sql)
      },
      redact,
      revokedError: undefined,
      release: (destroy?: Error | boolean) => {
        if (released) return
        released = true
        this.openLeases--
        this.releases.push(destroy)
        client.release(destroy instanceof Error ? destroy : destroy === true ? true : undefined)
      },
    }
  }

  pool(key: TenantKey): Promise<pg.Pool> {
    return Promise.resolve(this.poolFor(key))
  }

  /** Direct connections only: sessions are always supported. */
  assertSessions(): void {}

  assertOpen(): void {}

  schemaOf(): undefined {
    return undefined
  }

  async [Symbol.asyncDispose](): Promise<void> {
    const pools = [...this.#pools.values()].flatMap((orgs) => [...orgs.values()])
    this.#pools.clear()
    await Promise.all(pools.map((pool) => pool.end()))
  }
}

/** `{ totalCount, idleCount, waitingCount }` of a pool, for leak assertions. */
export function poolCounts(pool: pg.Pool): { total: number; idle: number; waiting: number } {
  return { total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }
}

/** A promise with its resolve function, for synchronising on events instead of sleeping. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void
  const promise = new Promise<T>((r) => {
    resolve = r
  })
  return { promise, resolve }
}

/** Backend pid and transaction id of the statement, as seen by PostgreSQL. */
export const WHERE_AM_I = 'SELECT pg_backend_pid() AS pid, txid_current()::text AS txid'
export interface WhereAmI {
  pid: number
  txid: string
}
