import type { Knex } from 'knex'
import type { Propagation, Tenant } from '@hyperconn/core'
import { adapterTransactionOptions } from '@hyperconn/core/adapter'
import { bindKnexTransaction, KnexTransactionHandle } from './knex-client.js'
import { externalConnectionUnsupported, transactionProviderUnsupported } from './knex-errors.js'

declare module 'knex' {
  // eslint-disable-next-line @typescript-eslint/no-namespace -- augmenting knex's own namespace
  namespace Knex {
    interface TransactionConfig {
      /**
       * @hyperconn/knex: core's propagation for this transaction (plain knex ignores it). Default
       * 'required' for `db.transaction`, 'nested' (savepoint) for `trx.transaction`.
       */
      propagation?: Propagation
    }
  }
}

/**
 * knex's transaction config plus core's `propagation` (added to `Knex.TransactionConfig` above). Defaults:
 * 'required' for `db.transaction` (join the active transaction of this tenant, else BEGIN) and 'nested'
 * for `trx.transaction` (SAVEPOINT).
 */
export type KnexTransactionConfig = Knex.TransactionConfig

/** The callback of `db.transaction(fn)`: it gets the transaction's knex (`trx`) and runs in core's transaction context. */
export type KnexTransactionScope<T> = (trx: Knex.Transaction) => Promise<T> | void

/** Builds the knex instance a transaction callback receives (see knex-adapter.ts). */
export type TransactionKnexFactory = (handle: KnexTransactionHandle, parent: Knex) => Knex

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function noop(): void {}

/**
 * `trx.commit(value)` / `trx.rollback(error)`: knex ends a transaction as soon as one is called, even
 * while its callback still runs. Here the scope ends when the callback settles, so each call settles
 * the scope early instead: the transaction promise settles, core COMMITs or ROLLBACKs, and the trx
 * refuses further queries. The promises they return resolve once the transaction has ended.
 */
class TransactionControl<T> {
  readonly signal: Promise<T>
  readonly ended: Promise<void>
  #resolve!: (value: T) => void
  #reject!: (reason: unknown) => void
  #endedResolve!: () => void
  #rollback: { readonly reason: unknown; readonly error: unknown; readonly withError: boolean } | undefined
  #settled = false

  constructor() {
    this.signal = new Promise<T>((resolve, reject) => {
      this.#resolve = resolve
      this.#reject = reject
    })
    // Nobody may be listening (the callback threw first); an unobserved rollback is no crash.
    this.signal.catch(noop)
    this.ended = new Promise<void>((resolve) => {
      this.#endedResolve = resolve
    })
  }

  commit(value: T): Promise<void> {
    if (!this.#settled) {
      this.#settled = true
      this.#resolve(value)
    }
    return this.ended
  }

  rollback(error: unknown): Promise<void> {
    if (!this.#settled) {
      this.#settled = true
      // Given an error, the scope fails with it (core reports it as the cause if a joined scope rolls back).
      const reason = error ?? new Error('Transaction rolled back with trx.rollback()')
      this.#rollback = { reason, error, withError: error !== undefined }
      this.#reject(reason)
    }
    return this.ended
  }

  markEnded(): void {
    this.#endedResolve()
  }

  /** The transaction promise's rejection: a rollback() without an error resolves, as in knex. */
  unwrap(reason: unknown, doNotRejectOnRollback: boolean): undefined {
    const rollback = this.#rollback
    if (rollback === undefined || reason !== rollback.reason) throw reason
    if (rollback.withError) throw rollback.error
    if (doNotRejectOnRollback) return undefined
    throw new Error('Transaction rejected with non-error: undefined')
  }
}

function isThenable<T>(value: unknown): value is PromiseLike<T> {
  return (typeof value === 'object' || typeof value === 'function') && value !== null && typeof (value as { then?: unknown }).then === 'function'
}

/** The callback's promise or commit()/rollback(), whichever settles first. A non-thenable result waits for them (knex's callback style). */
function settle<T>(result: unknown, control: TransactionControl<T>): Promise<T> {
  if (!isThenable<T>(result)) return control.signal
  return new Promise<T>((resolve, reject) => {
    // then() right away, in this async context: a returned knex builder executes inside the transaction.
    result.then(resolve, reject)
    control.signal.then(resolve, reject)
  })
}

