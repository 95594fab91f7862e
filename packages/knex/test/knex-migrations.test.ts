import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Knex } from 'knex'
import { createRegistry, InvalidOptionsError, staticSecrets } from '@hyperconn/core'
import type { Registry } from '@hyperconn/core'
import { testDatabase } from '@hyperconn/testkit/vitest'
import type { TestDatabase } from '@hyperconn/testkit'
import { createKnexAdapter } from '../src/index.js'
import { createFixture } from './support.js'

// Migration files as an ESM project has them (knex's FsMigrations import()s them).
const FIRST = {
  '20240101000000_accounts.js': `
export const up = (knex) => knex.schema.createTable('accounts', (t) => { t.increments('id'); t.text('display_name') })
export const down = (knex) => knex.schema.dropTable('accounts')
`,
  '20240102000000_notes.js': `
export const up = (knex) => knex.schema.createTable('notes', (t) => { t.increments('id'); t.integer('account_id').references('accounts.id') })
export const down = (knex) => knex.schema.dropTable('notes')
`,
}
const SECOND = {
  '20240103000000_tags.js': `
export const up = (knex) => knex.schema.createTable('tags', (t) => { t.text('name').primary() })
export const down = (knex) => knex.schema.dropTable('tags')
`,
}
const SEEDS = {
  'accounts.js': `
export const seed = async (knex) => { await knex('accounts').del(); await knex('accounts').insert([{ display_name: 'seeded' }]) }
`,
}

const TENANTS = Array.from({ length: 20 }, (_, i) => `org${String(i + 1).padStart(2, '0')}`)
const schemaOf = (orgId: string): string => `tenant_${orgId}`

let tmp: string
let firstDir: string
let secondDir: string
let seedDir: string

async function writeDir(name: string, files: Record<string, string>): Promise<string> {
  const dir = path.join(tmp, name)
  await mkdir(dir)
  for (const [file, text] of Object.entries(files)) await writeFile(path.join(dir, file), text)
  return dir
}

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'hyperconn-knex-migrations-'))
  // An ESM project: knex import()s the .js files.
  await writeFile(path.join(tmp, 'package.json'), '{ "type": "module" }')
  firstDir = await writeDir('first', FIRST)
  secondDir = await writeDir('second', SECOND)
  seedDir = await writeDir('seeds', SEEDS)
})

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true })
})

interface SchemaFixture extends AsyncDisposable {
  readonly database: TestDatabase
  readonly registry: Registry<'core'>
  readonly admin: pg.Client
}

