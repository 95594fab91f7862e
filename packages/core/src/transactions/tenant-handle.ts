import type { QueryConfig, QueryResult, QueryResultRow } from 'pg'
import { TransactionClosedError } from '../hyperconn-error.js'
import { QueryQueue } from './query-queue.js'
import type { PoolLease, Tenant, TenantConnection, TenantKey, TenantPoolAccess, TransactionOptions } from '../tenant-types.js'
import { currentScope } from './transaction-context.js'
import { runTransaction } from './transaction-runner.js'
import type { TransactionScope } from './transaction-state.js'

type QueryInput = string | QueryConfig

function released(): TransactionClosedError {
  return new TransactionClosedError('this connection was already released')
}

/** Autocommit: lease, one query, release. No allocation beyond that on this path. */
export async function autocommitQuery<R extends QueryResultRow>(
  access: TenantPoolAccess,
  key: TenantKey,
  config: QueryInput,
  values: unknown[] | undefined,
): Promise<QueryResult<R>> {
  // The client's lifelong 'error' listener (TenantPoolAccess contract) keeps a dying backend from crashing
  // the process; the query itself rejects and pg-pool drops the unqueryable client on release.
  const lease = await access.acquire(key)
  try {
    return await lease.query<R>(config, values)
  } catch (error) {
    throw lease.redact(error)
  } finally {
    lease.release()
  }
}

/** `acquire()` inside a transaction: queries go through the scope's queue; release only ends this handle. */
class TransactionConnection implements TenantConnection {
  readonly #scope: TransactionScope
  #released = false

  constructor(scope: TransactionScope) {
    this.#scope = scope
  }

  get inTransaction(): true {
    return true
  }

  get processID(): number | undefined {
    return this.#scope.tx.processID
  }

  query<R extends QueryResultRow = any>(config: QueryInput, values?: unknown[]): Promise<QueryResult<R>> {
    if (this.#released) return Promise.reject(released())
    // Used inside a savepoint of its own transaction, it runs there: that savepoint holds this scope's
    // queue, so queueing here would wait for the savepoint while the savepoint waits for this query.
    const here = currentScope(this.#scope.tx.key)
    const scope = here !== undefined && here !== this.#scope && here.tx === this.#scope.tx && here.active ? here : this.#scope
    return scope.query<R>(config, values)
  }

  release(): void {
    this.#released = true
  }
}

/** `acquire()` outside a transaction: a leased pooled client, returned (or destroyed) on release. */
class LeasedConnection implements TenantConnection {
  readonly #lease: PoolLease
  // Adapters normally send one query at a time; this keeps pg from ever seeing two anyway.
  readonly #queue = new QueryQueue()
  #released = false

  constructor(lease: PoolLease) {
    this.#lease = lease
  }

  get inTransaction(): false {
    return false
  }

  get processID(): number | undefined {
    return this.#lease.processID
  }

  query<R extends QueryResultRow = any>(config: QueryInput, values?: unknown[]): Promise<QueryResult<R>> {
    if (this.#released) return Promise.reject(released())
    return this.#queue.run(async () => {
      // A query queued before release() must not reach a client that may already serve someone else.
      if (this.#released) throw released()
      try {
        return await this.#lease.query<R>(config, values)
      } catch (error) {
        throw this.#lease.redact(error)
      }
    })
  }

  release(error?: Error): void {
    if (this.#released) return
    this.#released = true
    this.#lease.release(error)
  }
}

async function acquireConnection(access: TenantPoolAccess, key: TenantKey): Promise<TenantConnection> {
  // Decided now, not at release: a connection acquired inside a transaction stays bound to that scope.
  const scope = currentScope(key)
  if (scope !== undefined) {
    scope.assertActive()
    return new TransactionConnection(scope)
  }
  return new LeasedConnection(await access.acquire(key))
}

/**
 * The `Tenant` handle: `query` and `acquire` follow the transaction context of the current async
 * frame (see transaction-context.ts); `transaction` applies the propagation rules (transaction-runner.ts).
 */
export function createTenantHandle(access: TenantPoolAccess, key: TenantKey): Tenant {
  const tenantKey: TenantKey = Object.freeze({ service: key.service, orgId: key.orgId })
  return Object.freeze({
    orgId: tenantKey.orgId,
    service: tenantKey.service,
    pool: () => access.pool(tenantKey),
    query<R extends QueryResultRow = any>(text: QueryInput, values?: unknown[]): Promise<QueryResult<R>> {
      const scope = currentScope(tenantKey)
      return scope === undefined ? autocommitQuery<R>(access, tenantKey, text, values) : scope.query<R>(text, values)
    },
    transaction<T>(fn: () => Promise<T>, options?: TransactionOptions): Promise<T> {
      return runTransaction(access, tenantKey, fn, options)
    },
    acquire: () => acquireConnection(access, tenantKey),
  })
}
