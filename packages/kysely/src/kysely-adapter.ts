import type { Registry, ServiceOf, Tenant } from '@hyperconn/core'
import { InvalidOptionsError } from '@hyperconn/core'
import { InstanceCache, validateAdapterOptions } from '@hyperconn/core/adapter'
import { Kysely, Migrator, Transaction } from 'kysely'
import type { KyselyConfig, KyselyPlugin, LogConfig, MigratorProps } from 'kysely'
import { TenantDialect, TenantDriver } from './kysely-driver.js'
import { TenantKysely } from './tenant-kysely.js'

/** Options of `createKyselyAdapter`; `TService` is the registry's union of service names. */
export interface KyselyAdapterOptions<TService extends string = string> {
  /** The registry service whose databases this adapter queries (one of `createRegistry({ services })`). */
  readonly service: TService
  /** Kysely plugins installed on every tenant's instance (e.g. `CamelCasePlugin`). */
  readonly plugins?: KyselyPlugin[]
  /** Kysely's `log` option: levels to log, or a function called for each query. */
  readonly log?: LogConfig
  /** How many tenant instances `getDb` keeps (least recently used are dropped; they own no connections). Default 1000. */
  readonly maxInstances?: number
}

/** What `createKyselyAdapter` returns. */
export interface KyselyAdapter<DB> {
  /**
   * The Kysely database of one org: synchronous and cached. The org id is validated now (InvalidTenantIdError);
   * its secret and pool are resolved by the first query, which rejects if that fails.
   */
  getDb(orgId: string): Kysely<DB>
  /**
   * Kysely's `Migrator` for one org: `new Migrator({ ...props, db: getDb(orgId) })`, and when the service
   * isolates by schema (`isolation: { schema }`), `migrationTableSchema` defaults to the tenant's schema, so
   * its `kysely_migration` tables are the tenant's own (Kysely would otherwise find another tenant's).
   */
  migrator(orgId: string, props: TenantMigratorProps): Migrator
}

/** Kysely's `MigratorProps` without `db`, which `migrator(orgId, props)` fills in. */
export type TenantMigratorProps = Omit<MigratorProps, 'db'>

// The adapter subclasses these and relies on their methods (see the README's "Kysely internals"); fail
// at setup rather than on the first transaction if a Kysely release changed them.
const REQUIRED_METHODS: ReadonlyArray<readonly [string, object, readonly string[]]> = [
  [
    'Kysely',
    Kysely.prototype,
    ['transaction', 'startTransaction', 'connection', 'withPlugin', 'withoutPlugins', 'withSchema', 'withTables', 'destroy', 'getExecutor'],
  ],
  ['Transaction', Transaction.prototype, ['transaction', 'withPlugin', 'withoutPlugins', 'withSchema', 'withTables']],
]

function assertSupportedKysely(): void {
  for (const [name, prototype, methods] of REQUIRED_METHODS) {
    const missing = methods.filter((method) => typeof Reflect.get(prototype, method) !== 'function')
    if (missing.length > 0) {
      throw new InvalidOptionsError(
        `@hyperconn/kysely does not support this version of kysely: ${name}.prototype lacks ${missing.join(', ')}. ` +
          'Install a kysely version within the peerDependencies range of @hyperconn/kysely.',
      )
    }
  }
}

const KNOWN_OPTIONS: ReadonlySet<string> = new Set(['service', 'plugins', 'log', 'maxInstances'])

// Kysely / PostgresDialect options a Kysely user may carry over, and why each cannot apply here.
const REFUSED_OPTIONS: Readonly<Record<string, string>> = {
  dialect: 'the adapter provides its own PostgreSQL dialect on the registry\'s pools',
  pool: 'connections come from the registry\'s pools; configure them with createRegistry({ pool })',
}

function createDb<DB>(tenant: Tenant, options: KyselyAdapterOptions): Kysely<DB> {
  const driver = new TenantDriver(tenant)
  const dialect = new TenantDialect(driver)
  const config: { -readonly [K in keyof KyselyConfig]: KyselyConfig[K] } = { dialect }
  if (options.plugins !== undefined) config.plugins = [...options.plugins]
  if (options.log !== undefined) config.log = options.log
  // Kysely builds the executor (plugins, logging, lazy driver init); every routed instance reuses it.
  const executor = new Kysely<DB>(config).getExecutor()
  return new TenantKysely<DB>({ tenant, props: { config, dialect, driver, executor } }, executor)
}

/**
 * Kysely for every org of one registry service. All instances run on the registry's pools and share
 * core's transaction context: inside `db.transaction().execute(fn)`, `tenant.transaction(fn)` or any
 * other adapter's transaction, `getDb(orgId)` queries run in that transaction without passing `trx` down.
 * `service` is typed from the registry; with an explicit `DB` also pass `typeof registry`
 * (`createKyselyAdapter<DB, typeof registry>(...)`), else any service name compiles.
 */
export function createKyselyAdapter<DB, R extends Registry<any> = Registry>(
  registry: R,
  options: KyselyAdapterOptions<ServiceOf<R>>,
): KyselyAdapter<DB> {
  assertSupportedKysely()
  validateAdapterOptions('createKyselyAdapter', options, { known: KNOWN_OPTIONS, refused: REFUSED_OPTIONS })
  const { service, maxInstances } = options
  const cache = new InstanceCache<Kysely<DB>>(
    // registry.tenant validates org id and service synchronously; nothing is cached or fetched if it throws.
    (orgId) => createDb<DB>(registry.tenant(orgId, service), options),
    maxInstances,
  )
  const getDb = (orgId: string): Kysely<DB> => cache.get(orgId)
  const migrator = (orgId: string, props: TenantMigratorProps): Migrator => {
    if (typeof props !== 'object' || props === null) {
      throw new InvalidOptionsError('migrator(orgId, props): props must be Kysely\'s MigratorProps without db, e.g. { provider }.')
    }
    const db = getDb(orgId)
    // Kysely looks for its migration table in every schema; with a schema per tenant it must be told which one.
    const schema = props.migrationTableSchema ?? registry.tenant(orgId, service).schema
    return new Migrator(schema === undefined ? { ...props, db } : { ...props, db, migrationTableSchema: schema })
  }
  return Object.freeze({ getDb, migrator })
}
