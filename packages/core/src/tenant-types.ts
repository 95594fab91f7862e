import type { ClientBase, Pool, QueryConfig, QueryResult, QueryResultRow } from 'pg'

/** Structured pool key: (service, orgId) are kept apart, never joined into one string. */
export interface TenantKey {
  readonly service: string
  readonly orgId: string
}

/**
 * A connection checked out for one tenant through the lease point. The tenant's session settings are
 * applied before its first `query` (or transaction-locally by `begin`). Every connection carries an
 * 'error' listener for its whole life, so holders need not add one to survive a backend dying mid-query.
 */
export interface PoolLease {
  /** The physical connection (for 'error' listeners, diagnostics, and handing out as a pg client). */
  readonly client: ClientBase
  readonly processID: number | undefined
  /** Runs a statement, with the tenant's settings applied first if they are not yet. */
  query<R extends QueryResultRow = any>(config: string | QueryConfig, values?: unknown[]): Promise<QueryResult<R>>
  /** Applies the tenant's settings at session level now (before handing `client` out raw). */
  prepare(): Promise<void>
  /** Runs `sql` (a BEGIN), then the tenant's settings transaction-locally. */
  begin(sql: string): Promise<void>
  /** The raw `client` went to code whose statements `query` does not see: the next checkout resets it. */
  forgetCarried(): void
  /** The error with this tenant's secrets masked (class and fields kept). */
  redact(error: unknown): unknown
  /** Give the connection back; pass an error (or true) to destroy it instead (dead backend, failed COMMIT). Idempotent. */
  release(destroy?: Error | boolean): void
  /** Once the connection was taken back as a leak: the error its holder gets (`ConnectionLeakError`). */
  readonly revokedError: Error | undefined
}

/** What the transaction engine and tenant handles need from the registry. */
export interface TenantPoolAccess {
  /**
   * A connection for the tenant through the lease point (secret, budget, settings, rotation retry); with
   * `read`, from one of its healthy replicas when it has any.
   */
  acquire(key: TenantKey, read?: boolean): Promise<PoolLease>
  /** The tenant-bound `pg.Pool` (for `tenant.pool()` / `getPool`). */
  pool(key: TenantKey): Promise<Pool>
  /** Throws `RegistryClosedError` once the registry is closing. */
  assertOpen(): void
  /** Throws `UnsupportedError` when the tenant's service cannot keep session state (behind a transaction pooler). */
  assertSessions(key: TenantKey): void
  /** With telemetry: runs a transaction that begins inside a `hyperconn.transaction` span. */
  readonly traceTransaction?: <T>(key: TenantKey, options: TransactionOptions, propagation: Propagation, run: () => Promise<T>) => Promise<T>
  /** The tenant's schema when its service isolates by schema, else undefined. */
  schemaOf(key: TenantKey): string | undefined
}

/** `'read uncommitted'` is accepted and runs as `'read committed'`, as PostgreSQL does. */
export type IsolationLevel = 'read uncommitted' | 'read committed' | 'repeatable read' | 'serializable'

/**
 * How `transaction(fn)` relates to a transaction already active for this tenant, as in Spring:
 * `'required'` joins it or begins one, `'requires_new'` begins another on a second connection,
 * `'nested'` opens a savepoint in it (or begins one), `'mandatory'` needs one, `'never'` refuses one, `'not_supported'` runs
 * outside it, `'supports'` joins it if any.
 */
export type Propagation =
  | 'required'
  | 'requires_new'
  | 'nested'
  | 'mandatory'
  | 'never'
  | 'not_supported'
  | 'supports'

/** Options of `tenant.transaction(fn, options)`. */
export interface TransactionOptions {
  isolationLevel?: IsolationLevel
  readOnly?: boolean
  /** Default 'required': join the active transaction of this tenant, else start one. */
  propagation?: Propagation
}

/**
 * A connection for one query or a short sequence of queries (what an ORM driver acquires). Inside an
 * active transaction of the same tenant it is the transaction's connection, and its queries are
 * serialised with every other query of that transaction.
 */
export interface TenantConnection extends AsyncDisposable {
  /** Runs a statement on this connection (in a transaction, serialised with its other queries). */
  query<R extends QueryResultRow = any>(config: string | QueryConfig, values?: unknown[]): Promise<QueryResult<R>>
  /** True when this connection belongs to the active transaction. */
  readonly inTransaction: boolean
  /** Backend process id, for diagnostics. */
  readonly processID: number | undefined
  /**
   * Give the connection back. Idempotent; for a transaction's (or a pinned) connection it only ends this
   * handle. `await using conn = await tenant.acquire()` calls it at the end of the block.
   */
  release(error?: Error): void
}

/** One tenant (service and org) of a registry, from `registry.tenant(orgId, service)`. */
export interface Tenant<TService extends string = string> {
  readonly orgId: string
  readonly service: TService
  /**
   * The tenant's schema when the service isolates by schema (`isolation: { schema }`), else undefined: for
   * tools that need it spelled out, such as a migrator's own table.
   */
  readonly schema: string | undefined
  /** The tenant's `pg.Pool`, as `registry.getPool(service, orgId)`: outside any transaction. */
  pool(): Promise<Pool>
  /**
   * Runs on this tenant's active transaction (or pinned connection) if there is one, else on a pooled
   * connection of the primary. `{ read: true }` (what adapters pass for statements they know are reads)
   * may go to a replica instead, outside transactions, `connection()` and `primary()`; inside
   * `replica(fn)` every raw statement may.
   */
  query<R extends QueryResultRow = any>(text: string | QueryConfig, values?: unknown[], options?: QueryOptions): Promise<QueryResult<R>>
  /**
   * Runs `fn` in a transaction of this tenant, bound to the async context: queries of this tenant inside
   * `fn` (from any adapter) join it. Commits when `fn` resolves, rolls back when it rejects.
   */
  transaction<T>(fn: () => Promise<T>, options?: TransactionOptions): Promise<T>
  /** For adapter authors: a connection that follows the transaction context (see `TenantConnection`). */
  acquire(): Promise<TenantConnection>
  /**
   * Runs `fn` with one connection of this tenant pinned to its async context, without BEGIN: every query
   * of this tenant inside (any adapter, `query`, `getPool().query`) runs on it, concurrent ones one after
   * another, and a transaction started inside runs on it too. Session state (`SET`, advisory locks)
   * persists across them. Inside an active transaction (or pinned scope) of this tenant, `fn` just runs there.
   */
  connection<T>(fn: () => Promise<T>): Promise<T>
  /** Everything of this tenant inside `fn` goes to the primary, reads included. */
  primary<T>(fn: () => Promise<T>): Promise<T>
  /**
   * Raw statements of this tenant inside `fn` may go to a replica (a write there is rejected by the replica
   * itself); transactions and `connection()` inside still use the primary.
   */
  replica<T>(fn: () => Promise<T>): Promise<T>
}

/** Options of `tenant.query`. */
export interface QueryOptions {
  /** The statement only reads: it may go to a healthy replica (services with `replicas`). */
  read?: boolean
}
