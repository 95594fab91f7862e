import { beforeAll, describe, expect, it } from 'vitest'
import { useTestDatabases } from '@hyperconn/testkit/vitest'
import type { TestDatabase } from '@hyperconn/testkit'
import {
  InvalidOptionsError,
  InvalidTenantIdError,
  SecretNotFoundError,
  TransactionPropagationError,
  UnknownServiceError,
  UnsupportedError,
  isHyperconnError,
} from '@hyperconn/core'
import {
  CamelCasePlugin,
  ConnectionBuilder,
  Kysely,
  Migrator,
  Transaction,
  TransactionBuilder,
  sql,
} from 'kysely'
import type { Generated, LogEvent, Migration } from 'kysely'
import type pg from 'pg'
import { createKyselyAdapter } from '../src/index.js'
import type { KyselyAdapterOptions } from '../src/index.js'
import { labels, registryFor, SCHEMA, WHERE_AM_I } from './support.js'
import type { Database, WhereAmI } from './support.js'

const files = useTestDatabases('ksy', 2, { schema: SCHEMA, reset: 'TRUNCATE items, other.items RESTART IDENTITY' })
let db1: TestDatabase
let db2: TestDatabase
let admin1: pg.Client & AsyncDisposable
let admin2: pg.Client & AsyncDisposable

beforeAll(() => {
  db1 = files.database(0)
  db2 = files.database(1)
  admin1 = files.admin(0)
  admin2 = files.admin(1)
})

