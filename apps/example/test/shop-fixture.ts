import { adminUrl } from '@hyperconn/testkit/vitest'
import pg from 'pg'
import { createShopApp } from '../src/shop-app.js'
import type { ShopApp } from '../src/shop-app.js'
import { startShopEnvironment } from '../src/shop-environment.js'
import type { ShopEnvironment } from '../src/shop-environment.js'
import type { FakeSecretsManager } from '@hyperconn/testkit'
import { seedTenantDatabase } from '../src/tenant-databases.js'

export const PROJECT = 'shop'

/**
 * The app exactly as main.ts and the demo build it, on the test run's PostgreSQL: one database per tenant
 * (createTestDatabase(adminUrl(), …) with a login role each), secrets behind a fake Secrets Manager read
 * through the real AWS SDK; optionally stores on the shared stores database. Plus superuser pools per
 * database to check what really got written.
 */
export interface ShopFixture {
  readonly env: ShopEnvironment
  readonly app: ShopApp
  readonly secretsManager: FakeSecretsManager
  /** Errors behind 5xx answers (and every other handler error), oldest first; tests may clear it. */
  readonly handlerErrors: unknown[]
  /** Superuser access to one tenant's database, bypassing the app. */
  sql<R extends pg.QueryResultRow = any>(orgId: string, text: string, values?: unknown[]): Promise<R[]>
  /** Superuser access to the stores database (row-level security does not apply to it). */
  storesSql<R extends pg.QueryResultRow = any>(text: string, values?: unknown[]): Promise<R[]>
  /** Empties orders and audit log and restores the seeded stock. */
  reset(orgId: string): Promise<void>
  close(): Promise<void>
}

export async function startShopFixture(
  tenants: readonly string[],
  options: { sharedTenants?: readonly string[]; migrateStores?: boolean } = {},
): Promise<ShopFixture> {
  const env = await startShopEnvironment(
    {
      mode: 'local',
      adminUrl: adminUrl(),
      project: PROJECT,
      tenants,
      seed: true,
      ...(options.sharedTenants === undefined ? {} : { sharedTenants: options.sharedTenants }),
    },
    options.migrateStores === undefined ? {} : { migrateStores: options.migrateStores },
  )
  const local = env.local
  if (local === undefined) throw new Error('expected a local environment')
  const pools = new Map<string, pg.Pool>()
  for (const database of local.databases) pools.set(database.orgId, new pg.Pool({ connectionString: database.adminUrl, max: 2 }))
  const storesPool = local.shared === undefined ? undefined : new pg.Pool({ connectionString: local.shared.adminUrl, max: 2 })
  const app = createShopApp({ registry: env.registry, telemetry: env.telemetry })
  const handlerErrors: unknown[] = []
  app.http.addHook('onError', async (_request, _reply, error) => {
    handlerErrors.push(error)
  })
  await app.http.ready()

  const sql = async <R extends pg.QueryResultRow>(orgId: string, text: string, values?: unknown[]): Promise<R[]> => {
    const pool = pools.get(orgId)
    if (pool === undefined) throw new Error(`no test database for ${orgId}`)
    return (await pool.query<R>(text, values)).rows
  }
  const storesSql = async <R extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<R[]> => {
    if (storesPool === undefined) throw new Error('no stores database: pass sharedTenants to startShopFixture')
    return (await storesPool.query<R>(text, values)).rows
  }
  return {
    env,
    app,
    secretsManager: local.secretsManager,
    handlerErrors,
    sql,
    storesSql,
    reset: async (orgId) => {
      await sql(orgId, 'TRUNCATE orders, audit_log RESTART IDENTITY')
      await sql(orgId, 'DELETE FROM inventory')
      await seedTenantDatabase((text, values) => sql(orgId, text, values), orgId)
    },
    close: async () => {
      await app.close()
      await Promise.all([...pools.values(), ...(storesPool === undefined ? [] : [storesPool])].map((pool) => pool.end()))
      await env.close() // registry, fake Secrets Manager, tenant databases, the stores database, their roles
    },
  }
}
