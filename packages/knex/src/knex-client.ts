import type { Knex } from 'knex'
import { currentTransactionInfo, TransactionClosedError } from '@hyperconn/core'
import { bindTransaction } from '@hyperconn/core/adapter'
import type { Tenant, TransactionBinding } from '@hyperconn/core'
import { isKnownRead, KnexConnection } from './knex-connection.js'
import {
  nativeTransactionUnsupported,
  rawConnectionUnsupported,
  streamingUnsupported,
} from './knex-errors.js'
import { ClientPG } from './knex-internals.js'
import type { KnexPgClient, KnexRunner } from './knex-internals.js'

/** Config key under which the adapter hands a client its tenant (knex passes the config to the constructor). */
export const CLIENT_BINDING: unique symbol = Symbol('@hyperconn/knex/client-binding')

export interface ClientBinding {
  readonly tenant: Tenant
  /** Only for a transaction's client (`trx.client`). */
  readonly transaction?: KnexTransactionHandle
  /** The client of the knex instance the transaction was started from; its listeners see the trx's events. */
  readonly parent?: KnexPgClient
}

export type TenantKnexConfig = Knex.Config & { [CLIENT_BINDING]: ClientBinding }

let transactionCounter = 0

/**
 * Core's binding to the transaction whose callback is being entered, or undefined when the propagation
 * ran the callback without one ('supports', 'not_supported' or 'never' with none active): that trx
 * follows the async context like getDb(orgId).
 */
export function bindKnexTransaction(tenant: Tenant): TransactionBinding | undefined {
  const binding = bindTransaction(tenant)
  if (binding === undefined && currentTransactionInfo(tenant) !== undefined) {
    // Only when the transaction being joined ended before its callback could start.
    throw new TransactionClosedError(
      `the transaction for service "${tenant.service}", org "${tenant.orgId}" ended before the db.transaction callback started`,
    )
  }
  return binding
}

/**
 * What a knex transaction object (`trx`) carries: a knex transaction id, core's `TransactionBinding` to
 * its transaction, checked before each query and before `trx.transaction()`, and knex's explicit end:
 * after `trx.commit()` / `trx.rollback()` (on it or on a trx it is nested in) it is refused with
 * TransactionClosedError, as in knex, even while the transaction is still being committed.
 */
export class KnexTransactionHandle {
  readonly txid = `hyperconn_trx${++transactionCounter}`
  readonly parent: KnexTransactionHandle | undefined
  readonly #tenant: Tenant
  readonly #binding: TransactionBinding | undefined
  #ended = false
  #settled = false

  constructor(tenant: Tenant, binding: TransactionBinding | undefined, parent: KnexTransactionHandle | undefined) {
    this.#tenant = tenant
    this.#binding = binding
    this.parent = parent
  }

  /** `trx.isCompleted()`: commit()/rollback() was called on it or a trx it is nested in, or its callback settled. */
  get completed(): boolean {
    return this.#settled || this.#endedByKnex()
  }

  /** `trx.commit()` / `trx.rollback()`: later queries are refused. Idempotent. */
  end(): void {
    this.#ended = true
  }

  /** The callback settled (only informs `isCompleted()`; whether the trx may still run is core's rule). */
  settle(): void {
    this.#settled = true
  }

  closedError(): TransactionClosedError {
    return new TransactionClosedError(`the knex transaction ${this.txid} has already ended (trx.commit() or trx.rollback() was called)`)
  }

  /** Why this trx may not run here, or undefined: knex's explicit end, then core's binding rule. */
  refusal(): Error | undefined {
    if (this.#endedByKnex()) return this.closedError()
    return this.#binding?.refusal()
  }

  /** A connection for one trx query: the current async context's (the innermost scope of its transaction). */
  async connect(): Promise<KnexConnection> {
    const refused = this.refusal()
    if (refused !== undefined) throw refused
    return new KnexConnection(this.#tenant, this.txid, await this.#tenant.acquire())
  }

  #endedByKnex(): boolean {
    const parent = this.parent
    return this.#ended || (parent !== undefined && parent.#endedByKnex())
  }
}

/**
 * knex's PostgreSQL client, bound to one tenant of a registry (the `config.client` class knex
 * instantiates). Mirrors knex's `makeTxClient`: `acquireConnection()` hands out a connection from core
 * (the active transaction's, or a pooled one) and `releaseConnection()` gives exactly that one back.
 * knex's tarn pool is never created, and `destroy()` ends nothing: the registry owns every connection.
 */
export class TenantKnexClient extends ClientPG {
  readonly #tenant: Tenant
  readonly #transaction: KnexTransactionHandle | undefined

