import { inspect } from 'node:util'
import pg from 'pg'
import type { PoolClient, QueryConfig, QueryResult } from 'pg'
import { TransactionClosedError } from '../hyperconn-error.js'
import type { PoolLease, TenantKey } from '../tenant-types.js'

type Callback = (err: Error | undefined, result: QueryResult | undefined) => void
type ConnectCallback = (err: Error | undefined, client: PoolClient | undefined, done: (release?: unknown) => void) => void

/** @internal What a `TenantPool` forwards to the registry. */
export interface TenantPoolRoutes {
  /** One autocommit statement on a leased connection (like `pg.Pool#query`: never inside a transaction). */
  query(text: string | QueryConfig, values?: unknown[]): Promise<QueryResult>
  /** A lease from the lease point (budget, settings, rotation retry). */
  lease(): Promise<PoolLease>
  /** Connections this tenant holds and waits for now. */
  usage(): { checkedOut: number; waiting: number }
}

const ALREADY_RELEASED = 'Release called on client which has already been released to the pool.'

/**
 * What `registry.getPool(service, orgId)` returns: a `pg.Pool` bound to one tenant, owning no
 * connections. `query` and `connect` check a connection out through the lease point, with the
 * tenant's settings applied, outside any transaction of the async context (as `pg.Pool` does). `end()` is a no-op: the registry owns every connection.
 * `totalCount`/`waitingCount` count this tenant's checked-out connections and waiting callers.
 */
export class TenantPool extends pg.Pool {
  /** The tenant this pool is bound to. */
  readonly tenant: TenantKey
  readonly #routes: TenantPoolRoutes

  /** @internal Created by the registry only (`registry.getPool`). */
  constructor(tenant: TenantKey, routes: TenantPoolRoutes) {
    super({ max: 1 })
    this.tenant = tenant
    this.#routes = routes
  }

  /**
   * A connection of this tenant, with its settings applied; `release()` it (once) when done, or
   * `await using client = await pool.connect()`.
   */
  override connect(): Promise<PoolClient & AsyncDisposable>
  /** `connect()` in pg's callback style: `done()` releases the client. */
  override connect(
    callback: (err: Error | undefined, client: PoolClient | undefined, done: (release?: unknown) => void) => void,
  ): void
  override connect(callback?: ConnectCallback): Promise<PoolClient & AsyncDisposable> | void {
    const client = this.#connect()
    if (callback === undefined) return client
    client.then(
      (c) => callback(undefined, c, (err?: unknown) => c.release(err as Error | boolean | undefined)),
      (err: Error) => callback(err, undefined, () => {}),
    )
  }

  /** @internal one autocommit statement through the lease point (see `query` below). */
  runQuery(text: string | QueryConfig, values: unknown[] | undefined): Promise<QueryResult> {
    return this.#routes.query(text, values)
  }

  /** Ending is the registry's job (`registry.evict()` / `registry.close()`); this is deliberately a no-op. */
  override end(): Promise<void>
  override end(callback: () => void): void
  override end(callback?: () => void): Promise<void> | void {
    if (callback) {
      queueMicrotask(callback)
      return
    }
    return Promise.resolve()
  }

  async #connect(): Promise<PoolClient & AsyncDisposable> {
    const lease = await this.#routes.lease()
    try {
      await lease.prepare()
    } catch (error) {
      lease.release(true)
      throw error
    }
    return checkedOutClient(lease)
  }

  /** The tenant and its checked-out connections and waiting callers now. */
  toJSON(): { service: string; orgId: string; checkedOut: number; waiting: number } {
    return { service: this.tenant.service, orgId: this.tenant.orgId, ...this.#routes.usage() }
  }

  /** `util.inspect(pool)` (what a log line of it shows) prints `toJSON()`. */
  [inspect.custom](): string {
    return `TenantPool ${inspect(this.toJSON())}`
  }
}

/**
 * The physical connection as a `pg.PoolClient` for one checkout: a proxy that stops working at
 * `release()`, so a holder that kept it can never reach the connection once another tenant has it, and
 * that refuses queries with `ConnectionLeakError` once the lease point took it back as a leak.
 * What the holder ran on it cannot be seen, so the next checkout resets the connection.
 */
function checkedOutClient(lease: PoolLease): PoolClient & AsyncDisposable {
  const client = lease.client as PoolClient
  let released = false
  const refuse = (): never => {
    throw new TransactionClosedError('this client was released to the pool; check out another with pool.connect()')
  }
  // pg's query(text, values?, callback?): a callback gets the error, otherwise the promise rejects.
  const refuseRevoked = (error: Error) => (...args: unknown[]): Promise<never> | undefined => {
    const callback = args.find((a): a is (e: Error) => void => typeof a === 'function')
    if (callback === undefined) return Promise.reject(error)
    queueMicrotask(() => callback(error))
    return undefined
  }
  const release = (destroy?: Error | boolean): void => {
    if (released) throw new Error(ALREADY_RELEASED)
    released = true
    lease.forgetCarried()
    lease.release(destroy)
  }
  const dispose = (): Promise<void> => {
    if (!released) release()
    return Promise.resolve()
  }
  return new Proxy(client as PoolClient & AsyncDisposable, {
    get(target, property, receiver) {
      if (property === 'release') return release
      if (property === Symbol.asyncDispose) return dispose
      if (released && (property === 'query' || property === 'connect')) return refuse
      if (property === 'query') {
        const revoked = lease.revokedError
        if (revoked !== undefined) return refuseRevoked(revoked)
      }
      const value: unknown = Reflect.get(target, property, receiver)
      return value
    },
  })
}

// pg.Pool's query overloads (text or config, values, callback) keep their types: only the body is ours.
TenantPool.prototype.query = function query(this: TenantPool, ...args: unknown[]): unknown {
  const [first, second, third] = args
  const callback = [second, third].find((a): a is Callback => typeof a === 'function')
  const values = Array.isArray(second) ? (second as unknown[]) : undefined
  const result = this.runQuery(first as string | QueryConfig, values)
  if (callback === undefined) return result
  result.then(
    (r) => callback(undefined, r),
    (e: Error) => callback(e, undefined),
  )
  return undefined
} as pg.Pool['query']

// pg.Pool defines these as getters at runtime (typed as properties): this tenant's numbers, not a pool's.
Object.defineProperties(TenantPool.prototype, {
  totalCount: {
    get(this: TenantPool) {
      return this.toJSON().checkedOut
    },
  },
  idleCount: { get: () => 0 },
  waitingCount: {
    get(this: TenantPool) {
      return this.toJSON().waiting
    },
  },
})
