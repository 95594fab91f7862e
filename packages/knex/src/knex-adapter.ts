import knex from 'knex'
import type { Knex } from 'knex'
import { InvalidOptionsError } from '@hyperconn/core'
import { InstanceCache, validateAdapterOptions } from '@hyperconn/core/adapter'
import type { Registry, ServiceOf, Tenant } from '@hyperconn/core'
import { CLIENT_BINDING, TenantKnexClient } from './knex-client.js'
import type { ClientBinding, KnexTransactionHandle, TenantKnexConfig } from './knex-client.js'
import { transactionProviderUnsupported } from './knex-errors.js'
import { assertKnexShape } from './knex-internals.js'
import type { KnexPgClient } from './knex-internals.js'
import { runKnexTransaction } from './knex-transaction.js'

/**
 * Options of `createKnexAdapter`; `TService` is the registry's union of service names. The knex options
 * listed here are passed to knex as they are; those about clients, connections and pools are refused.
 */
export interface KnexAdapterOptions<TService extends string = string> {
  /** The registry service whose connection strings this adapter uses (one of `createRegistry({ services })`). */
  service: TService
  /** How many tenant-bound knex instances to keep (least recently used are dropped; they own nothing). Default 1000. */
  maxInstances?: number
  /**
   * PostgreSQL server version knex assumes instead of querying it (it only gates features of very old
   * servers). Default '14.0'.
   */
  version?: string
  /** knex's `wrapIdentifier`: how identifiers are quoted (e.g. camelCase to snake_case). */
  wrapIdentifier?: Knex.Config['wrapIdentifier']
  /** knex's `postProcessResponse`: transforms every result (e.g. snake_case to camelCase keys). */
  postProcessResponse?: Knex.Config['postProcessResponse']
  /** knex's logger (its own warnings and deprecations). */
  log?: Knex.Logger
  debug?: boolean
  asyncStackTraces?: boolean
  compileSqlOnError?: boolean
  useNullAsDefault?: boolean
  /**
   * knex's `migrations` config (`directory`, `tableName`, `schemaName`, `loadExtensions`, `migrationSource`,
   * `disableTransactions`, ...): the defaults of `getDb(orgId).migrate.*`, which also take a config per call.
   * Every query of a migration run goes through core, on the tenant's connections and transactions.
   */
  migrations?: Knex.MigratorConfig
  /** knex's `seeds` config (`directory`, `loadExtensions`, `seedSource`, ...): defaults of `getDb(orgId).seed.run()`. */
  seeds?: Knex.SeederConfig
}

/** What `createKnexAdapter` returns. */
export interface KnexAdapter {
  /**
   * The knex instance of one tenant, cached. Synchronous: the org id is validated here (InvalidTenantIdError),
   * the secret and pool are resolved on the first query, whose promise carries any error doing so.
   */
  getDb(orgId: string): Knex
}

const DEFAULT_SERVER_VERSION = '14.0'

const PASSTHROUGH_OPTIONS = [
  'wrapIdentifier',
  'postProcessResponse',
  'log',
  'debug',
  'asyncStackTraces',
  'compileSqlOnError',
  'useNullAsDefault',
  'migrations',
  'seeds',
] as const

// Options a knex user may carry over, and why each cannot apply here.
const REFUSED_OPTIONS: Readonly<Record<string, string>> = {
  client: 'the adapter provides its own PostgreSQL client',
  dialect: 'the adapter provides its own PostgreSQL client',
  connection: 'connection strings come from the registry\'s secrets',
  connectionPool: 'connections come from the registry\'s pools',
  pool: 'configure pools with createRegistry({ pool })',
  acquireConnectionTimeout: 'configure it as createRegistry({ pool: { connectionTimeoutMillis } })',
  searchPath:
    'a session search_path would leak to every adapter sharing the pooled connection; use .withSchema() or schema-qualified names',
}

const KNOWN_OPTIONS: ReadonlySet<string> = new Set(['service', 'maxInstances', 'version', ...PASSTHROUGH_OPTIONS])

function validateOptions(options: KnexAdapterOptions): void {
  validateAdapterOptions('createKnexAdapter', options, { known: KNOWN_OPTIONS, refused: REFUSED_OPTIONS })
  if (options.version !== undefined && !Number.isFinite(Number.parseFloat(options.version))) {
    throw new InvalidOptionsError('createKnexAdapter: version must be a PostgreSQL version such as "16.4".')
  }
  for (const key of ['migrations', 'seeds'] as const) {
    const value: unknown = options[key]
    if (value !== undefined && (typeof value !== 'object' || value === null || Array.isArray(value))) {
      throw new InvalidOptionsError(`createKnexAdapter: ${key} must be knex's ${key} config object (e.g. { directory: './${key}' }).`)
    }
  }
}

function baseConfig(options: KnexAdapterOptions): Knex.Config {
  const config: Record<string, unknown> = { version: options.version ?? DEFAULT_SERVER_VERSION }
  for (const key of PASSTHROUGH_OPTIONS) {
    if (options[key] !== undefined) config[key] = options[key]
  }
  return config as Knex.Config
}

const FORWARDED_EVENTS = ['query', 'query-error', 'query-response', 'start'] as const

/**
 * Knex adapter: `getDb(orgId)` returns a knex instance whose queries run on the registry's pool of that
 * tenant, or in the tenant's active transaction when the async context has one (whichever adapter or
 * `tenant.transaction` started it). `db.transaction(fn)` starts or joins one through core.
 */
export function createKnexAdapter<R extends Registry<any>>(registry: R, options: KnexAdapterOptions<ServiceOf<R>>): KnexAdapter {
  validateOptions(options)
  assertKnexShape()
  const service = options.service
  const config = baseConfig(options)

  const create = (binding: ClientBinding): Knex => {
    const tenantConfig: TenantKnexConfig = {
      ...config,
      // knex accepts a Client class here and passes this config to its constructor.
      client: TenantKnexClient as unknown as typeof Knex.Client,
      [CLIENT_BINDING]: binding,
    }
    return knex(tenantConfig)
  }

  const makeTransactionKnex = (handle: KnexTransactionHandle, parent: Knex): Knex => {
    const parentClient = parent.client as KnexPgClient & { tenant: Tenant }
    return create({ tenant: parentClient.tenant, transaction: handle, parent: parentClient })
  }

  const decorate = (db: Knex, tenant: Tenant): Knex => {
    const context = (db as unknown as { context: Record<string, unknown> }).context
    context.transaction = (scope?: unknown, transactionConfig?: unknown) =>
      runKnexTransaction(tenant, makeTransactionKnex, db, undefined, scope, transactionConfig)
    context.transactionProvider = () => {
      throw transactionProviderUnsupported()
    }
    // knex's own clone copies the client field by field, which a class with private state cannot survive.
    context.withUserParams = (params: Record<string, any>) => {
      const clone = decorate(create({ tenant }), tenant)
      for (const event of FORWARDED_EVENTS) {
        for (const listener of db.listeners(event)) clone.on(event, listener as (...args: any[]) => void)
      }
      clone.userParams = params
      return clone
    }
    return db
  }

  const instances = new InstanceCache<Knex>((orgId) => {
    // Throws synchronously for an invalid org id or unknown service; nothing is fetched or created.
    const tenant = registry.tenant(orgId, service)
    return decorate(create({ tenant }), tenant)
  }, options.maxInstances)

  return Object.freeze({ getDb: (orgId: string) => instances.get(orgId) })
}
