import { InvalidOptionsError, UnsupportedError } from '@hyperconn/core'
import { adapterTransactionOptions, bindActiveTransaction, InstanceCache, validateAdapterOptions, isReadOnlySelectText, isWriteText } from '@hyperconn/core/adapter'
import type { Registry, ServiceOf, Tenant, TransactionBinding, TransactionOptions } from '@hyperconn/core'
import { DefaultLogger, is } from 'drizzle-orm'
import type { Casing, DrizzleConfig, ExtractTablesWithRelations, Logger, RelationalSchemaConfig } from 'drizzle-orm'
import { drizzle, NodePgSession, NodePgTransaction } from 'drizzle-orm/node-postgres'
import type { NodePgClient, NodePgDatabase, NodePgSessionOptions } from 'drizzle-orm/node-postgres'
import { PgDialect } from 'drizzle-orm/pg-core'
import type { PgTransactionConfig } from 'drizzle-orm/pg-core'
import type { QueryConfig, QueryResult } from 'pg'

/** Options of `createDrizzleAdapter`; `TService` is the registry's union of service names. */
export interface DrizzleAdapterOptions<
  TSchema extends Record<string, unknown> = Record<string, never>,
  TService extends string = string,
> {
  /** Service whose connection string (`<service>-postgresql` in the tenant's secret) this adapter uses. */
  service: TService
  /** Drizzle schema (tables and relations); enables `db.query.<table>` relational queries. */
  schema?: TSchema
  /** Passed to drizzle: column name casing. */
  casing?: Casing
  /** Passed to drizzle: `true` for drizzle's console logger, or your own `Logger`. */
  logger?: boolean | Logger
  /** How many tenant-bound instances `getDb` keeps (least recently used are dropped). Default 1000. */
  maxInstances?: number
}

/** What `createDrizzleAdapter` returns. */
export interface DrizzleAdapter<TSchema extends Record<string, unknown> = Record<string, never>> {
  /**
   * The Drizzle database of one tenant, synchronous and cached. Throws `InvalidTenantIdError` /
   * `UnknownServiceError` right away; the secret and pool are resolved on the first query.
   */
  getDb(orgId: string): NodePgDatabase<TSchema>
}

/** The `tx` handed to `db.transaction(fn)` callbacks. */
export type DrizzleTransaction<TSchema extends Record<string, unknown> = Record<string, never>> = NodePgTransaction<
  TSchema,
  ExtractTablesWithRelations<TSchema>
>

type QueryInput = string | QueryConfig

const NOT_A_READ = Object.freeze({ read: false })

/** `tenant.query`'s options (`{ read }`). */
type QueryOptions = NonNullable<Parameters<Tenant['query']>[2]>

/**
 * What drizzle sees as its pg client. Deliberately not a pg.Pool and without "Pool" in its class
 * name: drizzle's own NodePgSession.transaction() would otherwise call connect()/release() on it.
 * Every query goes to `tenant.query`, which joins the tenant's transaction in the current async
 * context or autocommits on the tenant's pool. The QueryConfig passes through untouched (drizzle
 * sets rowMode 'array' and its own type parsers).
 */
class TenantQueryClient {
  readonly #tenant: Pick<Tenant, 'query'>

  constructor(tenant: Pick<Tenant, 'query'>) {
    this.#tenant = tenant
  }

  query(config: QueryInput, values?: unknown[]): Promise<QueryResult> {
    // Writes (insert, update, delete, DDL) are marked so, for tenant.replica(fn) to keep them on the primary.
    const text = typeof config === 'string' ? config : config.text
    return isWriteText(text) ? this.#tenant.query(config, values, NOT_A_READ) : this.#tenant.query(config, values)
  }

  /** For subclasses: the same query, with core's routing options. */
  protected routed(config: QueryInput, values: unknown[] | undefined, options: QueryOptions): Promise<QueryResult> {
    return this.#tenant.query(config, values, options)
  }

  /**
   * `db.$client.end()`, the usual Drizzle shutdown line, does nothing: the registry owns the pools, and
   * `registry.close()` ends them. (pg.Pool's callback form is accepted too.)
   */
  end(callback?: (error?: Error) => void): Promise<void> {
    if (typeof callback === 'function') callback()
    return Promise.resolve()
  }

