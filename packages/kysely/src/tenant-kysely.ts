import type { Tenant, TransactionBinding, TransactionOptions } from '@hyperconn/core'
import { UnsupportedError } from '@hyperconn/core'
import { adapterTransactionOptions, bindActiveTransaction } from '@hyperconn/core/adapter'
import { ConnectionBuilder, Kysely, Transaction, TransactionBuilder, validateTransactionSettings } from 'kysely'
import type {
  AccessMode,
  DrainOuterGeneric,
  IsolationLevel,
  KyselyPlugin,
  KyselyProps,
  QueryExecutor,
  TransactionSettings,
} from 'kysely'
import { BoundConnectionProvider } from './transaction-binding.js'

/** What every instance derived from one `getDb(orgId)` database shares. */
export interface TenantKyselyContext {
  readonly tenant: Tenant
  /** Props of the root instance; `executor` is the one whose connections follow the async context. */
  readonly props: KyselyProps
}

/** Kysely's transaction settings → core's options ('snapshot', Kysely's level for MSSQL, is core's to reject). */
function transactionOptions(settings: TransactionSettings, calledOn: 'db' | 'transaction'): TransactionOptions {
  validateTransactionSettings(settings)
  const { isolationLevel, accessMode } = settings
  const readOnly = accessMode === undefined ? undefined : accessMode === 'read only'
  return adapterTransactionOptions({ isolationLevel, readOnly }, calledOn)
}

function controlledTransaction(): UnsupportedError {
  return new UnsupportedError(
    'db.startTransaction() is not supported by @hyperconn/kysely: a controlled transaction has no callback, so there is ' +
      'no async context that Drizzle, Knex, tenant.query or getDb(orgId) could share it through. Use ' +
      'db.transaction().execute(async (trx) => ...) (nested trx.transaction().execute(...) runs in a savepoint), or ' +
      'registry.tenant(orgId).transaction(fn, options).',
  )
}

/**
 * `db.transaction()`: same builder API as Kysely's, but `execute` runs the callback in
 * `tenant.transaction()`, so every adapter and `tenant.query` in it share the transaction.
 */
class CoreTransactionBuilder<DB> extends TransactionBuilder<DB> {
  readonly #context: TenantKyselyContext
  readonly #executor: QueryExecutor
  /** Core's binding of the trx this builder came from (undefined for a db instance). */
  readonly #parent: TransactionBinding | undefined
  readonly #settings: TransactionSettings

  constructor(
    context: TenantKyselyContext,
    executor: QueryExecutor,
    parent: TransactionBinding | undefined,
    settings: TransactionSettings,
  ) {
    super({ ...context.props, executor, ...settings })
    this.#context = context
    this.#executor = executor
    this.#parent = parent
    this.#settings = settings
  }

  override setAccessMode(accessMode: AccessMode): TransactionBuilder<DB> {
    return this.#with({ ...this.#settings, accessMode })
  }

  override setIsolationLevel(isolationLevel: IsolationLevel): TransactionBuilder<DB> {
    return this.#with({ ...this.#settings, isolationLevel })
  }

