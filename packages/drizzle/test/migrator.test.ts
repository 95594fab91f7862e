import { fileURLToPath } from 'node:url'
import { createRegistry, staticSecrets } from '@hyperconn/core'
import type { Registry } from '@hyperconn/core'
import { useTestDatabases } from '@hyperconn/testkit/vitest'
import type { TestDatabase } from '@hyperconn/testkit'
import { sql } from 'drizzle-orm'
import { NodePgSession } from 'drizzle-orm/node-postgres'
import type { NodePgDatabase } from 'drizzle-orm/node-postgres'
import { migrate } from 'drizzle-orm/node-postgres/migrator'
import type pg from 'pg'
import { beforeAll, describe, expect, it } from 'vitest'
import { createDrizzleAdapter } from '../src/index.js'
import { rejection } from './support/schema.js'

// drizzle's migrate() runs every pending migration in one db.session.transaction(); these tests check that
// it is core's transaction (one connection, atomic), not BEGIN/COMMIT sent as separate pooled queries.
const OK = fileURLToPath(new URL('./support/migrations/ok', import.meta.url))
// Same first migration; the second one has a statement that fails.
const FAILING = fileURLToPath(new URL('./support/migrations/failing', import.meta.url))

const files = useTestDatabases('drzmig', 1, {
  schema: 'SELECT 1',
  reset: 'DROP SCHEMA IF EXISTS drizzle CASCADE; DROP TABLE IF EXISTS widgets, migration_steps',
})
let database: TestDatabase
let admin: pg.Client & AsyncDisposable

beforeAll(() => {
  database = files.database(0)
  admin = files.admin(0)
})

function registryFor(): Registry {
  return createRegistry({
    project: 'p',
    services: ['core'],
    secrets: staticSecrets({ 'p-org1': { 'core-postgresql': database.url } }),
    pool: { max: 2 },
  })
}

async function idleInTransaction(): Promise<number> {
  const { rows } = await admin.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
  )
  return rows[0]?.n ?? -1
}

async function tableExists(name: string): Promise<boolean> {
  const { rows } = await admin.query<{ found: boolean }>('SELECT to_regclass($1) IS NOT NULL AS found', [`public.${name}`])
  return rows[0]?.found === true
}

async function appliedMigrations(): Promise<number> {
  const { rows } = await admin.query<{ n: number }>('SELECT count(*)::int AS n FROM drizzle.__drizzle_migrations')
  return rows[0]?.n ?? -1
}

interface Observation {
  /** txid_current_if_assigned() of the reader's statement: null unless it ran inside some transaction. */
  txid: string | null
  /** How many of the migrations' two tables exist, and whether widgets.colour (second migration) does. */
  tables: number
  colour: number
}

// Catalog only, so it runs whether or not the migrations' tables exist yet; both counts read through the
// statement's one snapshot (to_regclass would use a separate catalog snapshot and could disagree mid-commit).
const OBSERVE = sql`SELECT txid_current_if_assigned()::text AS txid,
  (SELECT count(*)::int FROM pg_class WHERE relname IN ('widgets', 'migration_steps') AND relnamespace = 'public'::regnamespace) AS tables,
  (SELECT count(*)::int FROM pg_attribute a JOIN pg_class c ON a.attrelid = c.oid
    WHERE c.relname = 'widgets' AND c.relnamespace = 'public'::regnamespace AND a.attname = 'colour' AND NOT a.attisdropped) AS colour`

async function observe(db: NodePgDatabase): Promise<Observation> {
  const { rows } = await db.execute<Record<string, unknown>>(OBSERVE)
  return rows[0] as unknown as Observation
}

/** Readers running plain queries through getDb in a loop until `until` settles. */
async function readWhile(getDb: () => NodePgDatabase, readers: number, until: Promise<unknown>): Promise<Observation[]> {
  let done = false
  void until.then(
    () => (done = true),
    () => (done = true),
  )
  const seen: Observation[] = []
  await Promise.all(
    Array.from({ length: readers }, async () => {
      while (!done) seen.push(await observe(getDb()))
    }),
  )
  return seen
}