  // The registry owns connection errors; these keep a drizzle that subscribes to client events working.
  on(): this {
    return this
  }

  off(): this {
    return this
  }

  removeListener(): this {
    return this
  }
}




/**
 * The client of the tenant db's read builders (`select`, `selectDistinct`, `selectDistinctOn`, `$count`,
 * `query`): only SELECTs reach it, and each one without a locking clause (isReadOnlySelectText of @hyperconn/core/adapter)
 * passes `{ read: true }`, so core may send it to a read replica outside transactions and pinned scopes.
 */
class ReadQueryClient extends TenantQueryClient {
  override query(config: QueryInput, values?: unknown[]): Promise<QueryResult> {
    const text = typeof config === 'string' ? config : config.text
    return this.routed(config, values, { read: isReadOnlySelectText(text) })
  }
}

/**
 * The client of one transaction's `tx` object. Same routing as TenantQueryClient, but every query
 * first checks core's binding to that transaction: a `tx` used after its transaction ended rejects
 * with TransactionClosedError, and one used where the current async context is not inside its
 * transaction (another transaction, a not_supported scope, code that kept it) rejects with
 * TransactionPropagationError. Inside its own transaction and savepoints it follows the context.
 */
class TransactionQueryClient extends TenantQueryClient {
  readonly #binding: TransactionBinding

  constructor(tenant: Pick<Tenant, 'query'>, binding: TransactionBinding) {
    super(tenant)
    this.#binding = binding
  }

  override query(config: QueryInput, values?: unknown[]): Promise<QueryResult> {
    const refused = this.#binding.refusal()
    return refused === undefined ? super.query(config, values) : Promise.reject(refused)
  }
}

function asClient(client: TenantQueryClient): NodePgClient {
  return client as unknown as NodePgClient
}

function unsupportedDrizzle(detail: string): Error {
  return new Error(
    `@hyperconn/drizzle does not support the installed drizzle-orm: ${detail}. It is tested with drizzle-orm 0.45; ` +
      'install a version in its peerDependencies range.',
  )
}

/** drizzle() stores the dialect as an @internal field; the tx object must be built on the same one. */
function dialectOf(db: NodePgDatabase<any>): PgDialect {
  const dialect: unknown = Reflect.get(db, 'dialect')
  if (!is(dialect, PgDialect)) throw unsupportedDrizzle('NodePgDatabase has no PgDialect in its "dialect" field')
  return dialect
}

/** Builders of NodePgDatabase that only produce SELECTs (as drizzle's own `withReplicas`, without `with`). */
const READ_METHODS = ['select', 'selectDistinct', 'selectDistinctOn', '$count'] as const

/**
 * Checks, once per adapter, the drizzle internals this adapter relies on, so a drizzle upgrade that
 * changes them fails at startup with a clear message instead of running queries outside transactions.
 */
function assertDrizzleShape(config: DrizzleConfig<any>): void {
  const probe = new TenantQueryClient({ query: () => Promise.reject(new Error('probe')) })
  const db = drizzle({ ...config, client: asClient(probe) })
  const session: unknown = db._.session
  if (!is(session, NodePgSession)) throw unsupportedDrizzle('db._.session is not a NodePgSession')
  // Every query must reach our client: NodePgPreparedQuery calls session.client.query(config, params).
  if (Reflect.get(session, 'client') !== probe) throw unsupportedDrizzle('the session does not hold the client passed to drizzle()')
  const dialect = dialectOf(db)
  if (typeof db.transaction !== 'function' || !Object.isExtensible(db)) throw unsupportedDrizzle('db.transaction cannot be replaced')
  // migrate() calls dialect.migrate(…, db.session): that must be the session whose transaction we replace.
  if (Reflect.get(db, 'session') !== session) throw unsupportedDrizzle('db.session is not db._.session')
  // The read builders are replaced by those of a second instance on a ReadQueryClient (see createTenantDb).
  for (const method of READ_METHODS) {
    if (typeof Reflect.get(db, method) !== 'function') throw unsupportedDrizzle(`db.${method} is not a function`)
  }
  if (typeof Reflect.get(db, 'query') !== 'object' || !Reflect.set(db, 'query', Reflect.get(db, 'query'))) {
    throw unsupportedDrizzle('db.query cannot be replaced')
  }
  const probeTransaction = (): Promise<never> => Promise.reject(new Error('probe'))
  if (typeof session.transaction !== 'function' || !Reflect.set(session, 'transaction', probeTransaction) || session.transaction !== probeTransaction) {
    throw unsupportedDrizzle('db.session.transaction cannot be replaced')
  }
  const proto: unknown = NodePgTransaction.prototype
  for (const method of ['rollback', 'setTransaction', 'transaction']) {
    if (typeof Reflect.get(proto as object, method) !== 'function') throw unsupportedDrizzle(`NodePgTransaction has no ${method}()`)
  }
  // Each transaction's tx gets its own session on a bound client (see BoundTransaction).
  const txSession = new NodePgSession(asClient(probe), dialect, undefined, {})
  if (Reflect.get(txSession, 'client') !== probe) throw unsupportedDrizzle('NodePgSession does not hold the client it was given')
  if (new NodePgTransaction(dialect, txSession, undefined)._.session !== txSession) {
    throw unsupportedDrizzle('NodePgTransaction does not run on the session it was given')
  }
}

