import type { QueryConfig, QueryResult, QueryResultRow } from 'pg'
import { TransactionClosedError } from '../hyperconn-error.js'
import { isStatementError } from '../pg-error.js'
import type { PoolLease, TenantKey } from '../tenant-types.js'
import { QueryQueue } from './query-queue.js'

type QueryInput = string | QueryConfig

function ended(key: TenantKey): TransactionClosedError {
  return new TransactionClosedError(
    `the pinned connection of service "${key.service}", org "${key.orgId}" was released when its tenant.connection() callback returned`,
  )
}

/**
 * `tenant.connection(fn)`: one leased connection pinned to `fn`'s async context, without BEGIN. The
 * tenant's settings are applied at session level when it is pinned, so a transaction begun in it (and
 * committed or rolled back) leaves them in place. Statements go through one queue; a transaction begun in
 * it holds that queue for its lifetime, as a savepoint holds its parent's, so a query of the pinned frame
 * outside the transaction waits instead of running inside it.
 */
export class PinnedConnection {
  readonly kind = 'pinned'
  readonly key: TenantKey
  readonly queue = new QueryQueue()
  readonly #lease: PoolLease
  #open = true
  #broken: Error | undefined

  private constructor(key: TenantKey, lease: PoolLease) {
    this.key = key
    this.#lease = lease
  }

  /** Leases a connection and applies the tenant's settings; a failure releases (destroys) it and rethrows. */
  static async pin(key: TenantKey, acquire: () => Promise<PoolLease>): Promise<PinnedConnection> {
    const lease = await acquire()
    try {
      await lease.prepare()
    } catch (error) {
      lease.release(true)
      throw lease.redact(error)
    }
    return new PinnedConnection(key, lease)
  }

  /** New work may be queued: `fn` has not returned. */
  get active(): boolean {
    return this.#open
  }

  get processID(): number | undefined {
    return this.#lease.processID
  }

  assertActive(): void {
    if (!this.#open) throw ended(this.key)
  }

  query<R extends QueryResultRow = any>(config: QueryInput, values?: unknown[]): Promise<QueryResult<R>> {
    if (!this.#open) return Promise.reject(ended(this.key))
    return this.queue.run(async () => {
      if (this.#broken !== undefined) throw this.#broken
      try {
        return await this.#lease.query<R>(config, values)
      } catch (error) {
        throw this.#lease.redact(error)
      }
    })
  }

  /** For a transaction begun inside: the connection, held (queue included) until the transaction releases it. */
  async borrow(): Promise<PoolLease> {
    if (!this.#open) throw ended(this.key)
    const giveBack = await this.queue.hold()
    if (this.#broken !== undefined) {
      giveBack()
      throw this.#broken
    }
    return new BorrowedLease(this.#lease, giveBack, (error) => {
      this.#broken ??= error
    })
  }

  /** `fn` returned: statements already queued finish, then the connection goes back (destroyed if broken). */
  async release(): Promise<void> {
    this.#open = false
    const giveBack = await this.queue.hold()
    giveBack()
    // Whatever the scope left in the session (SET, advisory locks, temporary tables) is reset by the next checkout.
    this.#lease.forgetCarried()
    this.#lease.release(this.#broken)
  }
}

/**
 * The pinned lease as a transaction sees it: BEGIN without touching the session (the settings are
 * carried already; a caller's own `SET` in the pinned scope stays), and `release` gives the pinned
 * connection back to its scope, marking it broken when the transaction broke it.
 */
class BorrowedLease implements PoolLease {
  readonly #lease: PoolLease
  readonly #giveBack: () => void
  readonly #broke: (error: Error) => void
  #released = false

  constructor(lease: PoolLease, giveBack: () => void, broke: (error: Error) => void) {
    this.#lease = lease
    this.#giveBack = giveBack
    this.#broke = broke
  }

  get client(): PoolLease['client'] {
    return this.#lease.client
  }

  get processID(): number | undefined {
    return this.#lease.processID
  }

  get revokedError(): Error | undefined {
    return this.#lease.revokedError
  }

  query<R extends QueryResultRow = any>(config: QueryInput, values?: unknown[]): Promise<QueryResult<R>> {
    return this.#lease.query<R>(config, values)
  }

  prepare(): Promise<void> {
    return this.#lease.prepare()
  }

  async begin(sql: string): Promise<void> {
    await this.#lease.query(sql)
  }

  forgetCarried(): void {
    this.#lease.forgetCarried()
  }

  redact(error: unknown): unknown {
    return this.#lease.redact(error)
  }

  release(destroy?: Error | boolean): void {
    if (this.#released) return
    this.#released = true
    // A COMMIT that failed as a statement (a serialization failure, a deferred constraint) ended the
    // transaction: the pinned connection goes on. Only a connection-level failure breaks it. (pg's
    // transaction status may lag here: the error is delivered before its ReadyForQuery is read.)
    if (destroy === true || (destroy instanceof Error && !isStatementError(destroy))) {
      this.#broke(destroy instanceof Error ? destroy : new TransactionClosedError('the pinned connection broke inside a transaction'))
    }
    this.#giveBack()
  }
}