/**
 * `db.transaction(fn, config)` and `trx.transaction(fn, config)`: knex's transaction API on top of
 * `tenant.transaction`. Propagation, nesting and the SQL (BEGIN, SAVEPOINT, COMMIT) are core's.
 */
export function runKnexTransaction<T>(
  tenant: Tenant,
  makeTransactionKnex: TransactionKnexFactory,
  owner: Knex,
  parent: KnexTransactionHandle | undefined,
  scope: unknown,
  config: unknown,
): Promise<T | undefined> {
  // knex overloads: transaction(config), transaction(null, config), transaction() return a transaction
  // object to commit by hand. That cannot join an async scope, so it is refused.
  if (typeof scope !== 'function') throw transactionProviderUnsupported()
  if (config !== undefined && config !== null && !isPlainObject(config)) {
    throw new TypeError('db.transaction(fn, config): config must be an object.')
  }
  // Rejects rather than throws: knex callers only ever handle the promise for these. Outside its own
  // transaction, 'nested' would BEGIN (or nest in) another one: core's rule refuses first.
  const refused = parent?.refusal()
  if (refused !== undefined) return Promise.reject(refused)
  const knexConfig = (config ?? undefined) as KnexTransactionConfig | undefined
  if (knexConfig?.connection !== undefined && knexConfig.connection !== null) throw externalConnectionUnsupported()
  // knex's config already spells isolationLevel, readOnly and (added above) propagation as core does.
  const options = adapterTransactionOptions(knexConfig ?? {}, parent === undefined ? 'db' : 'transaction')
  const container = scope as KnexTransactionScope<T>
  const control = new TransactionControl<T>()
  // Filled in below; core may call `run` synchronously (nothing to BEGIN), before the promise exists.
  const execution: { promise?: Promise<T | undefined> } = {}

  const run = async (): Promise<T> => {
    // Bound when the callback is entered: to the transaction just begun, joined or nested in.
    const handle = new KnexTransactionHandle(tenant, bindKnexTransaction(tenant), parent)
    try {
      const trx = decorateTransaction(makeTransactionKnex(handle, owner), handle, control, tenant, makeTransactionKnex, owner)
      Object.defineProperty(trx, 'executionPromise', { get: () => execution.promise, configurable: true })
      return await settle(container(trx), control)
    } finally {
      handle.settle()
    }
  }

  const settled: Promise<T | undefined> = tenant.transaction(run, options).then(
    (value) => value,
    (reason: unknown) => control.unwrap(reason, knexConfig?.doNotRejectOnRollback !== false),
  )
  execution.promise = settled
  settled.then(() => control.markEnded(), () => control.markEnded())
  return settled
}

function decorateTransaction<T>(
  knex: Knex,
  handle: KnexTransactionHandle,
  control: TransactionControl<T>,
  tenant: Tenant,
  makeTransactionKnex: TransactionKnexFactory,
  owner: Knex,
): Knex.Transaction {
  const trx = knex as Knex.Transaction
  trx.isTransaction = true
  trx.userParams = owner.userParams
  if (owner.isTransaction === true) trx.parentTransaction = owner as Knex.Transaction
  // Arrow functions: knex code passes them around unbound (`.then(trx.commit).catch(trx.rollback)`).
  trx.commit = ((value?: T) => {
    const ended = control.commit(value as T)
    handle.end()
    return ended
  }) as unknown as Knex.Transaction['commit']
  trx.rollback = ((error?: unknown) => {
    const ended = control.rollback(error)
    handle.end()
    return ended
  }) as unknown as Knex.Transaction['rollback']
  trx.isCompleted = () => handle.completed
  const context = (trx as unknown as { context: Record<string, unknown> }).context
  context.transaction = (scope?: unknown, config?: unknown) =>
    runKnexTransaction(tenant, makeTransactionKnex, trx, handle, scope, config)
  trx.savepoint = ((scope: unknown, config?: unknown) =>
    runKnexTransaction(tenant, makeTransactionKnex, trx, handle, scope, config)) as Knex.Transaction['savepoint']
  context.transactionProvider = () => {
    throw transactionProviderUnsupported()
  }
  context.withUserParams = () => {
    throw new Error('Cannot set user params on a transaction - it can only inherit params from main knex instance')
  }
  return trx
}
