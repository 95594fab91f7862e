import { InstanceCache, InvalidOptionsError, isInTransaction, TransactionClosedError } from '@hyperconn/core'
import type { Registry, Tenant, TransactionOptions } from '@hyperconn/core'
import { is } from 'drizzle-orm'
import type { Casing, DrizzleConfig, ExtractTablesWithRelations, Logger } from 'drizzle-orm'
import { drizzle, NodePgSession, NodePgTransaction } from 'drizzle-orm/node-postgres'
import type { NodePgClient, NodePgDatabase } from 'drizzle-orm/node-postgres'
import { PgDialect } from 'drizzle-orm/pg-core'
import type { PgTransactionConfig } from 'drizzle-orm/pg-core'
import type { QueryConfig, QueryResult } from 'pg'

export interface DrizzleAdapterOptions<TSchema extends Record<string, unknown> = Record<string, never>> {
  /** Service whose connection string (`<service>-postgresql` in the tenant's secret) this adapter uses. */
  service: string
  /** Drizzle schema (tables and relations); enables `db.query.<table>` relational queries. */
  schema?: TSchema
  /** Passed to drizzle: column name casing. */
  casing?: Casing
  /** Passed to drizzle: `true` for drizzle's console logger, or your own `Logger`. */
  logger?: boolean | Logger
  /** How many tenant-bound instances `getDb` keeps (least recently used are dropped). Default 1000. */
  maxInstances?: number
}

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
    return this.#tenant.query(config, values)
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

function outsideTransaction(tenant: Tenant): TransactionClosedError {
  return new TransactionClosedError(
    `this Drizzle transaction object (tx) of service "${tenant.service}", org "${tenant.orgId}" was used outside its transaction ` +
      '(the transaction has ended, or this code does not run inside its callback); use getDb(orgId) for work outside it',
  )
}

/**
 * The client of the `tx` object. Same routing as TenantQueryClient, but it refuses to autocommit:
 * a tx used where no transaction of its tenant is active (after it ended, or stashed and used
 * elsewhere) rejects with TransactionClosedError instead of silently running outside it.
 */
class TransactionQueryClient extends TenantQueryClient {
  readonly #tenant: Tenant

  constructor(tenant: Tenant) {
    super(tenant)
    this.#tenant = tenant
  }