/** Drizzle's own logger setting, as drizzle() turns it into the session's logger. */
function sessionOptions(logger: boolean | Logger | undefined): NodePgSessionOptions {
  if (logger === true) return { logger: new DefaultLogger() }
  return logger === undefined || logger === false ? {} : { logger }
}

/** `db.transaction`'s config → core's options: Drizzle's spelling is parsed here, the defaults are core's. */
function transactionOptions(config: PgTransactionConfig | undefined): TransactionOptions {
  if (config?.deferrable === true) {
    throw new UnsupportedError(
      'db.transaction(fn, { deferrable: true }) is not supported by @hyperconn/core yet. Leave deferrable out (PostgreSQL defaults to NOT DEFERRABLE).',
    )
  }
  const accessMode = config?.accessMode
  if (accessMode !== undefined && accessMode !== 'read only' && accessMode !== 'read write') {
    throw new InvalidOptionsError(`Unknown accessMode "${String(accessMode)}". Use "read only" or "read write".`)
  }
  const readOnly = accessMode === undefined ? undefined : accessMode === 'read only'
  return adapterTransactionOptions({ isolationLevel: config?.isolationLevel, readOnly }, 'db')
}

/** What every `tx` of one tenant database is built from: that database's dialect, schema and logger. */
interface TransactionShape<TSchema extends Record<string, unknown>> {
  readonly tenant: Tenant
  readonly dialect: PgDialect
  readonly schema: RelationalSchemaConfig<ExtractTablesWithRelations<TSchema>> | undefined
  readonly options: NodePgSessionOptions
}


/**
 * The `tx` of one transaction: a drizzle NodePgTransaction on its own session, whose client checks the
 * transaction's binding before each query. `tx.transaction(fn)` opens a savepoint through core and
 * hands `fn` this same `tx` (savepoints belong to the transaction). Drizzle's own version would send
 * SAVEPOINT through the client; core's 'nested' also serialises the parent's queries and tracks
 * failures. rollback() stays drizzle's: it throws TransactionRollbackError.
 */
class BoundTransaction<TSchema extends Record<string, unknown>> extends NodePgTransaction<
  TSchema,
  ExtractTablesWithRelations<TSchema>
> {
  readonly #tenant: Tenant
  readonly #binding: TransactionBinding

  constructor(shape: TransactionShape<TSchema>, binding: TransactionBinding) {
    const client = asClient(new TransactionQueryClient(shape.tenant, binding))
    super(shape.dialect, new NodePgSession(client, shape.dialect, shape.schema, shape.options), shape.schema)
    this.#tenant = shape.tenant
    this.#binding = binding
  }

  override transaction<T>(fn: (inner: DrizzleTransaction<TSchema>) => Promise<T>): Promise<T> {
    // Checked first: outside its transaction, 'nested' would BEGIN (or nest in) another one.
    const refused = this.#binding.refusal()
    if (refused !== undefined) return Promise.reject(refused)
    return this.#tenant.transaction(() => fn(this), adapterTransactionOptions({}, 'transaction'))
  }
}