describe('queries', () => {
  it('runs CRUD on the tenant database and reports numAffectedRows as bigint', async () => {
    await using registry = registryFor({ org1: db1.url })
    const db = createKyselyAdapter<Database>(registry, { service: 'core' }).getDb('org1')

    const inserted = await db.insertInto('items').values([{ label: 'a' }, { label: 'b' }, { label: 'c' }]).executeTakeFirst()
    expect(inserted.numInsertedOrUpdatedRows).toBe(3n)
    const returned = await db.insertInto('items').values({ label: 'd' }).returning(['id', 'label']).executeTakeFirstOrThrow()
    expect(returned).toEqual({ id: 4, label: 'd' })

    const updated = await db.updateTable('items').set({ org: 'x' }).where('label', 'in', ['a', 'b']).executeTakeFirst()
    expect(updated.numUpdatedRows).toBe(2n)
    const deleted = await db.deleteFrom('items').where('label', '=', 'c').executeTakeFirst()
    expect(deleted.numDeletedRows).toBe(1n)

    const rows = await db.selectFrom('items').select(['label', 'org']).orderBy('id').execute()
    expect(rows).toEqual([
      { label: 'a', org: 'x' },
      { label: 'b', org: 'x' },
      { label: 'd', org: '' },
    ])
    // Raw SQL: SELECT has no affected count; INSERT ... SELECT does.
    const select = await sql`select 1 as one`.execute(db)
    expect(select.numAffectedRows).toBeUndefined()
    expect(select.rows).toEqual([{ one: 1 }])
    const copy = await sql`insert into other.items (label) select label from items order by id`.execute(db)
    expect(copy.numAffectedRows).toBe(3n)
    const merged = await sql`
      merge into other.items t using (values ('a'), ('zz')) s(label) on t.label = s.label
      when matched then update set org = 'm' when not matched then insert (label) values (s.label)`.execute(db)
    expect(merged.numAffectedRows).toBe(2n)

    expect(await labels(admin1)).toEqual(['a', 'b', 'd'])
    expect(await labels(admin1, 'other.items')).toEqual(['a', 'b', 'd', 'zz'])
  })

  it('caches one instance per org and gives each org its own database', async () => {
    await using registry = registryFor({ org1: db1.url, org2: db2.url })
    const { getDb } = createKyselyAdapter<Database>(registry, { service: 'core' })
    expect(getDb('org1')).toBe(getDb('org1'))
    expect(getDb('org1')).not.toBe(getDb('org2'))

    await getDb('org1').insertInto('items').values({ label: 'one' }).execute()
    await getDb('org2').insertInto('items').values([{ label: 'two' }, { label: 'three' }]).execute()

    expect(await getDb('org1').selectFrom('items').select('label').execute()).toEqual([{ label: 'one' }])
    expect(await getDb('org2').selectFrom('items').select('label').orderBy('id').execute()).toEqual([
      { label: 'two' },
      { label: 'three' },
    ])
    expect(await labels(admin1)).toEqual(['one'])
    expect(await labels(admin2)).toEqual(['two', 'three'])
    // One physical pool per database: the two orgs never share one.
    expect(registry.stats().pools.list.map((p) => p.name.split('/')[1]?.split('@')[0]).sort()).toEqual([db1.name, db2.name].sort())
  })

  it('keeps at most maxInstances cached instances', async () => {
    await using registry = registryFor({ org1: db1.url, org2: db2.url })
    const { getDb } = createKyselyAdapter<Database>(registry, { service: 'core', maxInstances: 1 })
    const first = getDb('org1')
    expect(getDb('org1')).toBe(first)
    getDb('org2')
    expect(getDb('org1')).not.toBe(first)
    expect(() => createKyselyAdapter(registry, { service: 'core', maxInstances: 0 })).toThrow(/maxInstances/)
  })

  it('applies plugins and log options to every tenant instance', async () => {
    await using registry = registryFor({ org1: db1.url })
    const events: LogEvent[] = []
    const { getDb } = createKyselyAdapter<{ items: { id: Generated<number>; label: string; orgName: string } }>(registry, {
      service: 'core',
      plugins: [new CamelCasePlugin()],
      log: (event) => {
        events.push(event)
      },
    })
    await sql`alter table items rename column org to org_name`.execute(getDb('org1'))
    try {
      await getDb('org1').insertInto('items').values({ label: 'p', orgName: 'acme' }).execute()
      expect(await getDb('org1').selectFrom('items').select(['label', 'orgName']).execute()).toEqual([
        { label: 'p', orgName: 'acme' },
      ])
      expect(events.map((e) => e.level)).toEqual(['query', 'query', 'query'])
      expect(events[1]?.query.sql).toBe('insert into "items" ("label", "org_name") values ($1, $2)')
    } finally {
      await admin1.query('alter table items rename column org_name to org')
    }
  })

  it('pins one connection in db.connection() (core tenant.connection): derived instances, other adapters and transactions inside run on it', async () => {
    await using registry = registryFor({ org1: db1.url })
    const { getDb } = createKyselyAdapter<Database>(registry, { service: 'core' })
    const tenant = registry.tenant('org1', 'core')
    const seen = await getDb('org1')
      .connection()
      .execute(async (conn) => {
        const where = async (k: Kysely<Database>) => (await sql<WhereAmI>`${sql.raw(WHERE_AM_I)}`.execute(k)).rows[0]
        await sql`SET application_name = 'pinned-here'`.execute(conn)
        const pinned = [
          await where(conn),
          await where(conn.withSchema('other')),
          await where(conn.withPlugin(new CamelCasePlugin())),
          await where(getDb('org1')),
          (await tenant.query<WhereAmI>(WHERE_AM_I)).rows[0],
        ]
        const app = (await tenant.query<{ application_name: string }>('SHOW application_name')).rows[0]?.application_name
        // A transaction started here runs on the pinned connection; the outer instance used inside joins it.
        const inTx = await conn.transaction().execute(async (trx) => {
          await trx.insertInto('items').values({ label: 'pinned-tx' }).execute()
          return [await where(trx), await where(conn)]
        })
        return { pinned, app, inTx }
      })
    expect(new Set(seen.pinned.map((w) => w?.pid)).size).toBe(1)
    expect(new Set(seen.pinned.map((w) => w?.txid)).size).toBe(5) // no transaction around them
    expect(seen.app).toBe('pinned-here')
    expect(seen.inTx.map((w) => w?.pid)).toEqual([seen.pinned[0]?.pid, seen.pinned[0]?.pid])
    expect(seen.inTx[1]?.txid).toBe(seen.inTx[0]?.txid)
    expect(await labels(admin1)).toEqual(['pinned-tx'])
    expect(registry.stats().connections.checkedOut).toBe(0)
  })

  it('db.connection() with a transaction inside needs one connection only: works with pool max 1', async () => {
    await using registry = registryFor({ org1: db1.url }, { max: 1 }, { acquireTimeoutMs: 300 })
    const db = createKyselyAdapter<Database>(registry, { service: 'core' }).getDb('org1')
    await db
      .connection()
      .execute((conn) => conn.transaction().execute((trx) => trx.insertInto('items').values({ label: 'once' }).execute()))
    expect(await labels(admin1)).toEqual(['once'])
    expect(registry.stats().connections.checkedOut).toBe(0)
  })

  it('introspects tables and runs Kysely migrations through core transactions', async () => {
    await using registry = registryFor({ org1: db1.url })
    const db = createKyselyAdapter<Database>(registry, { service: 'core' }).getDb('org1')
    const tables = await db.introspection.getTables()
    expect(tables.map((t) => `${t.schema}.${t.name}`).sort()).toEqual(['other.items', 'public.items'])

    const migrations: Record<string, Migration> = {
      '001_first': { up: (m) => m.schema.createTable('migrated').addColumn('id', 'integer').execute() },
      '002_broken': {
        up: async (m) => {
          await m.schema.createTable('never_kept').addColumn('id', 'integer').execute()
          throw new Error('boom')
        },
      },
    }
    const migrator = new Migrator({ db, provider: { getMigrations: () => Promise.resolve(migrations) } })
    const result = await migrator.migrateToLatest()
    expect(result.error).toBeInstanceOf(Error)
    // Kysely runs the batch in one transaction: the failure rolls back both migrations.
    const { rows } = await admin1.query<{ name: string }>(
      "select table_name as name from information_schema.tables where table_name in ('migrated', 'never_kept')",
    )
    expect(rows).toEqual([])
    delete migrations['002_broken']
    expect((await migrator.migrateToLatest()).error).toBeUndefined()
    expect((await admin1.query("select to_regclass('migrated') as t")).rows[0]?.t).toBe('migrated')
    await admin1.query('drop table migrated, kysely_migration, kysely_migration_lock')
  })
})

