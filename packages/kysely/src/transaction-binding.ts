import { bindTransaction, TransactionClosedError } from '@hyperconn/core'
import type { Tenant, TransactionBinding } from '@hyperconn/core'
import type { ConnectionProvider, DatabaseConnection } from 'kysely'

/**
 * Core's binding to the transaction whose callback is being entered. The adapter only asks for
 * 'required' and 'nested', which always run the callback inside a transaction.
 */
export function bindCurrent(tenant: Tenant): TransactionBinding {
  const binding = bindTransaction(tenant)
  if (binding === undefined) {
    // Only when the transaction being joined ended before its callback could start.
    throw new TransactionClosedError(
      `the transaction for service "${tenant.service}", org "${tenant.orgId}" ended before the db.transaction().execute() callback started`,
    )
  }
  return binding
}

/**
 * Core's rule for a transaction object, as a value: the error to reject with (TransactionClosedError,
 * TransactionPropagationError, or a broken connection's error), or undefined when it may run here.
 */
function refusal(binding: TransactionBinding): Error | undefined {
  try {
    binding.assertCurrent()
    return undefined
  } catch (error) {
    return error as Error
  }
}

/**
 * The connection provider of a `trx`: checks core's binding to the trx's transaction before each query,
 * then takes the connection the current async context has (the innermost savepoint scope of that
 * transaction). Outside it nothing is acquired: core's rule rejects first (TransactionClosedError once
 * the transaction ended, TransactionPropagationError where the context is not inside it).
 */
export class BoundConnectionProvider implements ConnectionProvider {
  readonly #binding: TransactionBinding
  readonly #inner: ConnectionProvider

  constructor(binding: TransactionBinding, inner: ConnectionProvider) {
    this.#binding = binding
    this.#inner = inner
  }

  provideConnection<T>(consumer: (connection: DatabaseConnection) => Promise<T>): Promise<T> {
    const refused = refusal(this.#binding)
    return refused === undefined ? this.#inner.provideConnection(consumer) : Promise.reject(refused)
  }
}
