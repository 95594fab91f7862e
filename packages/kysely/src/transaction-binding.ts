import type { TransactionBinding } from '@hyperconn/core'
import type { ConnectionProvider, DatabaseConnection } from 'kysely'



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
    const refused = this.#binding.refusal()
    return refused === undefined ? this.#inner.provideConnection(consumer) : Promise.reject(refused)
  }
}
