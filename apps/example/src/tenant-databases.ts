import type { Registry } from '@hyperconn/core'
import { SHOP_SERVICE } from './shop-registry.js'

/** Runs one SQL statement: `tenant.query` in the app, a plain pg client in tests. */
export type SqlExecutor = (text: string, values?: unknown[]) => Promise<unknown>

/**
 * The schema of every tenant database. Idempotent, so it runs at every start-up; a real project would use
 * a migration tool, but plain SQL keeps the example about the ORMs sharing one transaction.
 */
const MIGRATION = [
  `CREATE TABLE IF NOT EXISTS inventory (
     sku      text PRIMARY KEY,
     name     text NOT NULL,
     quantity integer NOT NULL CHECK (quantity >= 0)
   )`,
  `CREATE TABLE IF NOT EXISTS orders (
     id         integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
     customer   text NOT NULL,
     items      jsonb NOT NULL,
     created_at timestamptz NOT NULL DEFAULT now()
   )`,
  `CREATE TABLE IF NOT EXISTS audit_log (
     id         integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
     action     text NOT NULL,
     order_id   integer,
     details    jsonb NOT NULL,
     created_at timestamptz NOT NULL DEFAULT now()
   )`,
]

export interface CatalogueEntry {
  sku: string
  name: string
  quantity: number
}

const DEFAULT_CATALOGUE: readonly CatalogueEntry[] = [
  { sku: 'anvil', name: 'Anvil (1 t)', quantity: 10 },
  { sku: 'rocket-skates', name: 'Rocket skates', quantity: 5 },
  { sku: 'giant-magnet', name: 'Giant magnet', quantity: 3 },
]

/** Different stock per tenant, so a leak between tenants would show up in the numbers. */
const CATALOGUES: Readonly<Record<string, readonly CatalogueEntry[]>> = {
  acme: DEFAULT_CATALOGUE,
  globex: [
    { sku: 'anvil', name: 'Anvil (budget)', quantity: 40 },
    { sku: 'doomsday-device', name: 'Doomsday device', quantity: 2 },
    { sku: 'hammock', name: 'Hammock', quantity: 25 },
  ],
  initech: [
    { sku: 'stapler', name: 'Red Swingline stapler', quantity: 1 },
    { sku: 'tps-cover', name: 'TPS report cover sheet', quantity: 500 },
  ],
}

export function catalogueFor(orgId: string): readonly CatalogueEntry[] {
  return CATALOGUES[orgId] ?? DEFAULT_CATALOGUE
}

export async function migrateTenantDatabase(exec: SqlExecutor): Promise<void> {
  // Several app instances may start at once against the same database: one migrates, the others wait.
  await exec(`SELECT pg_advisory_xact_lock(hashtext('hyperconn-example-migration'))`)
  for (const statement of MIGRATION) await exec(statement)
}

/** Adds missing catalogue items; existing stock is left alone, so a restart does not refill the shelves. */
export async function seedTenantDatabase(exec: SqlExecutor, orgId: string): Promise<void> {
  for (const item of catalogueFor(orgId)) {
    await exec('INSERT INTO inventory (sku, name, quantity) VALUES ($1, $2, $3) ON CONFLICT (sku) DO NOTHING', [
      item.sku,
      item.name,
      item.quantity,
    ])
  }
}

/**
 * Migrates (and optionally seeds) every tenant through the registry, i.e. with the URL from the tenant's
 * own secret — the same path in local and in real AWS mode. One transaction per tenant.
 */
export async function prepareTenantDatabases(
  registry: Registry,
  orgIds: readonly string[],
  options: { seed: boolean },
): Promise<void> {
  await Promise.all(
    orgIds.map((orgId) => {
      const tenant = registry.tenant(orgId, SHOP_SERVICE)
      const exec: SqlExecutor = (text, values) => tenant.query(text, values)
      return tenant.transaction(async () => {
        await migrateTenantDatabase(exec)
        if (options.seed) await seedTenantDatabase(exec, orgId)
      })
    }),
  )
}
