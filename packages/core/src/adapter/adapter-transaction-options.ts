import type { IsolationLevel, Propagation, TransactionOptions } from '../tenant-types.js'

/** An ORM's transaction settings once its adapter has parsed them. */
export interface AdapterTransactionSettings {
  /** Any ORM spelling; core's runner validates it (so 'snapshot' rejects like every transaction error). */
  readonly isolationLevel?: string | undefined
  readonly readOnly?: boolean | undefined
  /** Replaces the default below, for an ORM whose config carries core's propagation (knex). */
  readonly propagation?: Propagation | undefined
}

/**
 * Core's options for an ORM's `transaction()` call. On the database it defaults to 'required' (join the
 * context's active transaction, else BEGIN); on a transaction object (`tx`, `trx`) to 'nested'
 * (SAVEPOINT), as the ORMs' own nested calls do.
 */
export function adapterTransactionOptions(
  settings: AdapterTransactionSettings,
  calledOn: 'db' | 'transaction',
): TransactionOptions {
  const options: TransactionOptions = { propagation: settings.propagation ?? (calledOn === 'db' ? 'required' : 'nested') }
  if (settings.isolationLevel !== undefined) options.isolationLevel = settings.isolationLevel as IsolationLevel
  // Left out when not given: readOnly false would refuse to join an active read-only transaction.
  if (settings.readOnly !== undefined) options.readOnly = settings.readOnly
  return options
}
