import type { QueryConfig, QueryResult, QueryResultRow } from 'pg'
import { InvalidOptionsError, TransactionClosedError } from '../hyperconn-error.js'
import { QueryQueue } from './query-queue.js'
import type { PoolLease, QueryOptions, Tenant, TenantConnection, TenantKey, TenantPoolAccess, TransactionOptions } from '../tenant-types.js'
import { PinnedConnection } from './pinned-connection.js'
import { RouteScope } from './route-scope.js'
import { autocommitQuery } from './autocommit-query.js'
import { currentEntry, currentScope, runWithScope } from './transaction-context.js'
import { runTransaction } from './transaction-runner.js'
import type { TransactionScope } from './transaction-state.js'

type QueryInput = string | QueryConfig

function released(): TransactionClosedError {
  return new TransactionClosedError('this connection was already released')
}

/**
 * `getPool().query` (like `pg.Pool#query`): outside any transaction, but on the pinned connection inside
 * `tenant.connection(fn)`.
 */
export function poolQuery<R extends QueryResultRow>(
  access: TenantPoolAccess,
  key: TenantKey,
  config: QueryInput,
  values: unknown[] | undefined,
): Promise<QueryResult<R>> {
  const entry = currentEntry(key)
  return entry?.kind === 'pinned' || entry?.kind === 'route' ? entry.query<R>(config, values) : autocommitQuery<R>(access, key, config, values)
}

/** What every `acquire()` handle shares: `await using conn = await tenant.acquire()` releases it. */
abstract class ConnectionHandle implements TenantConnection {
  abstract readonly inTransaction: boolean
  abstract readonly processID: number | undefined
  abstract query<R extends QueryResultRow = any>(config: QueryInput, values?: unknown[]): Promise<QueryResult<R>>
  abstract release(error?: Error): void

  [Symbol.asyncDispose](): Promise<void> {
    this.release()
    return Promise.resolve()
  }
}

/** `acquire()` inside a transaction: queries go through the scope's queue; release only ends this handle. */
class TransactionConnection extends ConnectionHandle {
  readonly #scope: TransactionScope
  #released = false

  constructor(scope: TransactionScope) {
    super()
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

/** `acquire()` inside `tenant.connection(fn)`: queries go to the pinned connection; release only ends this handle. */
class PinnedHandle extends ConnectionHandle {
  readonly #pinned: PinnedConnection
  #released = false

  constructor(pinned: PinnedConnection) {
    super()
    this.#pinned = pinned
  }

  get inTransaction(): false {
    return false
  }

  get processID(): number | undefined {
    return this.#pinned.processID
  }

  query<R extends QueryResultRow = any>(config: QueryInput, values?: unknown[]): Promise<QueryResult<R>> {
    if (this.#released) return Promise.reject(released())
    // Used inside a transaction begun on this pinned connection, it joins it: that transaction holds the
    // pinned queue, so queueing there would wait for the transaction while the transaction waits for this.
    const here = currentScope(this.#pinned.key)
    if (here?.active === true && here.tx.processID === this.#pinned.processID) return here.query<R>(config, values)
    return this.#pinned.query<R>(config, values)
  }

  release(): void {
    this.#released = true
  }
}

/** `acquire()` outside a transaction: a leased pooled client, returned (or destroyed) on release. */
class LeasedConnection extends ConnectionHandle {
  readonly #lease: PoolLease
  // Adapters normally send one query at a time; this keeps pg from ever seeing two anyway.
  readonly #queue = new QueryQueue()
  #released = false

  constructor(lease: PoolLease) {
    super()
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
  const entry = currentEntry(key)
  if (entry?.kind === 'transaction') {
    entry.assertActive()
    return new TransactionConnection(entry)
  }
  if (entry?.kind === 'pinned') {
    entry.assertActive()
    return new PinnedHandle(entry)
  }
  // Adapters acquire a connection for statements they do not know to be reads: always the primary.
  return new LeasedConnection(await access.acquire(key))
}

/**
 * `tenant.primary(fn)` / `tenant.replica(fn)`. Inside an active transaction or pinned connection of the
 * tenant, `fn` just runs there: those are on the primary already.
 */
async function runRouted<T>(access: TenantPoolAccess, key: TenantKey, to: 'primary' | 'replica', fn: () => Promise<T>): Promise<T> {
  if (typeof fn !== 'function') throw new InvalidOptionsError(`tenant.${to}(fn): fn must be a function returning a promise.`)
  const entry = currentEntry(key)
  // A transaction or pinned connection is on the primary already, and replica() inside primary() stays there.
  if (entry !== undefined && entry.active && (entry.kind !== 'route' || entry.to === 'primary')) return fn()
  const scope = new RouteScope(access, key, to)
  try {
    return await runWithScope(key, scope, fn)
  } finally {
    scope.end()
  }
}

/**
 * `tenant.connection(fn)`: pins one connection for `fn`'s async context (see PinnedConnection). Inside an
 * active transaction or pinned scope of the tenant, `fn` runs there: its connection is already pinned.
 */
async function runPinned<T>(access: TenantPoolAccess, key: TenantKey, fn: () => Promise<T>): Promise<T> {
  if (typeof fn !== 'function') throw new InvalidOptionsError('tenant.connection(fn): fn must be a function returning a promise.')
  const entry = currentEntry(key)
  if (entry !== undefined && entry.kind !== 'route' && entry.active) return fn()
  access.assertOpen()
  access.assertSessions(key)
  const pinned = await PinnedConnection.pin(key, () => access.acquire(key))
  try {
    return await runWithScope(key, pinned, fn)
  } finally {
    await pinned.release()
  }
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
    get schema(): string | undefined {
      return access.schemaOf(tenantKey)
    },
    pool: () => access.pool(tenantKey),
    query<R extends QueryResultRow = any>(text: QueryInput, values?: unknown[], options?: QueryOptions): Promise<QueryResult<R>> {
      const entry = currentEntry(tenantKey)
      if (entry === undefined) return autocommitQuery<R>(access, tenantKey, text, values, options?.read === true)
      // Inside primary(fn) nothing goes to a replica; inside replica(fn) everything but known writes may.
      return entry.kind === 'route' ? entry.query<R>(text, values, options) : entry.query<R>(text, values)
    },
    transaction<T>(fn: () => Promise<T>, options?: TransactionOptions): Promise<T> {
      return runTransaction(access, tenantKey, fn, options)
    },
    acquire: () => acquireConnection(access, tenantKey),
    connection: <T>(fn: () => Promise<T>): Promise<T> => runPinned(access, tenantKey, fn),
    primary: <T>(fn: () => Promise<T>): Promise<T> => runRouted(access, tenantKey, 'primary', fn),
    replica: <T>(fn: () => Promise<T>): Promise<T> => runRouted(access, tenantKey, 'replica', fn),
  })
}
