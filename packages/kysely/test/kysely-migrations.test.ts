import pg from 'pg'
import { describe, expect, it } from 'vitest'
import { Migrator, sql } from 'kysely'
import type { Kysely, Migration, MigrationProvider } from 'kysely'
import { createRegistry, InvalidOptionsError, staticSecrets } from '@hyperconn/core'
import type { Registry } from '@hyperconn/core'
import { testDatabase } from '@hyperconn/testkit/vitest'
import type { TestDatabase } from '@hyperconn/testkit'
import { createKyselyAdapter } from '../src/index.js'
import type { TenantMigratorProps } from '../src/index.js'

const TENANTS = Array.from({ length: 20 }, (_, i) => `org${String(i + 1).padStart(2, '0')}`)
const schemaOf = (orgId: string): string => `tenant_${orgId}`

const MIGRATIONS: Record<string, Migration> = {
  '001_accounts': {
    up: (db) => db.schema.createTable('accounts').addColumn('id', 'serial', (c) => c.primaryKey()).execute(),
  },
  '002_notes': {
    up: (db) =>
      db.schema
        .createTable('notes')
        .addColumn('id', 'serial', (c) => c.primaryKey())
        .addColumn('account_id', 'integer', (c) => c.references('accounts.id'))
        .execute(),
  },
}

const providerOf = (migrations: Record<string, Migration>): MigrationProvider => ({
  getMigrations: () => Promise.resolve(migrations),
})

interface Fixture extends AsyncDisposable {
  readonly database: TestDatabase
  readonly registry: Registry<'core' | 'plain'>
  readonly admin: pg.Client
}

/** One database; service "core" with a schema per tenant (created here, except when `create` is false), "plain" without. */
async function schemaFixture(tenants: readonly string[], create = true): Promise<Fixture> {
  const database = await testDatabase('kysmig')
  const admin = new pg.Client({ connectionString: database.url })
  await admin.connect()
  if (create) for (const orgId of tenants) await admin.query(`CREATE SCHEMA ${pg.escapeIdentifier(schemaOf(orgId))}`)
  const secrets: Record<string, Record<string, string>> = {}
  for (const orgId of tenants) secrets[`p-${orgId}`] = { 'core-postgresql': database.url, 'plain-postgresql': database.url }
  const registry = createRegistry({
    project: 'p',
    services: { core: { isolation: { schema: schemaOf } }, plain: {} },
    secrets: staticSecrets(secrets),
  })
  return {
    database,
    registry,
    admin,
    async [Symbol.asyncDispose]() {
      await admin.end()
      await registry.close()
      await database[Symbol.asyncDispose]()
    },
  }
}

async function tablesOf(admin: pg.Client, schema: string): Promise<string[]> {
  const { rows } = await admin.query<{ table_name: string }>(
    'SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name',
    [schema],
  )
  return rows.map((r) => r.table_name)
}

async function migrationNames(admin: pg.Client, schema: string): Promise<string[]> {
  const { rows } = await admin.query<{ name: string }>(`SELECT name FROM ${pg.escapeIdentifier(schema)}.kysely_migration ORDER BY name`)
  return rows.map((r) => r.name)
}