describe('migrate() from drizzle-orm/node-postgres/migrator through getDb', () => {
  it('runs all pending migrations in one transaction on one connection while readers share the pool', async () => {
    await using registry = registryFor()
    const { getDb } = createDrizzleAdapter(registry, { service: 'core' })

    const migrating = migrate(getDb('org1'), { migrationsFolder: OK })
    const seen = await readWhile(() => getDb('org1'), 6, migrating)
    await migrating

    // Both migrations' txid_current() rows come from one transaction on one backend.
    const { rows: steps } = await admin.query<{ step: string; pid: number; txid: string }>(
      'SELECT step, pid, txid::text FROM migration_steps ORDER BY step',
    )
    expect(steps.map((s) => s.step)).toEqual(['create', 'seed'])
    expect(new Set(steps.map((s) => s.txid)).size).toBe(1)
    expect(new Set(steps.map((s) => s.pid)).size).toBe(1)
    expect(await appliedMigrations()).toBe(2)

    // The readers ran during the migration, never inside its transaction, and saw none or all of it.
    expect(seen.length).toBeGreaterThanOrEqual(6)
    expect(seen.filter((o) => o.txid !== null)).toEqual([])
    expect(seen.filter((o) => !((o.tables === 0 && o.colour === 0) || (o.tables === 2 && o.colour === 1)))).toEqual([])
    expect(seen.some((o) => o.tables === 0)).toBe(true)
    expect(await observe(getDb('org1'))).toEqual({ txid: null, tables: 2, colour: 1 })

    expect(await idleInTransaction()).toBe(0)
    expect(registry.stats().connections.checkedOut).toBe(0)
  })

  it('rolls back every migration of the run when one statement fails, and rejects', async () => {
    await using registry = registryFor()
    const db = createDrizzleAdapter(registry, { service: 'core' }).getDb('org1')

    const error = await rejection(migrate(db, { migrationsFolder: FAILING }))
    expect(String((error as Error).cause ?? error)).toMatch(/no_such_column/)

    // The first migration ran in the same transaction: its tables and rows are gone too.
    expect(await tableExists('widgets')).toBe(false)
    expect(await tableExists('migration_steps')).toBe(false)
    expect(await appliedMigrations()).toBe(0)
    expect(await idleInTransaction()).toBe(0)
    expect(registry.stats().connections.checkedOut).toBe(0)

    // Nothing half-applied is left behind: the good folder (same first migration) then applies cleanly.
    await migrate(db, { migrationsFolder: OK })
    expect(await appliedMigrations()).toBe(2)
  })

  it('is a no-op when rerun after success', async () => {
    await using registry = registryFor()
    const db = createDrizzleAdapter(registry, { service: 'core' }).getDb('org1')
    await migrate(db, { migrationsFolder: OK })
    await migrate(db, { migrationsFolder: OK })

    const { rows } = await admin.query<{ created_at: string; n: number }>(
      'SELECT created_at::text, count(*)::int AS n FROM drizzle.__drizzle_migrations GROUP BY created_at ORDER BY created_at',
    )
    expect(rows).toEqual([
      { created_at: '1767225600000', n: 1 },
      { created_at: '1767312000000', n: 1 },
    ])
    const { rows: widgets } = await admin.query<{ name: string }>('SELECT name FROM widgets ORDER BY id')
    expect(widgets.map((w) => w.name)).toEqual(['a', 'b'])
    expect(await idleInTransaction()).toBe(0)
  })

  it('refuses at startup a drizzle whose session transaction cannot be replaced', async () => {
    await using registry = registryFor()
    const proto = NodePgSession.prototype as object
    const original = Object.getOwnPropertyDescriptor(proto, 'transaction')
    expect(original).toBeDefined()
    Object.defineProperty(proto, 'transaction', { ...original, writable: false })
    try {
      expect(() => createDrizzleAdapter(registry, { service: 'core' })).toThrow(
        /does not support the installed drizzle-orm: db\.session\.transaction cannot be replaced/,
      )
    } finally {
      Object.defineProperty(proto, 'transaction', original as PropertyDescriptor)
    }
    expect(() => createDrizzleAdapter(registry, { service: 'core' })).not.toThrow()
  })
})
