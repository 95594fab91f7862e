import { describe, expect, it } from 'vitest'
import knexModule from 'knex'
import {
  PoolSaturatedError,
  createRegistry,
  hyperconnErrorOf,
  InvalidOptionsError,
  InvalidTenantIdError,
  isHyperconnError,
  SecretNotFoundError,
  staticSecrets,
  UnknownServiceError,
  UnsupportedError,
} from '@hyperconn/core'
import { createKnexAdapter } from '../src/index.js'
import type { KnexAdapterOptions } from '../src/index.js'
import { committedRows, connectionCount, createFixture } from './support.js'

describe('@hyperconn/knex queries', () => {
  it('runs query-builder CRUD, raw and schema.createTable on the tenant database', async () => {
    await using fx = await createFixture()
    const { getDb } = createKnexAdapter(fx.registry, { service: 'core' })
    const db = getDb('org1')

    await db.schema.createTable('items', (t) => {
      t.increments('id')
      t.text('name').notNullable().unique()
      t.integer('qty').defaultTo(0).index()
    })
    const inserted = await db('items').insert([{ name: 'a', qty: 1 }, { name: 'b' }]).returning(['id', 'name'])
    expect(inserted.map((r: { name: string }) => r.name)).toEqual(['a', 'b'])
    expect(await db('items').where({ name: 'a' }).update({ qty: 5 })).toBe(1)
    expect(await db('items').where({ name: 'b' }).del()).toBe(1)
    expect(await db('items').select('name', 'qty')).toEqual([{ name: 'a', qty: 5 }])
    expect(await db('items').first('name')).toEqual({ name: 'a' })
    expect(await db('items').pluck('name')).toEqual(['a'])

    const raw = await db.raw<{ rows: { sum: number }[] }>('SELECT ?::int + ?::int AS sum', [2, 3])
    expect(raw.rows[0]?.sum).toBe(5)
    const named = await db.raw('SELECT :x::text AS x', { x: 'named' })
    expect(named.rows).toEqual([{ x: 'named' }])
    // QueryConfig options (rowMode) reach pg untouched.
    const arrays = await db.raw('SELECT 1 AS a, 2 AS b').options({ rowMode: 'array' })
    expect(arrays.rows).toEqual([[1, 2]])

    expect(await db.schema.hasTable('items')).toBe(true)
    const observer = await fx.observe()
    expect(await committedRows(observer, 'items')).toEqual(['a'])
    const indexes = await observer.query("SELECT indexname FROM pg_indexes WHERE tablename = 'items' ORDER BY indexname")
    expect(indexes.rows.map((r: { indexname: string }) => r.indexname)).toEqual([
      'items_name_unique',
      'items_pkey',
      'items_qty_index',
    ])
  })

  it('keeps tenants apart: each org sees only the rows of its own database', async () => {
    await using fx = await createFixture(2)
    const { getDb } = createKnexAdapter(fx.registry, { service: 'core' })
    for (const org of ['org1', 'org2']) {
      await getDb(org).schema.createTable('notes', (t) => t.text('name'))
      await getDb(org)('notes').insert({ name: `from-${org}` })
    }
    expect(await getDb('org1')('notes').pluck('name')).toEqual(['from-org1'])
    expect(await getDb('org2')('notes').pluck('name')).toEqual(['from-org2'])
    expect(await committedRows(await fx.observe(0), 'notes')).toEqual(['from-org1'])
    expect(await committedRows(await fx.observe(1), 'notes')).toEqual(['from-org2'])
    expect(getDb('org1')).toBe(getDb('org1'))
    expect(getDb('org1')).not.toBe(getDb('org2'))
  })

  it('validates the org id synchronously and creates no pool for an invalid one', async () => {
    await using fx = await createFixture()
    const { getDb } = createKnexAdapter(fx.registry, { service: 'core' })
    expect(() => getDb('../etc')).toThrow(InvalidTenantIdError)
    expect(() => getDb('')).toThrow(InvalidTenantIdError)
    expect(fx.registry.stats().pools.created).toBe(0)
    expect(() => createKnexAdapter(fx.registry, { service: 'billing' }).getDb('org1')).toThrow(UnknownServiceError)
  })

  it('resolves the secret on the first query: an unknown tenant rejects that query with SecretNotFoundError', async () => {
    await using fx = await createFixture()
    const { getDb } = createKnexAdapter(fx.registry, { service: 'core' })
    const db = getDb('org-missing')
    expect(fx.registry.stats().pools.created).toBe(0)
    const error: unknown = await db.raw('SELECT 1').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(SecretNotFoundError)
    await expect(db.transaction(async (trx) => trx.raw('SELECT 1'))).rejects.toBeInstanceOf(SecretNotFoundError)
    expect(fx.registry.stats().pools.created).toBe(0)
  })

  it('has no tarn pool: only the registry pool connects, and destroy() ends nothing', async () => {
    await using fx = await createFixture()
    const { getDb } = createKnexAdapter(fx.registry, { service: 'core' })
    const db = getDb('org1')
    expect(db.client.pool).toBeUndefined()
    db.initialize()
    expect(db.client.pool).toBeUndefined()

    await Promise.all(Array.from({ length: 5 }, () => db.raw('SELECT pg_sleep(0.05)')))
    const observer = await fx.observe()
    const registryConnections = fx.registry.stats().connections.total
    expect(registryConnections).toBeGreaterThan(0)
    expect(await connectionCount(observer, fx.databases[0]!.name)).toBe(registryConnections)

    await db.destroy()
    expect(fx.registry.stats().connections.total).toBe(registryConnections)
    const pool = await fx.registry.getPool('core', 'org1')
    expect((await pool.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }])
    // The cached instance stays usable for the next caller of getDb.
    expect(getDb('org1')).toBe(db)
    expect((await db.raw('SELECT 2 AS two')).rows).toEqual([{ two: 2 }])
    expect(await connectionCount(observer, fx.databases[0]!.name)).toBe(fx.registry.stats().connections.total)
  })

  it('refuses .stream() and .pipe() before taking a connection', async () => {
    await using fx = await createFixture()
    const db = createKnexAdapter(fx.registry, { service: 'core' }).getDb('org1')
    expect(() => db.raw('SELECT 1').stream()).toThrow(UnsupportedError)
    expect(() => db.raw('SELECT 1').stream()).toThrow(/not supported by @hyperconn\/knex yet/)
    expect(() => db.select(db.raw('1')).pipe(process.stdout)).toThrow(UnsupportedError)
    expect(fx.registry.stats().pools.created).toBe(0)
  })

  it('applies knex options (wrapIdentifier, postProcessResponse) and emits query events', async () => {
    await using fx = await createFixture()
    const db = createKnexAdapter(fx.registry, {
      service: 'core',
      wrapIdentifier: (value, origImpl) => origImpl(value.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)),
      postProcessResponse: (result: unknown) =>
        Array.isArray(result) ? result.map((row: Record<string, unknown>) => ({ ...row, seen: true })) : result,
    }).getDb('org1')
    const events: string[] = []
    db.on('query', (q: { sql: string; __knexUid: string }) => {
      events.push(q.sql)
      // A known read on a fresh connection runs before anything is acquired (see KnexConnection).
      expect(q.__knexUid).toMatch(q.sql.startsWith('select') ? /^hyperconn_lazy$/ : /^hyperconn_pid\d+$/)
    })
    await db.schema.createTable('people', (t) => t.text('firstName'))
    await db('people').insert({ firstName: 'Ada' })
    expect(await db('people').select('firstName')).toEqual([{ first_name: 'Ada', seen: true }])
    expect(events).toContain('select "first_name" from "people"')
  })

  it('cancels a query on timeout with { cancel: true } through the tenant pool', async () => {
    await using fx = await createFixture()
    const db = createKnexAdapter(fx.registry, { service: 'core' }).getDb('org1')
    const error: unknown = await db.raw('SELECT pg_sleep(10)').timeout(200, { cancel: true }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(knexModule.KnexTimeoutError)
    const observer = await fx.observe()
    // pg_cancel_backend() only signals the backend, which stops the query moments later (longer under
    // load); well before pg_sleep(10) would end on its own, the query must be gone.
    const deadline = Date.now() + 5_000
    let running: unknown
    do {
      const result = await observer.query(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'SELECT pg_sleep(10)%' AND state = 'active'",
      )
      running = result.rows[0]
      if ((running as { n: number }).n === 0) break
      await new Promise((resolve) => setTimeout(resolve, 20))
    } while (Date.now() < deadline)
    expect(running).toEqual({ n: 0 })
    expect((await db.raw('SELECT 1 AS ok')).rows).toEqual([{ ok: 1 }])
  })

  it('a cancel that cannot get a second connection (pool max 1) fails after acquireTimeoutMs, with core\'s PoolSaturatedError as cause', async () => {
    await using fx = await createFixture()
    await using registry = createRegistry({
      project: 'p',
      services: ['core'],
      secrets: staticSecrets({ 'p-org1': { 'core-postgresql': fx.databases[0]!.url } }),
      pool: { max: 1 },
      connections: { acquireTimeoutMs: 300 },
    })
    const db = createKnexAdapter(registry, { service: 'core' }).getDb('org1')
    const error: unknown = await db.raw('SELECT pg_sleep(3)').timeout(100, { cancel: true }).catch((e: unknown) => e)
    // knex rewrites the message of the error the cancel failed with; core's error survives as its cause.
    expect((error as Error).message).toMatch(/cancelling of query failed/)
    const cause = hyperconnErrorOf(error)
    expect(cause).toBeInstanceOf(PoolSaturatedError)
    expect(cause?.message).toMatch(/^Waited \d+ ms \(connections.acquireTimeoutMs\) for a connection for service "core", org "org1"/)
    // The query's connection was destroyed rather than reused (knex marked it disposed): the pool serves again.
    expect((await db.raw('SELECT 1 AS ok')).rows).toEqual([{ ok: 1 }])
  })

  it('supports batchInsert and withUserParams clones', async () => {
    await using fx = await createFixture()
    const db = createKnexAdapter(fx.registry, { service: 'core' }).getDb('org1')
    await db.schema.createTable('bulk', (t) => t.text('name'))
    await db.batchInsert('bulk', [{ name: 'x' }, { name: 'y' }, { name: 'z' }], 2)
    const clone = db.withUserParams({ tag: 'clone' })
    expect(clone.userParams).toEqual({ tag: 'clone' })
    expect(await clone('bulk').count<{ count: string }[]>('* as count')).toEqual([{ count: '3' }])
    expect(clone.client.pool).toBeUndefined()
    await clone.transaction(async (trx) => trx('bulk').insert({ name: 'w' }))
    expect(await committedRows(await fx.observe(), 'bulk')).toEqual(['w', 'x', 'y', 'z'])
  })

  it('rejects knex options that cannot apply to registry-owned connections', async () => {
    await using fx = await createFixture()
    const bad = (options: object) => () => createKnexAdapter(fx.registry, { service: 'core', ...options })
    expect(bad({ connection: 'postgresql://x' })).toThrow(/connection strings come from the registry/)
    expect(bad({ pool: { max: 1 } })).toThrow(/createRegistry\(\{ pool \}\)/)
    expect(bad({ searchPath: ['app'] })).toThrow(/withSchema/)
    expect(bad({ client: 'pg' })).toThrow(InvalidOptionsError)
    expect(bad({ colour: 'blue' })).toThrow(/unknown option "colour"/)
    for (const maxInstances of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, '5']) {
      expect(bad({ maxInstances })).toThrow(/maxInstances must be a positive safe integer/)
    }
    const create = (options: unknown) => () => createKnexAdapter(fx.registry, options as KnexAdapterOptions)
    expect(create({})).toThrow(/options.service/)
    for (const service of ['', 'bad service', '-core', 'a'.repeat(65), 42, undefined]) {
      expect(create({ service })).toThrow(InvalidOptionsError)
    }
    expect(create(null)).toThrow(InvalidOptionsError)
    expect(bad({ maxInstances: 1 })).not.toThrow()
    // A well-formed service the registry does not know passes here; the first getDb throws UnknownServiceError.
    expect(create({ service: 'billing' })).not.toThrow()
    try {
      bad({ searchPath: 'x' })()
    } catch (error) {
      expect(isHyperconnError(error)).toBe(true)
    }
  })

  it('drops least recently used instances beyond maxInstances, without touching pools', async () => {
    await using fx = await createFixture(2)
    const { getDb } = createKnexAdapter(fx.registry, { service: 'core', maxInstances: 1 })
    const first = getDb('org1')
    await first.raw('SELECT 1')
    getDb('org2')
    expect(getDb('org1')).not.toBe(first)
    expect((await first.raw('SELECT 1 AS still')).rows).toEqual([{ still: 1 }])
  })
})
