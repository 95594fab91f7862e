import { isReadOnlySelectText, LazyConnection } from '@hyperconn/core/adapter'
import { createHash } from 'node:crypto'
import type { Tenant, TenantConnection } from '@hyperconn/core'
import { TransactionPropagationError, UnsupportedError } from '@hyperconn/core'
import { PostgresAdapter, PostgresIntrospector, PostgresQueryCompiler, sql } from 'kysely'
import type {
  CompiledQuery,
  DatabaseConnection,
  DatabaseIntrospector,
  Dialect,
  DialectAdapter,
  Driver,
  Kysely,
  MigrationLockOptions,
  QueryCompiler,
  QueryResult,
} from 'kysely'

/** Query results that report a row count to Kysely, as in Kysely's own PostgresConnection. */
const COUNTED_COMMANDS: ReadonlySet<string> = new Set(['INSERT', 'UPDATE', 'DELETE', 'MERGE'])

// Core may hand out the same error object more than once (a broken transaction's error); extend it once.
const extendedErrors = new WeakSet<object>()

/** Appends the caller's stack, like Kysely's `extendStackTrace`, so errors point at the query builder call. */
function withCallerStack(error: unknown): unknown {
  if (!(error instanceof Error) || typeof error.stack !== 'string' || extendedErrors.has(error)) return error
  const caller = new Error().stack
  if (caller !== undefined) error.stack += `\n${caller.split('\n').slice(1).join('\n')}`
  extendedErrors.add(error)
  return error
}


/**
 * Whether a compiled query is known to only read: a `selectFrom` (SelectQueryNode) without a `with`, whose
 * text has no locking clause (isReadOnlySelectText of @hyperconn/core/adapter). Raw SQL (`sql`), writes and anything else are not.
 */
export function isKnownRead(compiledQuery: CompiledQuery): boolean {
  const node = compiledQuery.query as { kind: string; with?: unknown }
  return node.kind === 'SelectQueryNode' && node.with === undefined && isReadOnlySelectText(compiledQuery.sql)
}

/**
 * A Kysely connection on one tenant, acquired lazily. Until a statement that is not a known read (see
 * isKnownRead) arrives, reads go through `tenant.query(…, { read: true })`, which core may send to a read
 * replica (outside transactions, pinned scopes and `tenant.primary`). The first other statement takes
 * `tenant.acquire()` (the transaction's connection, or a pooled one of the primary), and from then on every
 * statement of this connection runs on that handle, in order; `release` gives back exactly it.
 */
export class TenantDatabaseConnection implements DatabaseConnection {
  readonly #tenant: Pick<Tenant, 'acquire' | 'query'>
  readonly #connection: LazyConnection

  constructor(tenant: Pick<Tenant, 'acquire' | 'query'>) {
    this.#tenant = tenant
    this.#connection = new LazyConnection(() => tenant.acquire())
  }

  #run(compiledQuery: CompiledQuery): ReturnType<TenantConnection['query']> {
    const values = compiledQuery.parameters as unknown[]
    if (!this.#connection.started && isKnownRead(compiledQuery)) {
      return this.#tenant.query(compiledQuery.sql, values, { read: true })
    }
    return this.#connection.get().then((connection) => connection.query(compiledQuery.sql, values))
  }

  async executeQuery<R>(compiledQuery: CompiledQuery): Promise<QueryResult<R>> {
    try {
      const { command, rowCount, rows } = await this.#run(compiledQuery)
      // Same mapping as Kysely's PostgresConnection. pg has no "changed" count distinct from the affected
      // count (that is MySQL's changedRows), so numChangedRows stays unset as it does there.
      return COUNTED_COMMANDS.has(command)
        ? { numAffectedRows: BigInt(rowCount ?? 0), rows: (rows as R[] | undefined) ?? [] }
        : { rows: (rows as R[] | undefined) ?? [] }
    } catch (error) {
      throw withCallerStack(error)
    }
  }

  // TenantConnection.query takes text or a QueryConfig and awaits a result; a pg-cursor Submittable would
  // keep reading after the query "finished", interleaving with other statements of a shared transaction.
  streamQuery<R>(_compiledQuery: CompiledQuery, _chunkSize?: number): AsyncIterableIterator<QueryResult<R>> {
    const error = new UnsupportedError(
      '@hyperconn/kysely does not support .stream() yet: @hyperconn/core cannot run a pg-cursor on a tenant connection. ' +
        'Page through the rows instead (keyset pagination with .where(...).orderBy(...).limit(n)), or use ' +
        'registry.getPool(service, orgId) with pg-cursor directly, outside transactions.',
    )
    const iterator: AsyncIterableIterator<QueryResult<R>> = {
      next: () => Promise.reject(error),
      [Symbol.asyncIterator]: () => iterator,
    }
    return iterator
  }

  release(): void {
    this.#connection.release()
  }
}

