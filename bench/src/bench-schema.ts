import { integer, pgTable, serial, text } from 'drizzle-orm/pg-core'
import type { Generated } from 'kysely'

/** The one table scenarios 2 and 3 read and write, seen by each ORM. */
export const TABLE = 'bench_items'
export const SEED_ROWS = 10_000

export const items = pgTable(TABLE, {
  id: serial('id').primaryKey(),
  org: text('org').notNull(),
  name: text('name').notNull(),
  n: integer('n').notNull(),
})

export const drizzleSchema = { items }

export interface KyselyDatabase {
  bench_items: { id: Generated<number>; org: string; name: string; n: number }
}

export const CREATE_SCHEMA_SQL = `
  CREATE TABLE ${TABLE} (id serial PRIMARY KEY, org text NOT NULL, name text NOT NULL, n integer NOT NULL);
  INSERT INTO ${TABLE} (org, name, n) SELECT 'seed', 'item ' || i, i FROM generate_series(1, ${SEED_ROWS}) AS i;
  ANALYZE ${TABLE};
`

/** The primary-key SELECTs cycle over the seeded ids, so every one finds exactly one row. */
export function seededId(i: number): number {
  return (i % SEED_ROWS) + 1
}
