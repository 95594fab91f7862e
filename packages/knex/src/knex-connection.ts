import { isReadOnlySelectText, LazyConnection } from '@hyperconn/core/adapter'
import type { QueryConfig, QueryResult } from 'pg'
import type { Tenant, TenantConnection } from '@hyperconn/core'
import { streamingUnsupported } from './knex-errors.js'

type QueryCallback = (error: Error | null, result?: QueryResult) => void

// A throwing callback must surface like it does with pg (an uncaught exception), not vanish in a promise.
function rethrowLater(error: unknown): void {
  process.nextTick(() => {
    throw error
  })
}

function isSubmittable(config: unknown): boolean {
  return typeof config === 'object' && config !== null && typeof (config as { submit?: unknown }).submit === 'function'
}


// knex's query object `method` of builders that only read (raw SQL is 'raw', writes 'insert', 'update', ...).
const READ_METHODS: ReadonlySet<unknown> = new Set(['select', 'first', 'pluck'])

/**
 * Whether a knex query object (`builder.toSQL()`, as the client's `query` gets it) is known to only read: a
 * select / first / pluck whose SQL has no locking clause (isReadOnlySelectText of @hyperconn/core/adapter), and not `.timeout(ms, { cancel:
 * true })` (cancelling needs the backend pid of an acquired connection).
 */
export function isKnownRead(obj: unknown): boolean {
  if (typeof obj !== 'object' || obj === null) return false
  const { method, sql, cancelOnTimeout } = obj as { method?: unknown; sql?: unknown; cancelOnTimeout?: unknown }
  return READ_METHODS.has(method) && typeof sql === 'string' && cancelOnTimeout !== true && isReadOnlySelectText(sql)
}

/** What knex's `_query` needs of a connection (the view `forRead()` hands it). */
export interface KnexQueryTarget {
  readonly __knexUid: string
  readonly __knexTxId?: string | undefined
  query(config: string | QueryConfig, values?: unknown[] | QueryCallback, callback?: QueryCallback): Promise<QueryResult> | undefined
}

/**
 * What knex's pg dialect gets from `acquireConnection()`: a stand-in for a `pg.Client` built on a core
 * `TenantConnection`. knex calls `query(config, callback)` in callback form (`_query`), and reads or
 * writes the `__knex*` markers below on every connection.
 *
 * Outside a knex transaction the connection is lazy: the client sends known reads (see isKnownRead)
 * through `forRead()`, i.e. `tenant.query(…, { read: true })`, which core may route to a read replica, and
 * `tenant.acquire()` is only called for the first other statement; from then on every statement of this
 * connection runs on that handle, in order.
 */
export class KnexConnection implements KnexQueryTarget {
  /** Set by knex's own transactions (not used here) and, for a transaction's queries, by this adapter. */
  __knexTxId?: string
  /** Set by knex when a query timed out without cancel: the connection must not be reused. */
  __knex__disposed?: unknown
  readonly #tenant: Pick<Tenant, 'acquire' | 'query'>
  readonly #connection: LazyConnection

  /** `connection`: an already acquired handle (a transaction's); without it, acquired on demand. */
  constructor(tenant: Pick<Tenant, 'acquire' | 'query'>, txid: string | undefined, connection?: TenantConnection) {
    this.#tenant = tenant
    this.#connection = new LazyConnection(() => tenant.acquire(), connection)
    if (txid !== undefined) this.__knexTxId = txid
  }

  /**
   * Shown in knex's query events and debug output; the backend pid identifies the physical connection.
   * 'hyperconn_lazy' until a statement acquired one (reads sent with { read: true } have none).
   */
  get __knexUid(): string {
    const connection = this.#connection.current
    return connection === undefined ? 'hyperconn_lazy' : `hyperconn_pid${connection.processID ?? '?'}`
  }

  /** Used by knex's `cancelQuery`; undefined until a connection was acquired. */
  get processID(): number | undefined {
    return this.#connection.current?.processID
  }

  /** Nothing acquired or being acquired yet: a known read may still go out with { read: true }. */
  get lazy(): boolean {
    return !this.#connection.started
  }

  /** Acquires the handle if that has not happened yet (the client does it before a non-read's query events). */
  async acquire(): Promise<void> {
    await this.#connection.get()
  }

  /** This connection for one statement the client knows is a read (see isKnownRead). */
  forRead(): KnexQueryTarget {
    const uid = (): string => this.__knexUid
    const txid = (): string | undefined => this.__knexTxId
    return {
      get __knexUid() {
        return uid()
      },
      get __knexTxId() {
        return txid()
      },
      query: (config, values, callback) => this.#query(config, values, callback, true),
    }
  }

  query(config: string | QueryConfig, values?: unknown[] | QueryCallback, callback?: QueryCallback): Promise<QueryResult> | undefined {
    return this.#query(config, values, callback, false)
  }

  #query(
    config: string | QueryConfig,
    values: unknown[] | QueryCallback | undefined,
    callback: QueryCallback | undefined,
    read: boolean,
  ): Promise<QueryResult> | undefined {
    if (isSubmittable(config)) throw streamingUnsupported()
    const cb = typeof values === 'function' ? values : callback
    const params = Array.isArray(values) ? values : undefined
    // QueryConfig goes through untouched: knex merges `.options({ rowMode, types, ... })` into it.
    const connection = this.#connection.current
    const result =
      connection !== undefined
        ? connection.query(config, params)
        : read && !this.#connection.started
          ? this.#tenant.query(config, params, { read: true })
          : this.#connection.get().then((acquired) => acquired.query(config, params))
    if (cb === undefined) return result
    result.then(
      (response) => cb(null, response),
      (error: Error) => cb(error),
    ).catch(rethrowLater)
    return undefined
  }

  #releaseHandle(connection: TenantConnection): void {
    const disposed = this.__knex__disposed
    // A query that timed out may still run on the client: have the pool destroy it rather than reuse it.
    connection.release(disposed instanceof Error ? disposed : undefined)
  }

  /** Called from the client's `releaseConnection`; idempotent (knex's stream runner may release twice). */
  release(): void {
    this.#connection.release((connection) => this.#releaseHandle(connection))
  }
}