  override query(config: QueryInput, values?: unknown[]): Promise<QueryResult> {
    if (!isInTransaction(this.#tenant)) return Promise.reject(outsideTransaction(this.#tenant))
    return super.query(config, values)
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
  dialectOf(db)
  if (typeof db.transaction !== 'function' || !Object.isExtensible(db)) throw unsupportedDrizzle('db.transaction cannot be replaced')
  const proto: unknown = NodePgTransaction.prototype
  for (const method of ['rollback', 'setTransaction', 'transaction']) {
    if (typeof Reflect.get(proto as object, method) !== 'function') throw unsupportedDrizzle(`NodePgTransaction has no ${method}()`)
  }
}

const NESTED: TransactionOptions = Object.freeze({ propagation: 'nested' })

/** Drizzle's transaction config → core's options. Only translation here; propagation policy is core's. */
function transactionOptions(config: PgTransactionConfig | undefined): TransactionOptions {
  const options: TransactionOptions = { propagation: 'required' }
  if (config === undefined) return options
  if (config.deferrable === true) {
    throw new InvalidOptionsError(
      'db.transaction(fn, { deferrable: true }) is not supported by @hyperconn/core yet. Leave deferrable out (PostgreSQL defaults to NOT DEFERRABLE).',
    )
  }
  if (config.isolationLevel !== undefined) {
    // PostgreSQL runs READ UNCOMMITTED exactly as READ COMMITTED; core only knows the latter.
    options.isolationLevel = config.isolationLevel === 'read uncommitted' ? 'read committed' : config.isolationLevel
  }
  if (config.accessMode !== undefined) {
    if (config.accessMode !== 'read only' && config.accessMode !== 'read write') {
      throw new InvalidOptionsError(`Unknown accessMode "${String(config.accessMode)}". Use "read only" or "read write".`)
    }
    // Left out when not given: readOnly false would refuse to join an active read-only transaction.
    options.readOnly = config.accessMode === 'read only'
  }
  return options
}

/**
 * One `tx` object per tenant, shared by every transaction and savepoint of that tenant: it carries
 * no connection, its queries find the transaction through the async context. Built on a second
 * drizzle session whose client is a TransactionQueryClient.
 */
function createTransactionHandle<TSchema extends Record<string, unknown>>(
  tenant: Tenant,
  config: DrizzleConfig<TSchema>,
): DrizzleTransaction<TSchema> {
  const txDb = drizzle({ ...config, client: asClient(new TransactionQueryClient(tenant)) })
  const schema = txDb._.schema
  const tx = new NodePgTransaction<TSchema, ExtractTablesWithRelations<TSchema>>(
    dialectOf(txDb),
    txDb._.session,
    schema === undefined ? undefined : { fullSchema: txDb._.fullSchema, schema, tableNamesMap: txDb._.tableNamesMap },
  )
  // Drizzle's own version sends SAVEPOINT through the client; core's 'nested' also serialises the
  // parent's queries and tracks failures. rollback() stays drizzle's: it throws TransactionRollbackError.
  tx.transaction = <T>(fn: (inner: DrizzleTransaction<TSchema>) => Promise<T>): Promise<T> => {
    // Without this check, 'nested' would BEGIN a fresh transaction for a tx used outside its own.
    if (!isInTransaction(tenant)) return Promise.reject(outsideTransaction(tenant))
    return tenant.transaction(() => fn(tx), NESTED)
  }
  return tx
}

/** The tenant-bound database: drizzle on a TenantQueryClient, with `transaction` routed to core. */
function createTenantDb<TSchema extends Record<string, unknown>>(
  tenant: Tenant,
  config: DrizzleConfig<TSchema>,
): NodePgDatabase<TSchema> {
  const db: NodePgDatabase<TSchema> = drizzle({ ...config, client: asClient(new TenantQueryClient(tenant)) })
  // Built on first use: tenants that never open a transaction don't pay for a second session.
  let tx: DrizzleTransaction<TSchema> | undefined
  // async: a bad config rejects like every other transaction error instead of throwing synchronously.
  db.transaction = async <T>(fn: (tx: DrizzleTransaction<TSchema>) => Promise<T>, txConfig?: PgTransactionConfig): Promise<T> => {
    const options = transactionOptions(txConfig)
    const handle = (tx ??= createTransactionHandle(tenant, config))
    return await tenant.transaction(() => fn(handle), options)
  }
  return db
}

/**
 * Drizzle (node-postgres) on @hyperconn/core: `getDb(orgId)` returns a tenant-bound database whose
 * queries run on the registry's pool of that tenant and join the shared transaction context, so
 * Drizzle, Kysely and Knex work inside one transaction when they run in the same async context.
 */
export function createDrizzleAdapter<TSchema extends Record<string, unknown> = Record<string, never>>(
  registry: Registry,
  options: DrizzleAdapterOptions<TSchema>,
): DrizzleAdapter<TSchema> {
  const { service, maxInstances } = options
  if (typeof service !== 'string' || service === '') {
    throw new InvalidOptionsError('createDrizzleAdapter(registry, { service }): service must be one of the registry\'s services.')
  }
  if (maxInstances !== undefined && (!Number.isSafeInteger(maxInstances) || maxInstances < 1)) {
    throw new InvalidOptionsError('createDrizzleAdapter: maxInstances must be a positive integer.')
  }
  // Only keys that were given: drizzle's config detection and exactOptionalPropertyTypes both care.
  const config: DrizzleConfig<TSchema> = {}
  if (options.schema !== undefined) config.schema = options.schema
  if (options.casing !== undefined) config.casing = options.casing
  if (options.logger !== undefined) config.logger = options.logger
  assertDrizzleShape(config)

  // registry.tenant() validates synchronously; a throw leaves nothing in the cache.
  const instances = new InstanceCache((orgId) => createTenantDb(registry.tenant(orgId, service), config), maxInstances)
  return Object.freeze({ getDb: (orgId: string) => instances.get(orgId) })
}
