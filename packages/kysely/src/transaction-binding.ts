import type { Tenant } from '@hyperconn/core'
import { TransactionClosedError, TransactionPropagationError } from '@hyperconn/core'
import type { ConnectionProvider, DatabaseConnection } from 'kysely'
import { TenantDatabaseConnection } from './kysely-driver.js'

function outsideContext(): TransactionPropagationError {
  return new TransactionPropagationError(
    'A Kysely transaction object (trx) was used outside the async context of its transaction, where its queries would run ' +
      'on another connection (or in another transaction). Use trx only inside its db.transaction().execute() callback ' +
      'and code awaited from it; in other contexts use getDb(orgId), which follows the transaction of the context it runs in.',
  )
}

function ended(): TransactionClosedError {
  return new TransactionClosedError('its db.transaction().execute() callback has already returned')
}

/**
 * Ties a `trx` object to the transaction (or savepoint) its callback runs in. Queries still find their
 * connection through core's async context; this only refuses what Kysely users would not expect: a
 * `trx` used after its callback returned (TransactionClosedError, before any connection is touched),
 * or from a context where it would silently run on another connection.
 */
export class TransactionBinding implements ConnectionProvider {
  readonly #inner: ConnectionProvider
  readonly #processID: number | undefined
  #open = true

  private constructor(inner: ConnectionProvider, processID: number | undefined) {
    this.#inner = inner
    this.#processID = processID
  }

  /** Call inside the core transaction callback: remembers which backend the transaction runs on. */
  static async capture(tenant: Tenant, inner: ConnectionProvider): Promise<TransactionBinding> {
    const probe = await tenant.acquire()
    try {
      return new TransactionBinding(inner, probe.processID)
    } finally {
      probe.release()
    }
  }

  close(): void {
    this.#open = false
  }

  /**
   * For nested `trx.transaction()`: the current context must be inside this transaction, or core would
   * start an unrelated top-level transaction where the caller asked for a savepoint.
   */
  async assertCurrent(tenant: Tenant): Promise<void> {
    if (!this.#open) throw ended()
    const probe = await tenant.acquire()
    try {
      this.#assertSame(probe.inTransaction, probe.processID)
    } finally {
      probe.release()
    }
  }

  provideConnection<T>(consumer: (connection: DatabaseConnection) => Promise<T>): Promise<T> {
    // Checked when the query is issued, so work started inside the callback may still finish as core allows.
    if (!this.#open) return Promise.reject(ended())
    return this.#inner.provideConnection(async (connection) => {
      if (!(connection instanceof TenantDatabaseConnection)) throw outsideContext()
      this.#assertSame(connection.inTransaction, connection.processID)
      return consumer(connection)
    })
  }

  #assertSame(inTransaction: boolean, processID: number | undefined): void {
    if (!inTransaction) throw outsideContext()
    if (this.#processID !== undefined && processID !== undefined && processID !== this.#processID) throw outsideContext()
  }
}
