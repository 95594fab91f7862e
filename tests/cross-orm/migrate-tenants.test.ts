import { fileURLToPath } from 'node:url'
import { createRegistry, migrateTenants, staticSecrets } from '@hyperconn/core'
import type { MigrationReport, Registry } from '@hyperconn/core'
import { createDrizzleAdapter } from '@hyperconn/drizzle'
import { createKnexAdapter } from '@hyperconn/knex'
import { createKyselyAdapter } from '@hyperconn/kysely'
import { connectClient } from '@hyperconn/testkit'
import type { TestDatabase } from '@hyperconn/testkit'
import { testDatabase } from '@hyperconn/testkit/vitest'
import { migrate as drizzleMigrate } from 'drizzle-orm/node-postgres/migrator'
import type { Knex } from 'knex'
import { Migrator, sql } from 'kysely'
import type { Kysely, Migration } from 'kysely'
import type pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

// Issue 13 acceptance 2: many schema tenants migrated through each ORM with bounded concurrency, a
// failing tenant, two runners at once, an abort — against real PostgreSQL.

const DRIZZLE_FOLDER = fileURLToPath(new URL('./support/drizzle-migrations', import.meta.url))
const TENANTS = 200

let db: TestDatabase
let admin: pg.Client & AsyncDisposable

beforeAll(async () => {
  db = await testDatabase('mig')
  admin = await connectClient(db.url)
  await admin.query(`DO $$ BEGIN FOR i IN 1..${TENANTS} LOOP EXECUTE format('CREATE SCHEMA t%s', i); END LOOP;
    FOR i IN 1..50 LOOP EXECUTE format('CREATE SCHEMA r%s', i); END LOOP;
    FOR i IN 1..20 LOOP EXECUTE format('CREATE SCHEMA a%s', i); END LOOP;
    FOR i IN 1..3 LOOP EXECUTE format('CREATE SCHEMA w%s', i); END LOOP; END $$`)
}, 60_000)

afterAll(async () => {
  await admin?.[Symbol.asyncDispose]()
  await db?.[Symbol.asyncDispose]()
})

const ids = (prefix: string, n: number): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i + 1}`)

function registryFor(orgs: string[]): Registry<'core'> {
  const secrets: Record<string, Record<string, string>> = {}
  for (const org of orgs) secrets[`mg-${org}`] = { 'core-postgresql': db.url }
  return createRegistry({
    project: 'mg',
    services: { core: { isolation: { schema: (orgId) => orgId } } },
    secrets: staticSecrets(secrets),
    pool: { max: 10 },
    connections: { max: 12 },
  })
}

function kyselyMigrations(failFor?: string): Record<string, Migration> {
  return {
    '001_create': { up: (k: Kysely<any>) => k.schema.createTable('k_items').addColumn('id', 'serial', (c) => c.primaryKey()).addColumn('label', 'text').execute() },
    '002_seed': {
      up: async (k: Kysely<any>) => {
        await sql`INSERT INTO k_items (label) VALUES ('seeded')`.execute(k)
        const { rows } = await sql<{ schema: string }>`SELECT current_schema() AS schema`.execute(k)
        if (rows[0]?.schema === failFor) throw new Error(`migration 002 refuses ${failFor}`)
      },
    },
  }
}

const knexMigrations: Knex.MigrationSource<string> = {
  getMigrations: () => Promise.resolve(['001_create', '002_seed']),
  getMigrationName: (name) => name,
  getMigration: (name) =>
    Promise.resolve(
      name === '001_create'
        ? { up: (k: Knex) => k.schema.createTable('x_items', (t) => void (t.increments('id'), t.text('label'))), down: () => Promise.resolve() }
        : { up: (k: Knex) => k('x_items').insert({ label: 'seeded' }), down: () => Promise.resolve() },
    ),
}

/** One migrate function running all three ORMs' migrations for a tenant. */
function migrateAll(registry: Registry<'core'>, failFor?: string) {
  const drizzle = createDrizzleAdapter(registry, { service: 'core' })
  const kysely = createKyselyAdapter(registry, { service: 'core' })
  const knex = createKnexAdapter(registry, { service: 'core' })
  return async (orgId: string, { tenant }: { tenant: { schema: string | undefined } }): Promise<void> => {
    // Each ORM's migration table in the tenant's own schema: in one database, a shared one would make every
    // tenant after the first look migrated.
    await drizzleMigrate(drizzle.getDb(orgId), { migrationsFolder: DRIZZLE_FOLDER, migrationsSchema: tenant.schema as string })
    const { error } = await new Migrator({
      db: kysely.getDb(orgId),
      provider: { getMigrations: () => Promise.resolve(kyselyMigrations(failFor)) },
      migrationTableSchema: tenant.schema as string,
    }).migrateToLatest()
    if (error !== undefined) throw error instanceof Error ? error : new Error('Kysely migration failed', { cause: error })
    await knex.getDb(orgId).migrate.latest({ migrationSource: knexMigrations, schemaName: tenant.schema as string })
  }
}

/** Per schema: the three tables' rows and the three migration tables' records (-1 where a table is missing). */
async function state(schema: string): Promise<number[]> {
  const count = async (table: string): Promise<number> => {
    const exists = await admin.query('SELECT to_regclass($1) AS t', [`${schema}.${table}`])
    if (exists.rows[0]?.t === null) return -1
    const { rows } = await admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${schema}.${table}`)
    return rows[0]?.n ?? -1
  }
  return [
    await count('d_items'),
    await count('__drizzle_migrations'),
    await count('k_items'),
    await count('kysely_migration'),
    await count('x_items'),
    await count('knex_migrations'),
  ]
}