describe('@hyperconn/kysely migrator(orgId, props)', () => {
  it('schema isolation: every tenant schema gets its tables and its own kysely_migration; a rerun is a no-op', async () => {
    await using fx = await schemaFixture(TENANTS)
    const { migrator } = createKyselyAdapter(fx.registry, { service: 'core' })

    const results = await Promise.all(TENANTS.map((orgId) => migrator(orgId, { provider: providerOf(MIGRATIONS) }).migrateToLatest()))
    for (const { error, results: steps } of results) {
      expect(error).toBeUndefined()
      expect(steps?.map((r) => `${r.migrationName}:${r.status}`)).toEqual(['001_accounts:Success', '002_notes:Success'])
    }
    for (const orgId of TENANTS) {
      const schema = schemaOf(orgId)
      expect(await tablesOf(fx.admin, schema)).toEqual(['accounts', 'kysely_migration', 'kysely_migration_lock', 'notes'])
      expect(await migrationNames(fx.admin, schema)).toEqual(['001_accounts', '002_notes'])
    }
    expect(await tablesOf(fx.admin, 'public')).toEqual([])

    const again = await Promise.all(TENANTS.map((orgId) => migrator(orgId, { provider: providerOf(MIGRATIONS) }).migrateToLatest()))
    for (const result of again) expect(result).toEqual({ results: [] })
    for (const orgId of TENANTS) expect(await migrationNames(fx.admin, schemaOf(orgId))).toEqual(['001_accounts', '002_notes'])

    // What migrator() saves: Kysely's own Migrator on getDb(orgId) finds another tenant's kysely_migration
    // through introspection, creates none, and then fails on the tenant's missing table.
    await fx.admin.query('CREATE SCHEMA tenant_late')
    await using late = createRegistry({
      project: 'p',
      services: { core: { isolation: { schema: () => 'tenant_late' } } },
      secrets: staticSecrets({ 'p-late': { 'core-postgresql': fx.database.url } }),
    })
    const plain = new Migrator({ db: createKyselyAdapter(late, { service: 'core' }).getDb('late'), provider: providerOf(MIGRATIONS) })
    const { error } = await plain.migrateToLatest()
    expect(String(error)).toMatch(/relation "kysely_migration_lock" does not exist/)
  })

  it('creates the tenant schema if missing and keeps a failing tenant\'s batch out, the others migrated', async () => {
    await using fx = await schemaFixture(['a', 'bad', 'b'], false)
    const { migrator, getDb } = createKyselyAdapter(fx.registry, { service: 'core' })
    const broken: Record<string, Migration> = {
      ...MIGRATIONS,
      '003_broken': {
        up: async (db) => {
          await sql`SELECT * FROM no_such_table`.execute(db)
        },
      },
    }
    const results = await Promise.all(
      ['a', 'bad', 'b'].map((orgId) => migrator(orgId, { provider: providerOf(orgId === 'bad' ? broken : MIGRATIONS) }).migrateToLatest()),
    )
    expect(results.map((r) => r.error === undefined)).toEqual([true, false, true])
    expect(String(results[1]?.error)).toMatch(/no_such_table/)
    // Kysely's migration table schema: created by the Migrator; the batch of the failing tenant rolled back.
    expect(await tablesOf(fx.admin, 'tenant_bad')).toEqual(['kysely_migration', 'kysely_migration_lock'])
    expect(await migrationNames(fx.admin, 'tenant_bad')).toEqual([])
    for (const orgId of ['a', 'b']) expect(await migrationNames(fx.admin, schemaOf(orgId))).toEqual(['001_accounts', '002_notes'])
    // The tenant's queries find its tables through search_path.
    expect(await getDb('a').selectFrom('accounts' as never).selectAll().execute()).toEqual([])
  })

  it('locks per tenant schema: tenants of one database migrate at the same time, one tenant\'s runners one after another', async () => {
    await using fx = await schemaFixture(['x', 'y'])
    const { migrator } = createKyselyAdapter(fx.registry, { service: 'core' })
    // x's migration waits for y's to start: with one lock for the whole database this would never finish.
    let started!: () => void
    const yStarted = new Promise<void>((resolve) => (started = resolve))
    const waiting: Record<string, Migration> = {
      '001_wait': {
        up: async (db) => {
          await Promise.race([yStarted, new Promise((_, reject) => setTimeout(() => reject(new Error('y never started')), 5000))])
          await db.schema.createTable('waited').addColumn('id', 'integer').execute()
        },
      },
    }
    const signalling: Record<string, Migration> = {
      '001_wait': {
        up: async (db) => {
          started()
          await db.schema.createTable('waited').addColumn('id', 'integer').execute()
        },
      },
    }
    const [x, y] = await Promise.all([
      migrator('x', { provider: providerOf(waiting) }).migrateToLatest(),
      migrator('y', { provider: providerOf(signalling) }).migrateToLatest(),
    ])
    expect([x.error, y.error]).toEqual([undefined, undefined])

    // Two runners on the same tenant: the lock lets one in at a time, each migration runs once.
    const runs: string[] = []
    const counted: Record<string, Migration> = {
      '002_counted': {
        up: async (db) => {
          runs.push('002')
          await sql`SELECT pg_sleep(0.2)`.execute(db)
        },
      },
    }
    const both = await Promise.all([1, 2].map(() => migrator('x', { provider: providerOf({ ...waiting, ...counted }) }).migrateToLatest()))
    expect(both.map((r) => r.error)).toEqual([undefined, undefined])
    expect(runs).toEqual(['002'])
    expect(await migrationNames(fx.admin, 'tenant_x')).toEqual(['001_wait', '002_counted'])
  })

  it('database isolation: no schema, Kysely\'s defaults; explicit props win', async () => {
    await using fx = await schemaFixture(['d1'], false)
    const adapter = createKyselyAdapter(fx.registry, { service: 'plain' })
    const migrator: Migrator = adapter.migrator('d1', { provider: providerOf(MIGRATIONS) })
    expect((await migrator.migrateToLatest()).error).toBeUndefined()
    expect(await tablesOf(fx.admin, 'public')).toEqual(['accounts', 'kysely_migration', 'kysely_migration_lock', 'notes'])

    await fx.admin.query('CREATE SCHEMA tenant_d1')
    const { migrator: schemaMigrator } = createKyselyAdapter(fx.registry, { service: 'core' })
    const props: TenantMigratorProps = {
      provider: providerOf(MIGRATIONS),
      migrationTableSchema: 'history',
      migrationTableName: 'd1_migrations',
      migrationLockTableName: 'd1_migrations_lock',
    }
    expect((await schemaMigrator('d1', props).migrateToLatest()).error).toBeUndefined()
    expect(await tablesOf(fx.admin, 'history')).toEqual(['d1_migrations', 'd1_migrations_lock'])
    expect(await tablesOf(fx.admin, 'tenant_d1')).toEqual(['accounts', 'notes'])

    const db: Kysely<unknown> = adapter.getDb('d1')
    expect(db).toBe(adapter.getDb('d1'))
    expect(() => adapter.migrator('d1', null as unknown as TenantMigratorProps)).toThrow(InvalidOptionsError)
  })
})