function nativeTransaction(operation: string): TransactionPropagationError {
  return new TransactionPropagationError(
    `Kysely tried to run ${operation} through @hyperconn/kysely's driver. Native Kysely transactions would bypass the ` +
      'shared transaction context, so they are refused. Use db.transaction().execute(fn) on a database from getDb(orgId) ' +
      '(or on an instance derived from it), or registry.tenant(orgId).transaction(fn).',
  )
}

/**
 * Kysely driver over one tenant of the registry: every connection comes from `tenant.acquire()` (lazily,
 * see TenantDatabaseConnection), which joins the tenant's active transaction of the current async context
 * or leases a pooled connection; known reads before that go through `tenant.query(…, { read: true })`.
 * The driver owns nothing: `destroy()` cannot end a registry pool.
 */
export class TenantDriver implements Driver {
  readonly #tenant: Tenant

  constructor(tenant: Tenant) {
    this.#tenant = tenant
  }

  async init(): Promise<void> {}

  // Lazy: the connection acquires from core on its first statement that is not a known read.
  acquireConnection(): Promise<DatabaseConnection> {
    return Promise.resolve(new TenantDatabaseConnection(this.#tenant))
  }

  releaseConnection(connection: DatabaseConnection): Promise<void> {
    ;(connection as TenantDatabaseConnection).release()
    return Promise.resolve()
  }

  // Backstop: every Kysely instance the adapter hands out routes transactions into core, so reaching
  // these means a new Kysely code path created a plain instance (see the README's version notes).
  beginTransaction(): Promise<void> {
    return Promise.reject(nativeTransaction('BEGIN'))
  }

  commitTransaction(): Promise<void> {
    return Promise.reject(nativeTransaction('COMMIT'))
  }

  rollbackTransaction(): Promise<void> {
    return Promise.reject(nativeTransaction('ROLLBACK'))
  }

  savepoint(): Promise<void> {
    return Promise.reject(nativeTransaction('SAVEPOINT'))
  }

  rollbackToSavepoint(): Promise<void> {
    return Promise.reject(nativeTransaction('ROLLBACK TO SAVEPOINT'))
  }

  releaseSavepoint(): Promise<void> {
    return Promise.reject(nativeTransaction('RELEASE SAVEPOINT'))
  }

  async destroy(): Promise<void> {}
}

// As Kysely's PostgresAdapter: wait at most an hour for another migrator.
const MIGRATION_LOCK_TIMEOUT_MS = 60 * 60 * 1000

/** The advisory lock key of one schema's migration lock table: the first 64 bits of a SHA-256. */
function migrationLockKey(schema: string, lockTable: string): string {
  return createHash('sha256').update(`kysely_migration_lock\0${schema}\0${lockTable}`).digest().readBigInt64BE(0).toString()
}

/**
 * Kysely's PostgresAdapter takes one advisory lock per database for every `Migrator`, so the migrators of
 * tenants that share a database (one schema each) would run one after another. With `migrationTableSchema`
 * set (as `migrator(orgId)` does for schema tenants), the lock is that schema's migration lock table's
 * instead; without it, Kysely's own lock.
 */
export class TenantPostgresAdapter extends PostgresAdapter {
  override async acquireMigrationLock(db: Kysely<any>, options: MigrationLockOptions): Promise<void> {
    if (options.lockTableSchema === undefined) return super.acquireMigrationLock(db, options)
    const key = migrationLockKey(options.lockTableSchema, options.lockTable)
    await sql`
      with set_timeout as (
        select set_config('lock_timeout', ${sql.lit(String(MIGRATION_LOCK_TIMEOUT_MS))}, true) as config_val
      )
      select pg_advisory_lock(${sql.lit(key)}::bigint)
      from set_timeout`.execute(db)
  }

  override async releaseMigrationLock(db: Kysely<any>, options: MigrationLockOptions): Promise<void> {
    if (options.lockTableSchema === undefined) return super.releaseMigrationLock(db, options)
    await sql`select pg_advisory_unlock(${sql.lit(migrationLockKey(options.lockTableSchema, options.lockTable))}::bigint)`.execute(db)
  }
}

/** Kysely's PostgreSQL compiler, adapter and introspector around a `TenantDriver`. */
export class TenantDialect implements Dialect {
  readonly #driver: TenantDriver

  constructor(driver: TenantDriver) {
    this.#driver = driver
  }

  createDriver(): Driver {
    return this.#driver
  }

  createQueryCompiler(): QueryCompiler {
    return new PostgresQueryCompiler()
  }

  createAdapter(): DialectAdapter {
    return new TenantPostgresAdapter()
  }

  createIntrospector(db: Kysely<any>): DatabaseIntrospector {
    return new PostgresIntrospector(db)
  }
}
