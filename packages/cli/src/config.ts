import type { MigrationRegistry, Tenant } from '@hyperconn/core'

/**
 * What the CLI needs of a registry: `createRegistry()`'s `Registry` has all of it. `listTenants` is needed
 * for `--tenants all` (the default) and `close` is called at the end of the run.
 */
export interface CliRegistry<TService extends string = string> extends MigrationRegistry<TService> {
  /** Called once the run ends (`registry.close()`). */
  close?(): Promise<unknown>
}

/** Which tenants to migrate when `--tenants` is not given: `'all'` = `registry.listTenants(service)`. */
export type TenantSource = 'all' | readonly string[] | Iterable<string> | AsyncIterable<string>

/** The second argument of the config's `migrate`. */
export interface MigrateContext<TService extends string = string> {
  /**
   * The tenant being migrated. Its queries (and those of every adapter for this org) run on the connection
   * that holds the tenant's migration lock.
   */
  readonly tenant: Tenant<TService>
}

/** What every config shape has besides how it provides the registry. */
export interface ConfigBase<TService extends string> {
  /** The service whose databases or schemas are migrated. Needed when the registry has several; `--service` overrides it. */
  service?: TService
  /**
   * Migrates one tenant, e.g. Drizzle `migrate(getDb(orgId), { migrationsFolder })`, Kysely
   * `new Migrator({ db: getDb(orgId), provider }).migrateToLatest()` (throw if it reports an error),
   * `getDb(orgId).migrate.latest()`. Runs inside `tenant.connection()`, holding the tenant's advisory lock.
   * Reject to mark the tenant as failed; the other tenants go on.
   */
  migrate: (orgId: string, context: MigrateContext<TService>) => Promise<unknown>
  /** Tenants migrated at once when `--concurrency` is not given (default 4; each holds one connection). */
  concurrency?: number
  /** When another runner holds a tenant's migration lock: `'skip'` it (default) or `'wait'` for it. `--when-locked` overrides it. */
  whenLocked?: 'skip' | 'wait'
  /** The tenants when `--tenants` is not given. Default `'all'`. */
  tenants?: TenantSource
}

/**
 * The module given to `hyperconn migrate --config <file>` exports this, as its default export or as named
 * exports: the registry (or a function creating it) and the function that migrates one tenant.
 */
export type HyperconnConfig<TService extends string = string> = ConfigBase<TService> &
  (
    | {
        /** The registry whose tenants are migrated. The CLI closes it at the end of the run. */
        registry: CliRegistry<TService>
        createRegistry?: never
      }
    | {
        /** Creates the registry (called once per run). The CLI closes it at the end of the run. */
        createRegistry: () => CliRegistry<TService> | Promise<CliRegistry<TService>>
        registry?: never
      }
  )

/**
 * Types a config module for `hyperconn migrate` and returns it unchanged:
 *
 * ```ts
 * // hyperconn.config.ts
 * import { defineConfig } from '@hyperconn/cli'
 * export default defineConfig({
 *   createRegistry: () => createRegistry({ project: 'acme', services: ['core'], secrets: awsSecretsManager() }),
 *   service: 'core',
 *   migrate: (orgId) => migrate(getDb(orgId), { migrationsFolder: './drizzle' }),
 * })
 * ```
 */
export function defineConfig<TService extends string = string>(config: HyperconnConfig<TService>): HyperconnConfig<TService> {
  return config
}