/** One database, a schema per tenant (created here, as a deployment would), service "core" isolating by schema. */
async function schemaFixture(
  tenants: readonly string[],
  connections: { perTenant?: number; acquireTimeoutMs?: number } = {},
): Promise<SchemaFixture> {
  const database = await testDatabase('knxmig')
  const admin = new pg.Client({ connectionString: database.url })
  await admin.connect()
  for (const orgId of tenants) await admin.query(`CREATE SCHEMA ${pg.escapeIdentifier(schemaOf(orgId))}`)
  const secrets: Record<string, Record<string, string>> = {}
  for (const orgId of tenants) secrets[`p-${orgId}`] = { 'core-postgresql': database.url }
  const registry = createRegistry({
    project: 'p',
    services: { core: { isolation: { schema: schemaOf } } },
    secrets: staticSecrets(secrets),
    connections,
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

interface MigrationRow {
  name: string
  batch: number
}

async function migrationRows(admin: pg.Client, schema: string): Promise<MigrationRow[]> {
  const { rows } = await admin.query<MigrationRow>(
    `SELECT name, batch FROM ${pg.escapeIdentifier(schema)}.knex_migrations ORDER BY id`,
  )
  return rows
}

async function tablesOf(admin: pg.Client, schema: string): Promise<string[]> {
  const { rows } = await admin.query<{ table_name: string }>(
    'SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name',
    [schema],
  )
  return rows.map((r) => r.table_name)
}

/** A migration source from objects (knex's `migrationSource` interface). */
function sourceOf(migrations: Record<string, Knex.Migration>): Knex.MigrationSource<string> {
  return {
    getMigrations: () => Promise.resolve(Object.keys(migrations).sort()),
    getMigrationName: (name) => name,
    getMigration: (name) => Promise.resolve(migrations[name]!),
  }
}

const FIRST_NAMES = Object.keys(FIRST)

describe('@hyperconn/knex migrations', () => {
  it('schema isolation: migrate.latest per tenant gives every schema its tables and its own knex_migrations; a rerun is a no-op', async () => {
    await using fx = await schemaFixture(TENANTS)
    const { getDb } = createKnexAdapter(fx.registry, { service: 'core', migrations: { directory: firstDir } })

    const results = await Promise.all(TENANTS.map((orgId) => getDb(orgId).migrate.latest()))
    for (const result of results) expect(result).toEqual([1, FIRST_NAMES])
    for (const orgId of TENANTS) {
      const schema = schemaOf(orgId)
      expect(await tablesOf(fx.admin, schema)).toEqual(['accounts', 'knex_migrations', 'knex_migrations_lock', 'notes'])
      expect(await migrationRows(fx.admin, schema)).toEqual(FIRST_NAMES.map((name) => ({ name, batch: 1 })))
      const lock = await fx.admin.query(`SELECT is_locked FROM ${pg.escapeIdentifier(schema)}.knex_migrations_lock`)
      expect(lock.rows).toEqual([{ is_locked: 0 }])
    }
    expect(await tablesOf(fx.admin, 'public')).toEqual([])

    // A rerun finds every migration done in the tenant's own table.
    const again = await Promise.all(TENANTS.map((orgId) => getDb(orgId).migrate.latest()))
    for (const result of again) expect(result).toEqual([1, []])
    for (const orgId of TENANTS) {
      expect(await migrationRows(fx.admin, schemaOf(orgId))).toEqual(FIRST_NAMES.map((name) => ({ name, batch: 1 })))
    }
    expect(await getDb('org01').migrate.currentVersion()).toBe('20240102000000')
    const [done, pending] = (await getDb('org01').migrate.list()) as [{ name: string }[], { file: string }[]]
    expect(done.map((m) => m.name)).toEqual(FIRST_NAMES)
    expect(pending).toEqual([])
  })

  it('takes the config per call: latest, list, up, down, rollback, currentVersion, status', async () => {
    await using fx = await schemaFixture(['orga', 'orgb'])
    // No migrations option at all: everything comes with each call, as in knex.
    const { getDb } = createKnexAdapter(fx.registry, { service: 'core' })
    const db = getDb('orga')
    const both = { directory: [firstDir, secondDir], tableName: 'schema_history' }

    expect(await db.migrate.up(both)).toEqual([1, ['20240101000000_accounts.js']])
    expect(await db.migrate.currentVersion(both)).toBe('20240101000000')
    expect(await db.migrate.latest(both)).toEqual([2, ['20240102000000_notes.js', '20240103000000_tags.js']])
    expect(await db.migrate.status(both)).toBe(0)
    expect(await db.migrate.down(both)).toEqual([2, ['20240103000000_tags.js']])
    expect(await db.migrate.rollback(both)).toEqual([2, ['20240102000000_notes.js']])
    expect(await tablesOf(fx.admin, 'tenant_orga')).toEqual(['accounts', 'schema_history', 'schema_history_lock'])
    expect(await db.migrate.rollback(both, true)).toEqual([1, ['20240101000000_accounts.js']])
    expect(await tablesOf(fx.admin, 'tenant_orga')).toEqual(['schema_history', 'schema_history_lock'])
    // The other tenant's schema was never touched.
    expect(await tablesOf(fx.admin, 'tenant_orgb')).toEqual([])

    // An explicit schemaName is honoured as in knex (here: the tenant's history kept in a shared schema).
    await fx.admin.query('CREATE SCHEMA history')
    await getDb('orgb').migrate.latest({ directory: firstDir, schemaName: 'history', tableName: 'orgb_migrations' })
    expect(await tablesOf(fx.admin, 'history')).toEqual(['orgb_migrations', 'orgb_migrations_lock'])
    expect(await tablesOf(fx.admin, 'tenant_orgb')).toEqual(['accounts', 'notes'])
  })

  it('a failing migration rolls back the whole batch and rejects; the other tenants migrate', async () => {
    await using fx = await schemaFixture(['ok1', 'bad', 'ok2'])
    const warnings: string[] = []
    const log = { warn: (message: string) => void warnings.push(message) }
    const { getDb } = createKnexAdapter(fx.registry, { service: 'core', log })
    const migrationsFor = (orgId: string): Record<string, Knex.Migration> => ({
      '001_widgets': {
        up: (knex) => knex.schema.createTable('widgets', (t) => t.increments('id')),
        down: (knex) => knex.schema.dropTable('widgets'),
      },
      '002_fill': {
        up: async (knex) => {
          await knex('widgets').insert({})
          if (orgId === 'bad') await knex.raw('SELECT * FROM no_such_table')
        },
        down: (knex) => knex('widgets').del(),
      },
    })
    const outcomes = await Promise.allSettled(
      ['ok1', 'bad', 'ok2'].map((orgId) => getDb(orgId).migrate.latest({ migrationSource: sourceOf(migrationsFor(orgId)) })),
    )
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'fulfilled'])
    const failure = (outcomes[1] as PromiseRejectedResult).reason as Error & { code?: string }
    // The migration's own error, as knex rejects it.
    expect(failure.code).toBe('42P01')
    expect(failure.message).toMatch(/no_such_table/)
    expect(warnings).toEqual(['migration file "002_fill" failed', expect.stringMatching(/^migration failed with error: .*no_such_table/)])
    // Nothing of the batch stays: no table, no migration record, the lock free.
    expect(await tablesOf(fx.admin, 'tenant_bad')).toEqual(['knex_migrations', 'knex_migrations_lock'])
    expect(await migrationRows(fx.admin, 'tenant_bad')).toEqual([])
    expect((await fx.admin.query('SELECT is_locked FROM tenant_bad.knex_migrations_lock')).rows).toEqual([{ is_locked: 0 }])
    for (const orgId of ['ok1', 'ok2']) {
      expect(await migrationRows(fx.admin, schemaOf(orgId))).toEqual([
        { name: '001_widgets', batch: 1 },
        { name: '002_fill', batch: 1 },
      ])
    }
    // Fixed, the tenant migrates.
    expect(await getDb('bad').migrate.latest({ migrationSource: sourceOf(migrationsFor('fixed')) })).toEqual([
      1,
      ['001_widgets', '002_fill'],
    ])

    // disableTransactions: each migration runs on its own, so the one before the failure stays.
    const { getDb: getPlain } = createKnexAdapter(fx.registry, { service: 'core', log, migrations: { disableTransactions: true } })
    const failing = sourceOf({
      '003_more': { up: (knex) => knex.schema.createTable('more', (t) => t.increments('id')), down: () => Promise.resolve() },
      '004_broken': { up: (knex) => knex.raw('SELECT * FROM no_such_table'), down: () => Promise.resolve() },
    })
    const combined: Knex.MigrationSource<string> = {
      getMigrations: async () => [...(await sourceOf(migrationsFor('x')).getMigrations([])), ...(await failing.getMigrations([]))],
      getMigrationName: (name) => name,
      getMigration: (name) => (name.startsWith('00') && name < '003' ? sourceOf(migrationsFor('x')) : failing).getMigration(name),
    }
    await expect(getPlain('ok1').migrate.latest({ migrationSource: combined })).rejects.toThrow(/no_such_table/)
    expect(await migrationRows(fx.admin, 'tenant_ok1')).toEqual([
      { name: '001_widgets', batch: 1 },
      { name: '002_fill', batch: 1 },
      { name: '003_more', batch: 2 },
    ])
    expect((await fx.admin.query('SELECT is_locked FROM tenant_ok1.knex_migrations_lock')).rows).toEqual([{ is_locked: 0 }])
  })

  it('database isolation: a tenant per database gets its own knex_migrations', async () => {
    await using fx = await createFixture(2)
    const { getDb } = createKnexAdapter(fx.registry, { service: 'core', migrations: { directory: firstDir } })
    expect(await Promise.all(['org1', 'org2'].map((orgId) => getDb(orgId).migrate.latest()))).toEqual([
      [1, FIRST_NAMES],
      [1, FIRST_NAMES],
    ])
    expect(await getDb('org1').migrate.latest()).toEqual([1, []])
    for (const index of [0, 1]) {
      const observer = await fx.observe(index)
      expect(await tablesOf(observer, 'public')).toEqual(['accounts', 'knex_migrations', 'knex_migrations_lock', 'notes'])
      expect(await migrationRows(observer, 'public')).toEqual(FIRST_NAMES.map((name) => ({ name, batch: 1 })))
    }
  })

  it('inside tenant.connection() every query of the migration runs on the pinned connection', async () => {
    // One connection per tenant: anything asking the pool for a second one would fail after 1 s.
    await using fx = await schemaFixture(['pin'], { perTenant: 1, acquireTimeoutMs: 1000 })
    const { getDb } = createKnexAdapter(fx.registry, { service: 'core' })
    const db = getDb('pin')
    const record = (knex: Knex, step: string) =>
      knex.raw('INSERT INTO pids (step, pid) SELECT ?, pg_backend_pid()', [step])
    // Not in a transaction (knex's per-migration `config`, missing from its types): runs on the instance
    // itself, and so makes knex run each migration of the batch on its own.
    const outside: Knex.Migration & { config: { transaction: boolean } } = {
      config: { transaction: false },
      up: async (knex) => {
        await record(knex, 'no transaction')
        await db.transaction((trx) => record(trx, 'own transaction'))
      },
      down: () => Promise.resolve(),
    }
    const source = sourceOf({
      '001_pids': {
        up: async (knex) => {
          await knex.schema.createTable('pids', (t) => {
            t.text('step')
            t.integer('pid')
          })
          await record(knex, 'in its transaction')
        },
        down: () => Promise.resolve(),
      },
      '002_outside': outside,
    })
    const tenant = fx.registry.tenant('pin', 'core')
    const { pinned, result } = await tenant.connection(async () => {
      const { rows } = await tenant.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')
      return { pinned: rows[0]!.pid, result: await db.migrate.latest({ migrationSource: source }) }
    })
    expect(result).toEqual([1, ['001_pids', '002_outside']])
    const { rows } = await fx.admin.query<{ step: string; pid: number }>('SELECT step, pid FROM tenant_pin.pids ORDER BY step')
    expect(rows).toEqual([
      { step: 'in its transaction', pid: pinned },
      { step: 'no transaction', pid: pinned },
      { step: 'own transaction', pid: pinned },
    ])
  })

  it('keeps knex\'s own queries unprocessed while migrations see wrapIdentifier / postProcessResponse', async () => {
    await using fx = await schemaFixture(['camel'])
    const toCamel = (s: string) => s.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase())
    const toSnake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)
    const { getDb } = createKnexAdapter(fx.registry, {
      service: 'core',
      wrapIdentifier: (value, origImpl) => origImpl(toSnake(value)),
      postProcessResponse: (result: unknown) =>
        Array.isArray(result)
          ? result.map((row: unknown) =>
              typeof row === 'object' && row !== null
                ? Object.fromEntries(Object.entries(row).map(([k, v]) => [toCamel(k), v]))
                : row,
            )
          : result,
      migrations: { directory: firstDir },
    })
    const db = getDb('camel')
    expect(await db.migrate.latest()).toEqual([1, FIRST_NAMES])
    // Batch numbers come from knex's `max(batch) as max_batch`, which postProcessResponse would rename.
    expect(await db.migrate.latest({ directory: [firstDir, secondDir] })).toEqual([2, ['20240103000000_tags.js']])
    expect(await db.migrate.latest({
      migrationSource: sourceOf({
        ...Object.fromEntries([...FIRST_NAMES, '20240103000000_tags.js'].map((n) => [n, { up: () => Promise.resolve(), down: () => Promise.resolve() }])),
        '20240104000000_camel': { up: (knex) => knex('accounts').insert({ displayName: 'Ada' }), down: () => Promise.resolve() },
      }),
    })).toEqual([3, ['20240104000000_camel']])
    expect(await db('accounts').select('displayName')).toEqual([{ displayName: 'Ada' }])
    expect((await migrationRows(fx.admin, 'tenant_camel')).map((r) => r.batch)).toEqual([1, 1, 2, 3])
  })

  it('runs seeds from the seeds option or per call', async () => {
    await using fx = await schemaFixture(['s1', 's2'])
    const { getDb } = createKnexAdapter(fx.registry, { service: 'core', migrations: { directory: firstDir }, seeds: { directory: seedDir } })
    for (const orgId of ['s1', 's2']) {
      await getDb(orgId).migrate.latest()
      expect(await getDb(orgId).seed.run()).toEqual([[path.join(seedDir, 'accounts.js')]])
      expect(await getDb(orgId)('accounts').select('display_name')).toEqual([{ display_name: 'seeded' }])
    }
    const { getDb: plain } = createKnexAdapter(fx.registry, { service: 'core' })
    await plain('s1').seed.run({ directory: seedDir })
    expect((await fx.admin.query('SELECT count(*)::int AS n FROM tenant_s1.accounts')).rows).toEqual([{ n: 1 }])
  })

  it('checks the migrations and seeds options', async () => {
    await using fx = await createFixture()
    const bad = (options: Record<string, unknown>) => () =>
      createKnexAdapter(fx.registry, { service: 'core', ...options })
    for (const value of ['./migrations', null, 1, ['./migrations']]) {
      expect(bad({ migrations: value })).toThrow(InvalidOptionsError)
      expect(bad({ seeds: value })).toThrow(/seeds must be knex's seeds config object/)
    }
    expect(bad({ migrations: { directory: './migrations', tableName: 'history' }, seeds: { directory: './seeds' } })).not.toThrow()
  })
})