/** The tenant-bound database: drizzle on a TenantQueryClient, with `transaction` routed to core. */
function createTenantDb<TSchema extends Record<string, unknown>>(
  tenant: Tenant,
  config: DrizzleConfig<TSchema>,
  options: NodePgSessionOptions,
): NodePgDatabase<TSchema> {
  const db: NodePgDatabase<TSchema> = drizzle({ ...config, client: asClient(new TenantQueryClient(tenant)) })
  const schema = db._.schema
  const shape: TransactionShape<TSchema> = {
    tenant,
    dialect: dialectOf(db),
    schema: schema === undefined ? undefined : { fullSchema: db._.fullSchema, schema, tableNamesMap: db._.tableNamesMap },
    options,
  }
  // async: a bad config rejects like every other transaction error instead of throwing synchronously.
  db.transaction = async <T>(fn: (tx: DrizzleTransaction<TSchema>) => Promise<T>, txConfig?: PgTransactionConfig): Promise<T> => {
    const txOptions = transactionOptions(txConfig)
    // One tx per transaction, bound when its callback is entered (a joined callback binds to the joined one).
    return await tenant.transaction(() => fn(new BoundTransaction(shape, bindActiveTransaction(tenant))), txOptions)
  }
  // Drizzle's migrate() (PgDialect.migrate) calls db.session.transaction, not db.transaction. On our client,
  // which is not a pool, drizzle's version would send BEGIN, the statements and COMMIT as separate
  // autocommit queries, each possibly on another pooled connection. Route it through core as well.
  db._.session.transaction = (fn, txConfig) => db.transaction(fn, txConfig)
  // Reads (as drizzle's withReplicas): the select builders and relational queries of a second instance on a
  // ReadQueryClient, which marks SELECTs without locking clauses { read: true }. Not `with` (a CTE may
  // write), `execute` (raw SQL) or the writes; a tx has its own session and is unaffected.
  const readDb: NodePgDatabase<TSchema> = drizzle({ ...config, client: asClient(new ReadQueryClient(tenant)) })
  for (const method of READ_METHODS) Reflect.set(db, method, (readDb[method] as (...args: unknown[]) => unknown).bind(readDb))
  Reflect.set(db, 'query', readDb.query)
  return db
}

const KNOWN_OPTIONS: ReadonlySet<string> = new Set(['service', 'schema', 'casing', 'logger', 'maxInstances'])

// drizzle() options a Drizzle user may carry over, and why each cannot apply here.
const REFUSED_OPTIONS: Readonly<Record<string, string>> = {
  client: 'queries run on the registry\'s pools',
  connection: 'connection strings come from the registry\'s secrets',
  cache: 'a query cache keyed on SQL text would be shared across tenants',
}

/**
 * Drizzle (node-postgres) on @hyperconn/core: `getDb(orgId)` returns a tenant-bound database whose
 * queries run on the registry's pool of that tenant and join the shared transaction context, so
 * Drizzle, Kysely and Knex work inside one transaction when they run in the same async context.
 */
export function createDrizzleAdapter<
  TSchema extends Record<string, unknown> = Record<string, never>,
  R extends Registry<any> = Registry,
>(registry: R, options: DrizzleAdapterOptions<TSchema, ServiceOf<R>>): DrizzleAdapter<TSchema> {
  validateAdapterOptions('createDrizzleAdapter', options, { known: KNOWN_OPTIONS, refused: REFUSED_OPTIONS })
  const { service, maxInstances } = options
  // Only keys that were given: drizzle's config detection and exactOptionalPropertyTypes both care.
  const config: DrizzleConfig<TSchema> = {}
  if (options.schema !== undefined) config.schema = options.schema
  if (options.casing !== undefined) config.casing = options.casing
  if (options.logger !== undefined) config.logger = options.logger
  assertDrizzleShape(config)
  const txSessionOptions = sessionOptions(options.logger)

  // registry.tenant() validates synchronously; a throw leaves nothing in the cache.
  const instances = new InstanceCache(
    (orgId) => createTenantDb(registry.tenant(orgId, service), config, txSessionOptions),
    maxInstances,
  )
  return Object.freeze({ getDb: (orgId: string) => instances.get(orgId) })
}
