import type { QueryConfig, QueryResult } from 'pg'
import type { TenantConnection } from '@hyperconn/core'
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

/**
 * What knex's pg dialect gets from `acquireConnection()`: a stand-in for a `pg.Client` built on a core
 * `TenantConnection`. knex calls `query(config, callback)` in callback form (`_query`), and reads or
 * writes the `__knex*` markers below on every connection.
 */
export class KnexConnection {
  /** Shown in knex's query events and debug output; the backend pid identifies the physical connection. */
  readonly __knexUid: string
  /** Set by knex's own transactions (not used here) and, for a transaction's queries, by this adapter. */
  __knexTxId?: string
  /** Set by knex when a query timed out without cancel: the connection must not be reused. */
  __knex__disposed?: unknown
  readonly #connection: TenantConnection
  #released = false

  constructor(connection: TenantConnection, txid: string | undefined) {
    this.#connection = connection
    this.__knexUid = `hyperconn_pid${connection.processID ?? '?'}`
    if (txid !== undefined) this.__knexTxId = txid
  }

  /** Used by knex's `cancelQuery`. */
  get processID(): number | undefined {
    return this.#connection.processID
  }

  query(config: string | QueryConfig, values?: unknown[] | QueryCallback, callback?: QueryCallback): Promise<QueryResult> | undefined {
    if (isSubmittable(config)) throw streamingUnsupported()
    const cb = typeof values === 'function' ? values : callback
    // QueryConfig goes through untouched: knex merges `.options({ rowMode, types, ... })` into it.
    const result = this.#connection.query(config, Array.isArray(values) ? values : undefined)
    if (cb === undefined) return result
    result.then(
      (response) => cb(null, response),
      (error: Error) => cb(error),
    ).catch(rethrowLater)
    return undefined
  }

  /** Called from the client's `releaseConnection`; idempotent (knex's stream runner may release twice). */
  release(): void {
    if (this.#released) return
    this.#released = true
    const disposed = this.__knex__disposed
    // A query that timed out may still run on the client: have the pool destroy it rather than reuse it.
    this.#connection.release(disposed instanceof Error ? disposed : undefined)
  }
}
