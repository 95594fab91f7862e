import pg from 'pg'

/**
 * Pricing, schema per tenant: in the stores database, every store has a schema holding its `prices`
 * table. The registry's `isolation: { schema: pricingSchemaOf }` points each checkout's `search_path` at
 * the store's schema, so the app's queries name `prices` unqualified.
 *
 * The name is quoted wherever it is used (core quotes it in `search_path` too), so `org_<orgId>` is
 * exact and case-sensitive: two org ids never share a schema. Org ids of more than 59 characters would
 * exceed PostgreSQL's 63-byte identifiers; core then refuses the tenant rather than truncate the name.
 */
export const pricingSchemaOf = (orgId: string): string => `org_${orgId}`

export interface PriceEntry {
  sku: string
  name: string
  priceCents: number
}

/** Each store's price list names the store, so a row served to the wrong tenant would show. */
export function priceListFor(orgId: string): readonly PriceEntry[] {
  return [
    { sku: 'house-blend', name: `${orgId} house blend`, priceCents: 450 },
    { sku: 'mug', name: `${orgId} mug`, priceCents: 1_200 },
  ]
}

/**
 * The SQL that onboards one store: its schema, its table, its price list. Idempotent. Run by the role
 * the app connects as (it owns the schemas it creates).
 *
 * `org_id` is redundant in a schema of its own; it is there so that the demo and the tests can count
 * rows of another tenant. The bounded column lengths keep every row small enough that PostgreSQL
 * creates no TOAST table (and its index) for it: with hundreds of schemas, that halves the files to
 * create per tenant.
 */
export function pricingSchemaSql(orgId: string): string {
  const schema = pg.escapeIdentifier(pricingSchemaOf(orgId))
  const rows = priceListFor(orgId)
    .map((p) => `(${pg.escapeLiteral(p.sku)}, ${pg.escapeLiteral(p.name)}, ${p.priceCents}, ${pg.escapeLiteral(orgId)})`)
    .join(', ')
  return `CREATE SCHEMA IF NOT EXISTS ${schema};
CREATE TABLE IF NOT EXISTS ${schema}.prices (
  sku         varchar(64) PRIMARY KEY,
  name        varchar(200) NOT NULL,
  price_cents integer NOT NULL CHECK (price_cents >= 0),
  org_id      varchar(64) NOT NULL
);
INSERT INTO ${schema}.prices (sku, name, price_cents, org_id) VALUES ${rows} ON CONFLICT (sku) DO NOTHING;`
}

/** Stores per statement: a few hundred schemas then take a few round trips, not a thousand. */
const STORES_PER_BATCH = 100

/**
 * Onboards many stores in a few multi-statement queries (each one runs as one implicit transaction).
 * `exec` runs plain SQL text: the statements carry no bind parameters.
 */
export async function createPricingSchemas(exec: (sql: string) => Promise<unknown>, orgIds: readonly string[]): Promise<void> {
  for (let start = 0; start < orgIds.length; start += STORES_PER_BATCH) {
    await exec(orgIds.slice(start, start + STORES_PER_BATCH).map(pricingSchemaSql).join('\n'))
  }
}
