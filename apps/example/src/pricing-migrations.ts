import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { migrateTenants } from '@hyperconn/core'
import type { MigrationReport, Registry, Tenant } from '@hyperconn/core'
import { PRICING_SERVICE } from './shop-registry.js'
import { applySqlMigrations, readSqlMigrations } from './sql-migrations.js'
import type { SqlMigration } from './sql-migrations.js'

/** The pricing service's migrations, applied to every store's schema `org_<orgId>`. */
export const PRICING_MIGRATIONS_DIR = join(dirname(fileURLToPath(import.meta.url)), '../migrations/pricing')

/** Stores migrated at once: each holds one connection of the pricing pool (5) while it runs. */
export const STORE_MIGRATION_CONCURRENCY = 4

let migrations: Promise<SqlMigration[]> | undefined

/**
 * Migrates one store: the `migrate` of `migrateTenants` and of `hyperconn.config.ts`. Runs on the
 * connection holding the store's migration lock; the folder is read once per process.
 */
export async function migrateStore(_orgId: string, { tenant }: { readonly tenant: Tenant }): Promise<string[]> {
  migrations ??= readSqlMigrations(PRICING_MIGRATIONS_DIR)
  return applySqlMigrations(tenant, await migrations)
}

/**
 * Migrates the stores' pricing schemas in this process (what `pnpm start` and the tests do at start-up;
 * `pnpm demo` runs the `hyperconn` CLI instead). Resolves with the report; one store's failure does not
 * stop the others.
 */
export function migrateStores(registry: Registry, orgIds: readonly string[], signal?: AbortSignal): Promise<MigrationReport> {
  return migrateTenants(registry, {
    service: PRICING_SERVICE,
    tenants: orgIds,
    concurrency: STORE_MIGRATION_CONCURRENCY,
    migrate: migrateStore,
    ...(signal === undefined ? {} : { signal }),
  })
}