const DONE = [1, 2, 1, 2, 1, 2]
const UNTOUCHED = [-1, -1, -1, -1, -1, -1]

describe('migrateTenants', () => {
  it(`${TENANTS} schema tenants through Drizzle, Kysely and Knex, concurrency 8: every schema migrated once; a rerun is a no-op`, async () => {
    const orgs = ids('t', TENANTS)
    await using registry = registryFor(orgs)
    const progress: number[] = []
    const report = await migrateTenants(registry, {
      service: 'core',
      tenants: orgs,
      concurrency: 8,
      migrate: migrateAll(registry),
      onProgress: (p) => progress.push(p.done),
    })
    expect(report.failed).toEqual([])
    expect(report.succeeded).toHaveLength(TENANTS)
    expect(progress).toHaveLength(TENANTS)
    expect(progress.at(-1)).toBe(TENANTS)
    expect(registry.stats().servers[0]?.peak).toBeLessThanOrEqual(12)
    for (const org of orgs) expect(await state(org), org).toEqual(DONE)
    const again = await migrateTenants(registry, { service: 'core', tenants: orgs, concurrency: 8, migrate: migrateAll(registry) })
    expect(again.succeeded).toHaveLength(TENANTS)
    for (const org of orgs.slice(0, 20)) expect(await state(org), org).toEqual(DONE)
  }, 120_000)

  it('one failing tenant: the others succeed; the report names it with a typed, redacted error; its migration rolled back', async () => {
    const orgs = ids('a', 10)
    await using registry = registryFor(orgs)
    const report = await migrateTenants(registry, { service: 'core', tenants: orgs, concurrency: 4, migrate: migrateAll(registry, 'a7') })
    expect(report.succeeded.sort()).toEqual(orgs.filter((o) => o !== 'a7').sort())
    expect(report.failed).toEqual([{ orgId: 'a7', error: { name: 'Error', code: undefined, message: 'migration 002 refuses a7' } }])
    // Kysely ran its batch in one transaction: no table and no record of it stayed (only its empty bookkeeping
    // table, created before); Drizzle's migrations (earlier, their own transaction) did; Knex never started.
    expect(await state('a7')).toEqual([1, 2, -1, 0, -1, -1])
    expect(JSON.stringify(report)).not.toContain(new URL(db.url).password)
  }, 60_000)

  it('two runners at once over the same 50 tenants: each tenant migrated exactly once', async () => {
    const orgs = ids('r', 50)
    await using one = registryFor(orgs)
    await using two = registryFor(orgs)
    const reports: MigrationReport[] = await Promise.all([
      migrateTenants(one, { service: 'core', tenants: orgs, concurrency: 4, migrate: migrateAll(one) }),
      migrateTenants(two, { service: 'core', tenants: [...orgs].reverse(), concurrency: 4, migrate: migrateAll(two) }),
    ])
    for (const report of reports) expect(report.failed).toEqual([])
    // Every tenant was run by at least one of them; a tenant the other held was skipped, not run twice at once.
    expect(new Set([...(reports[0]?.succeeded ?? []), ...(reports[1]?.succeeded ?? [])])).toEqual(new Set(orgs))
    for (const org of orgs) expect(await state(org), org).toEqual(DONE)
  }, 60_000)

  it('abort mid-run: running tenants finish, the rest are listed as not started, none is half-migrated', async () => {
    const orgs = ids('a', 20).slice(10)
    await using registry = registryFor(orgs)
    const controller = new AbortController()
    const migrate = migrateAll(registry)
    const report = await migrateTenants(registry, {
      service: 'core',
      tenants: orgs,
      concurrency: 2,
      signal: controller.signal,
      migrate,
      onProgress: (p) => {
        if (p.done === 3) controller.abort()
      },
    })
    expect(report.aborted).toBe(true)
    expect(report.notStarted.length).toBeGreaterThan(0)
    expect(report.succeeded.length + report.notStarted.length).toBe(orgs.length)
    for (const org of report.succeeded) expect(await state(org), org).toEqual(DONE)
    for (const org of report.notStarted) expect(await state(org), org).toEqual(UNTOUCHED)
  }, 60_000)

  it("whenLocked 'wait' waits for another runner's lock, and an abort ends the wait without starting the tenant", async () => {
    const orgs = ids('w', 3)
    await using registry = registryFor(orgs)
    // Another runner holds w1's lock (same key as migrateTenants uses).
    await using other = await connectClient(db.url)
    await other.query("SELECT pg_advisory_lock(hashtextextended('hyperconn.migrate:core:w1', 0))")
    const controller = new AbortController()
    const started: string[] = []
    const run = migrateTenants(registry, {
      service: 'core',
      tenants: orgs,
      concurrency: 3,
      whenLocked: 'wait',
      signal: controller.signal,
      migrate: (orgId) => {
        started.push(orgId)
        return Promise.resolve()
      },
      onProgress: (p) => {
        if (p.done === 2) controller.abort()
      },
    })
    const report = await run
    expect(started.sort()).toEqual(['w2', 'w3'])
    expect(report).toMatchObject({ succeeded: expect.arrayContaining(['w2', 'w3']) as unknown, notStarted: ['w1'], aborted: true, failed: [] })
    await other.query("SELECT pg_advisory_unlock(hashtextextended('hyperconn.migrate:core:w1', 0))")
    // Once the other runner is done, a waiting run gets the lock.
    const after = await migrateTenants(registry, { service: 'core', tenants: ['w1'], whenLocked: 'wait', migrate: () => Promise.resolve() })
    expect(after.succeeded).toEqual(['w1'])
  }, 60_000)
})
