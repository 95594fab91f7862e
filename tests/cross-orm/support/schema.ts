import { sql } from 'drizzle-orm'
import { integer, pgTable, serial, text } from 'drizzle-orm/pg-core'
import type { Generated } from 'kysely'

/**
 * One table, declared once per ORM. Every row stamps where it was written (backend pid, top-level
 * transaction id, database) through column defaults, so the committed state itself proves which
 * connection and transaction each ORM's insert ran in.
 */
export const CREATE_TABLES = `
  CREATE TABLE items (
    id serial PRIMARY KEY,
    orm text NOT NULL,
    label text NOT NULL UNIQUE,
    pid int NOT NULL DEFAULT pg_backend_pid(),
    txid text NOT NULL DEFAULT txid_current()::text,
    database text NOT NULL DEFAULT current_database()
  );
`

/** Drizzle's view of the table. */
export const items = pgTable('items', {
  id: serial('id').primaryKey(),
  orm: text('orm').notNull(),
  label: text('label').notNull().unique(),
  pid: integer('pid').notNull().default(sql`pg_backend_pid()`),
  txid: text('txid').notNull().default(sql`txid_current()::text`),
  database: text('database').notNull().default(sql`current_database()`),
})

export const schema = { items }
export type Schema = typeof schema

/** Kysely's view of the table. */
export interface KyselyDatabase {
  items: {
    id: Generated<number>
    orm: string
    label: string
    pid: Generated<number>
    txid: Generated<string>
    database: Generated<string>
  }
}

/** A row as stored (and as RETURNING gives it back): Knex's view of the table. */
export interface ItemRow {
  id: number
  orm: string
  label: string
  pid: number
  txid: string
  database: string
}

/** Where an insert landed: the columns filled by the defaults above. */
export type Stamp = Pick<ItemRow, 'id' | 'pid' | 'txid' | 'database'>