  override async execute<T>(callback: (trx: Transaction<DB>) => Promise<T>): Promise<T> {
    const parent = this.#parent
    const options = transactionOptions(this.#settings, parent === undefined ? 'db' : 'transaction')
    const context = this.#context
    const { tenant } = context
    // Outside its own transaction, 'nested' would BEGIN (or nest in) another one: core's rule refuses first.
    parent?.assertCurrent()
    return tenant.transaction(() => {
      // Bound when the callback is entered: to the transaction just begun, joined or nested in.
      const binding = bindActiveTransaction(tenant)
      const provider = new BoundConnectionProvider(binding, context.props.executor)
      return callback(new TenantTransaction<DB>(context, this.#executor.withConnectionProvider(provider), binding))
    }, options)
  }

  #with(settings: TransactionSettings): CoreTransactionBuilder<DB> {
    return new CoreTransactionBuilder<DB>(this.#context, this.#executor, this.#parent, settings)
  }
}

/**
 * `db.connection().execute(fn)`: core's `tenant.connection(fn)`, so the connection Kysely pins for `fn` is
 * the one every adapter (and `tenant.query`) of this tenant uses inside it, and a transaction begun inside
 * runs on it too. `fn` gets a routed instance.
 */
class RoutedConnectionBuilder<DB> extends ConnectionBuilder<DB> {
  readonly #context: TenantKyselyContext

  constructor(context: TenantKyselyContext, executor: QueryExecutor) {
    super({ ...context.props, executor })
    this.#context = context
  }

  override execute<T>(callback: (db: Kysely<DB>) => Promise<T>): Promise<T> {
    return this.#context.tenant.connection(() =>
      super.execute((db) => callback(new TenantKysely<DB>(this.#context, db.getExecutor()))),
    )
  }
}

/**
 * The database `getDb(orgId)` returns, and every instance derived from it: Kysely's `withSchema`,
 * `withPlugin`, `withoutPlugins` and `withTables` build a plain `new Kysely(...)`, so they are
 * overridden to keep the transaction routing; only the executor of Kysely's result is reused.
 */
export class TenantKysely<DB> extends Kysely<DB> {
  readonly #context: TenantKyselyContext

  constructor(context: TenantKyselyContext, executor: QueryExecutor) {
    super({ ...context.props, executor })
    this.#context = context
  }

  override transaction(): TransactionBuilder<DB> {
    return new CoreTransactionBuilder<DB>(this.#context, this.getExecutor(), undefined, {})
  }

  override startTransaction(): never {
    throw controlledTransaction()
  }

  override connection(): ConnectionBuilder<DB> {
    return new RoutedConnectionBuilder<DB>(this.#context, this.getExecutor())
  }

  override withPlugin(plugin: KyselyPlugin): Kysely<DB> {
    return this.#derive(super.withPlugin(plugin))
  }

  override withoutPlugins(): Kysely<DB> {
    return this.#derive(super.withoutPlugins())
  }

  override withSchema(schema: string): Kysely<DB> {
    return this.#derive(super.withSchema(schema))
  }

  override withTables<T extends Record<string, Record<string, any>>>(): Kysely<DrainOuterGeneric<DB & T>> {
    return this.#derive(super.withTables<T>())
  }

  /** The registry owns the pools; an instance has nothing to release, and stays usable (getDb caches it). */
  override async destroy(): Promise<void> {}

  #derive<D>(plain: Kysely<D>): Kysely<D> {
    return new TenantKysely<D>(this.#context, plain.getExecutor())
  }
}

/**
 * The `trx` of `db.transaction().execute(fn)`: a Kysely `Transaction` bound to its transaction by core's
 * `TransactionBinding` (checked before each query by its connection provider); inside that transaction
 * its queries find their scope through the async context, like every other adapter's.
 * `trx.transaction()` opens a savepoint; derived instances keep the binding.
 */
export class TenantTransaction<DB> extends Transaction<DB> {
  readonly #context: TenantKyselyContext
  readonly #binding: TransactionBinding

  constructor(context: TenantKyselyContext, executor: QueryExecutor, binding: TransactionBinding) {
    super({ ...context.props, executor })
    this.#context = context
    this.#binding = binding
  }

  override transaction(): TransactionBuilder<DB> {
    return new CoreTransactionBuilder<DB>(this.#context, this.getExecutor(), this.#binding, {})
  }

  override startTransaction(): never {
    throw controlledTransaction()
  }

  override withPlugin(plugin: KyselyPlugin): Transaction<DB> {
    return this.#derive(super.withPlugin(plugin))
  }

  override withoutPlugins(): Transaction<DB> {
    return this.#derive(super.withoutPlugins())
  }

  override withSchema(schema: string): Transaction<DB> {
    return this.#derive(super.withSchema(schema))
  }

  override withTables<T extends Record<string, Record<string, any>>>(): Transaction<DrainOuterGeneric<DB & T>> {
    return this.#derive(super.withTables<T>())
  }

  #derive<D>(plain: Transaction<D>): Transaction<D> {
    return new TenantTransaction<D>(this.#context, plain.getExecutor(), this.#binding)
  }
}