  constructor(config: TenantKnexConfig) {
    super(config)
    const binding = config[CLIENT_BINDING]
    // knex keeps a copy of the config on the client; the tenant handle needs no second home there.
    delete (this.config as Partial<TenantKnexConfig>)[CLIENT_BINDING]
    this.#tenant = binding.tenant
    this.#transaction = binding.transaction
    if (binding.transaction !== undefined) this.transacting = true
    const parent = binding.parent
    if (parent !== undefined) {
      // As makeTxClient: one config object with the parent's client. knex's migrator turns identifier and
      // response processing off on its instance (disableProcessing) for its own queries run through `trx`,
      // and back on (enableProcessing) around each migration, by mutating that config.
      this.config = parent.config
      // As knex's makeTxClient: the parent instance's listeners see the transaction's queries too.
      for (const event of ['start', 'query', 'query-error', 'query-response'] as const) {
        this.on(event, (...args: unknown[]) => parent.emit(event, ...args))
      }
    }
  }

  get tenant(): Tenant {
    return this.#tenant
  }

  /** Never a tarn pool: connections come from the registry (also covers `knex.initialize()`). */
  override initializePool(): void {}

  override acquireRawConnection(): Promise<never> {
    return Promise.reject(rawConnectionUnsupported())
  }

  override async acquireConnection(): Promise<KnexConnection> {
    const transaction = this.#transaction
    if (transaction !== undefined) return transaction.connect()
    // Lazy (see KnexConnection): known reads go out with { read: true }; the first other statement acquires,
    // inside a transaction of this tenant its connection, otherwise a pooled one of the primary.
    return new KnexConnection(this.#tenant, undefined)
  }

  /**
   * Every statement passes here (knex's `client.query`, before its query events). On a lazy connection a
   * known read (see isKnownRead) runs through the connection's read view; anything else acquires first,
   * so that its events carry the backend pid.
   */
  override async query(connection: unknown, obj: unknown): Promise<unknown> {
    if (connection instanceof KnexConnection && connection.lazy) {
      if (isKnownRead(obj)) return super.query(connection.forRead(), obj)
      await connection.acquire()
    }
    return super.query(connection, obj)
  }

  override releaseConnection(connection: unknown): Promise<void> {
    if (connection instanceof KnexConnection) connection.release()
    return Promise.resolve()
  }

  /** The registry owns the pools; destroying a knex instance has nothing to end and leaves it usable. */
  override destroy(callback?: (error?: unknown) => void): Promise<void> {
    if (typeof callback === 'function') callback()
    return Promise.resolve()
  }

  /** Backstop: knex's own transactions would BEGIN outside the shared context. db.transaction is routed to core. */
  override transaction(): never {
    throw nativeTransactionUnsupported()
  }

  /** `.stream()` / `.pipe()` fail before any connection is taken (see streamingUnsupported). */
  override runner(builder: unknown): KnexRunner {
    const runner = super.runner(builder)
    runner.stream = () => {
      throw streamingUnsupported()
    }
    runner.pipe = () => {
      throw streamingUnsupported()
    }
    return runner
  }

  override _stream(): never {
    throw streamingUnsupported()
  }

  /**
   * `.timeout(ms, { cancel: true })`: knex would open a raw connection; here the cancel runs on the
   * tenant's pool, outside any transaction of this context (its connection is busy with the query).
   */
  override async cancelQuery(connection?: unknown): Promise<void> {
    const pid = connection instanceof KnexConnection ? connection.processID : undefined
    if (pid === undefined) throw new Error('Cannot cancel the query: its backend process id is unknown.')
    const tenant = this.#tenant
    try {
      // A second connection of this tenant's pool: with pool.max 1 it waits for connectionTimeoutMillis.
      await tenant.transaction(() => tenant.query('SELECT pg_cancel_backend($1)', [pid]), { propagation: 'not_supported' })
    } catch (error) {
      // knex rewrites the message of the error it gets here (and adds sql/bindings to it): give it a wrapper,
      // so that the hyperconn error (ConnectionError, RegistryClosedError, ...) stays intact as its cause.
      throw new Error(`Cannot cancel the timed-out query (backend ${pid}).`, { cause: error })
    }
  }
}