describe('createKyselyAdapter options', () => {
  it('validates them: service syntax, unknown keys (also Kysely\'s pool and dialect), maxInstances', async () => {
    await using registry = registryFor({ org1: db1.url })
    const create = (options: unknown) => () => createKyselyAdapter<Database>(registry, options as KyselyAdapterOptions)
    for (const service of ['', 'bad service', '-core', 'a'.repeat(65), 42, undefined]) {
      expect(create({ service })).toThrow(InvalidOptionsError)
    }
    expect(create({ service: 'core', pool: { max: 1 } })).toThrow(/option "pool" is not supported: .*createRegistry\(\{ pool \}\)/)
    expect(create({ service: 'core', dialect: {} })).toThrow(InvalidOptionsError)
    expect(create({ service: 'core', colour: 'blue' })).toThrow(/unknown option "colour"/)
    for (const maxInstances of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, '5']) {
      expect(create({ service: 'core', maxInstances })).toThrow(/maxInstances must be a positive safe integer/)
    }
    expect(create(null)).toThrow(InvalidOptionsError)
    expect(create({ service: 'core', maxInstances: 1, plugins: [], log: ['error'] })).not.toThrow()
    // A well-formed service the registry does not know passes here; the first getDb throws UnknownServiceError.
    expect(() => createKyselyAdapter<Database>(registry, { service: 'billing' }).getDb('org1')).toThrow(UnknownServiceError)
    expect(registry.stats().pools.created).toBe(0)
  })
})

