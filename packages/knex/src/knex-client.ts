import type { Knex } from 'knex'
import { currentTransactionInfo, isInTransaction, TransactionClosedError, TransactionPropagationError } from '@hyperconn/core'
import type { Tenant, TenantConnection } from '@hyperconn/core'
import { KnexConnection } from './knex-connection.js'
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
  readonly transaction?: TransactionBinding
  /** The client of the knex instance the transaction was started from; its listeners see the trx's events. */
  readonly parent?: KnexPgClient
}

export type TenantKnexConfig = Knex.Config & { [CLIENT_BINDING]: ClientBinding }

let transactionCounter = 0

/**
 * What ties a knex transaction object (`trx`) to its core transaction scope. Like knex's own
 * `makeTxClient`, a trx stays bound to its transaction: once the callback has ended, or after
 * `trx.commit()` / `trx.rollback()`, its queries reject with TransactionClosedError and never touch
 * a connection. Created inside the scope's async context.
 */
export class TransactionBinding {
  readonly txid = `hyperconn_trx${++transactionCounter}`
  readonly parent: TransactionBinding | undefined
  readonly #tenant: Tenant
  // The connection handle of the scope the trx was created in; undefined when the propagation ran the
  // callback without a transaction ('supports' or 'not_supported' with none active, 'never').
  readonly #bound: TenantConnection | undefined
  // Which transaction (backend pid) and which savepoint depth that scope is.
  readonly #processID: number | undefined
  readonly #depth: number
  #completed = false

  constructor(tenant: Tenant, bound: TenantConnection | undefined, parent: TransactionBinding | undefined) {
    this.#tenant = tenant
    this.#bound = bound
    this.parent = parent
    const info = bound === undefined ? undefined : currentTransactionInfo(tenant)
    this.#processID = info?.processID
    this.#depth = info?.depth ?? 0
  }

  /** True once this trx, or a trx it is nested in, has ended. */
  get completed(): boolean {
    return this.#completed || (this.parent?.completed ?? false)
  }

  /** The callback has ended or commit()/rollback() was called: later queries are refused. Idempotent. */
  complete(): void {
    if (this.#completed) return
    this.#completed = true
    this.#bound?.release()
  }

  closedError(): TransactionClosedError {
    return new TransactionClosedError(`the knex transaction ${this.txid} has already ended (commit, rollback or its callback returned)`)
  }

  /**
   * `trx.transaction()` opens its savepoint through the async context, so it must be called where that
   * context is inside this trx's scope: anywhere else core would start an unrelated transaction.
   */
  nestingError(): Error | undefined {
    if (this.completed) return this.closedError()
    if (this.#bound !== undefined && !this.#contextIsWithin()) {
      return new TransactionPropagationError(
        `trx.transaction() of the knex transaction ${this.txid} was called outside its callback's async context, ` +
          'where it cannot open a savepoint in that transaction. Call it inside the callback (or code it awaits).',
      )
    }
    return undefined
  }

  /**
   * A connection for one trx query. When the async context is inside this trx's scope or a savepoint
   * below it, the query follows the context, so an outer trx used inside a nested callback runs in the
   * savepoint (as on knex's single connection) instead of waiting for it. Anywhere else (an event
   * listener in a foreign context, a `requires_new` transaction, a trx leaked to another request) it
   * runs in the trx's own scope, never in autocommit or in another transaction.
   */
  async connect(): Promise<KnexConnection> {
    if (this.completed) throw this.closedError()
    const bound = this.#bound
    if (bound === undefined || this.#contextIsWithin()) {
      return new KnexConnection(await this.#tenant.acquire(), true, this.txid)
    }
    return new KnexConnection(bound, false, this.txid)
  }

  // Savepoints of one transaction form a stack, so an active scope of the same transaction (same
  // backend pid) that is at least as deep as ours is ours or one nested in it.
  #contextIsWithin(): boolean {
    if (this.#processID === undefined || !isInTransaction(this.#tenant)) return false
    const info = currentTransactionInfo(this.#tenant)
    return info !== undefined && info.processID === this.#processID && info.depth >= this.#depth
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
  readonly #transaction: TransactionBinding | undefined

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
    // Inside a transaction of this tenant this is the transaction's connection; otherwise a pooled one.
    return new KnexConnection(await this.#tenant.acquire(), true, undefined)
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
    await tenant.transaction(() => tenant.query('SELECT pg_cancel_backend($1)', [pid]), { propagation: 'not_supported' })
  }
}