describe('lifecycle and errors', () => {
  it('db.destroy() and await using do not end the registry pool, and getDb keeps working', async () => {
    await using registry = registryFor({ org1: db1.url })
    const { getDb } = createKyselyAdapter<Database>(registry, { service: 'core' })
    const db = getDb('org1')
    await db.insertInto('items').values({ label: 'before' }).execute()
    await db.destroy()
    {
      await using scoped = getDb('org1')
      await scoped.selectFrom('items').selectAll().execute()
    }
    const pool = await registry.getPool('core', 'org1')
    expect((await pool.query<{ n: number }>('select count(*)::int as n from items')).rows[0]?.n).toBe(1)
    expect(getDb('org1')).toBe(db)
    await getDb('org1').insertInto('items').values({ label: 'after' }).execute()
    expect(await labels(admin1)).toEqual(['before', 'after'])
    expect(registry.stats().pools.created).toBe(1)
    expect(registry.stats().evictions.total).toBe(0)
  })

  it('rejects an invalid org id synchronously and creates no pool', async () => {
    await using registry = registryFor({ org1: db1.url })
    const { getDb } = createKyselyAdapter<Database>(registry, { service: 'core' })
    expect(() => getDb('org 1; drop table items')).toThrow(InvalidTenantIdError)
    expect(() => getDb('')).toThrow(InvalidTenantIdError)
    const other = createKyselyAdapter<Database>(registry, { service: 'billing' })
    expect(() => other.getDb('org1')).toThrow(UnknownServiceError)
    const stats = registry.stats()
    expect(stats.pools.count).toBe(0)
    expect(stats.pools.created).toBe(0)
    expect(stats.secretCache).toMatchObject({ entries: 0, fetches: 0 })
  })

  it('resolves the secret on the first query: an unknown tenant rejects that query with SecretNotFoundError', async () => {
    await using registry = registryFor({ org1: db1.url })
    const db = createKyselyAdapter<Database>(registry, { service: 'core' }).getDb('nobody')
    expect(registry.stats().pools.created).toBe(0)
    await expect(db.selectFrom('items').selectAll().execute()).rejects.toBeInstanceOf(SecretNotFoundError)
    await expect(db.transaction().execute(() => Promise.resolve())).rejects.toBeInstanceOf(SecretNotFoundError)
    expect(registry.stats().pools.count).toBe(0)
  })

  it('passes PostgreSQL errors through with their SQLSTATE and releases the connection', async () => {
    await using registry = registryFor({ org1: db1.url })
    const db = createKyselyAdapter<Database>(registry, { service: 'core' }).getDb('org1')
    await db.insertInto('items').values({ label: 'dup' }).execute()
    const error: unknown = await db.insertInto('items').values({ label: 'dup' }).execute().catch((e: unknown) => e)
    expect(error).toMatchObject({ code: '23505' })
    expect((error as Error).stack).toContain('kysely-adapter.test.ts')
    expect(registry.stats().connections.checkedOut).toBe(0)
  })

  it('refuses stream() with a clear error and gives the connection back', async () => {
    await using registry = registryFor({ org1: db1.url })
    const db = createKyselyAdapter<Database>(registry, { service: 'core' }).getDb('org1')
    const consume = async () => {
      for await (const _row of db.selectFrom('items').selectAll().stream(10)) {
        // never reached
      }
    }
    await expect(consume()).rejects.toBeInstanceOf(UnsupportedError)
    await expect(consume()).rejects.toThrow(/does not support \.stream\(\) yet/)
    expect(registry.stats().connections.checkedOut).toBe(0)
  })

  it('refuses startTransaction() with an UnsupportedError that names the alternative', async () => {
    await using registry = registryFor({ org1: db1.url })
    const db = createKyselyAdapter<Database>(registry, { service: 'core' }).getDb('org1')
    expect(() => db.startTransaction()).toThrow(UnsupportedError)
    expect(() => db.withSchema('other').startTransaction()).toThrow(/db\.transaction\(\)\.execute/)
    expect(registry.stats().pools.created).toBe(0)
  })

  it('refuses native Kysely transactions at the driver (backstop for plain instances)', async () => {
    await using registry = registryFor({ org1: db1.url })
    const db = createKyselyAdapter<Database>(registry, { service: 'core' }).getDb('org1')
    // What a Kysely method that the adapter does not override would return: a plain Kysely on our driver.
    const plain = Kysely.prototype.withSchema.call(db, 'public') as Kysely<Database>
    expect(plain.constructor).toBe(Kysely)
    const error: unknown = await plain
      .transaction()
      .execute(() => plain.insertInto('items').values({ label: 'native' }).execute())
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(TransactionPropagationError)
    expect(isHyperconnError(error)).toBe(true)
    expect(await labels(admin1)).toEqual([])
    expect(registry.stats().connections.checkedOut).toBe(0)
  })
})

describe('kysely version drift', () => {
  // The adapter overrides every Kysely method that returns a new instance or starts a transaction. A new
  // Kysely release that adds such a method (0.29 adds $extendTables, $omitTables, $pickTables) fails here.
  it('Kysely exposes exactly the methods the adapter was written against', () => {
    const names = (proto: object) => Object.getOwnPropertyNames(proto).sort()
    expect(names(Kysely.prototype)).toEqual(
      [
        'constructor', 'schema', 'dynamic', 'introspection', 'case', 'fn', 'transaction', 'startTransaction',
        'connection', 'withPlugin', 'withoutPlugins', 'withSchema', 'withTables', 'destroy', 'isTransaction',
        'getExecutor', 'executeQuery',
      ].sort(),
    )
    expect(names(Transaction.prototype)).toEqual(
      ['constructor', 'isTransaction', 'transaction', 'connection', 'destroy', 'withPlugin', 'withoutPlugins', 'withSchema', 'withTables'].sort(),
    )
    expect(names(TransactionBuilder.prototype)).toEqual(['constructor', 'execute', 'setAccessMode', 'setIsolationLevel'])
    expect(names(ConnectionBuilder.prototype)).toEqual(['constructor', 'execute'])
  })
})
