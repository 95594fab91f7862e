import {
  createRegistry,
  InvalidOptionsError,
  InvalidTenantIdError,
  SecretNotFoundError,
  staticSecrets,
  UnknownServiceError,
} from '@hyperconn/core'
import type { Registry } from '@hyperconn/core'
import { useTestDatabases } from '@hyperconn/testkit/vitest'
import type { TestDatabase } from '@hyperconn/testkit'
import { DrizzleQueryError, eq, sql } from 'drizzle-orm'
import pg from 'pg'
import { beforeAll, describe, expect, it } from 'vitest'
import { createDrizzleAdapter } from '../src/index.js'
import type { DrizzleAdapterOptions } from '../src/index.js'
import { CREATE_TABLES, posts, rejection, schema, userNames, users } from './support/schema.js'

const files = useTestDatabases('drz', 2, { schema: CREATE_TABLES, reset: 'TRUNCATE users, posts RESTART IDENTITY CASCADE' })
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

function registryFor(): Registry {
  return createRegistry({
    project: 'p',
    services: ['core'],
    secrets: staticSecrets({
      'p-org1': { 'core-postgresql': db1.url },
      'p-org2': { 'core-postgresql': db2.url },
    }),
  })
}

describe('getDb', () => {
  it('is synchronous and cached per org, and resolves nothing before the first query', async () => {
    await using registry = registryFor()
    const { getDb } = createDrizzleAdapter(registry, { service: 'core', schema })
    const org1 = getDb('org1')
    expect(org1).not.toBeInstanceOf(Promise)
    expect(getDb('org1')).toBe(org1)
    expect(getDb('org2')).not.toBe(org1)
    expect(registry.stats().pools.count).toBe(0)
    expect(registry.stats().secretCache).toMatchObject({ entries: 0, fetches: 0 })

    await org1.execute(sql`select 1`)
    expect(registry.stats().pools.count).toBe(1)
  })

  it('hands drizzle a client that is not a pg.Pool, so drizzle never checks out connections itself', async () => {
    await using registry = registryFor()
    const db = createDrizzleAdapter(registry, { service: 'core' }).getDb('org1')
    const client: unknown = Reflect.get(db, '$client')
    expect(client).not.toBeInstanceOf(pg.Pool)
    expect(Object.getPrototypeOf(client).constructor.name).not.toContain('Pool')
  })

  it('throws InvalidTenantIdError synchronously for a malformed org id and creates no pool', async () => {
    await using registry = registryFor()
    const { getDb } = createDrizzleAdapter(registry, { service: 'core', schema })
    expect(() => getDb('org 1; drop table users')).toThrow(InvalidTenantIdError)
    expect(() => getDb('')).toThrow(InvalidTenantIdError)
    expect(() => getDb('../org1')).toThrow(InvalidTenantIdError)
    expect(registry.stats().pools.count).toBe(0)
    expect(registry.stats().pools.created).toBe(0)
  })

  it('throws UnknownServiceError synchronously for a service the registry does not know', async () => {
    await using registry = registryFor()
    const { getDb } = createDrizzleAdapter(registry, { service: 'billing' })
    expect(() => getDb('org1')).toThrow(UnknownServiceError)
    expect(registry.stats().pools.count).toBe(0)
  })

  it('rejects the first query of a tenant without a secret with SecretNotFoundError (as the cause of DrizzleQueryError)', async () => {
    await using registry = registryFor()
    const db = createDrizzleAdapter(registry, { service: 'core', schema }).getDb('org3')
    const error = await rejection(db.select().from(users))
    expect(error).toBeInstanceOf(DrizzleQueryError)
    expect((error as Error).cause).toBeInstanceOf(SecretNotFoundError)
    // the transaction entry point is not a query: drizzle does not wrap its errors
    await expect(db.transaction(async (tx) => tx.select().from(users))).rejects.toBeInstanceOf(SecretNotFoundError)
    expect(registry.stats().pools.count).toBe(0)
  })
})

describe('createDrizzleAdapter', () => {
  it('validates its options: service syntax, unknown keys (also drizzle\'s cache), maxInstances', async () => {
    await using registry = registryFor()
    const create = (options: unknown) => () => createDrizzleAdapter(registry, options as DrizzleAdapterOptions)
    for (const service of ['', 'bad service', '-core', 'a'.repeat(65), 42, undefined]) {
      expect(create({ service })).toThrow(InvalidOptionsError)
    }
    expect(create({ service: 'core', cache: {} })).toThrow(/option "cache" is not supported: a query cache/)
    expect(create({ service: 'core', client: {} })).toThrow(InvalidOptionsError)
    expect(create({ service: 'core', colour: 'blue' })).toThrow(/unknown option "colour"/)
    for (const maxInstances of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, '5']) {
      expect(create({ service: 'core', maxInstances })).toThrow(/maxInstances must be a positive safe integer/)
    }
    expect(create(null)).toThrow(InvalidOptionsError)
    expect(create({ service: 'core', maxInstances: 1 })).not.toThrow()
    // A well-formed service the registry does not know passes here; the first getDb throws UnknownServiceError.
    expect(create({ service: 'billing' })).not.toThrow()
    expect(registry.stats().pools.created).toBe(0)
  })
})

/** What code written for drizzle()'s return type calls on `db.$client` (a pg.Pool there). */
interface PoolLikeClient {
  end(callback?: () => void): Promise<void>
}
const clientOf = (db: object): PoolLikeClient => Reflect.get(db, '$client') as PoolLikeClient

describe('db.$client', () => {
  it('end() does nothing (the registry owns the pools), so the usual Drizzle shutdown line is safe', async () => {
    await using registry = registryFor()
    const db = createDrizzleAdapter(registry, { service: 'core', schema }).getDb('org1')
    await db.insert(users).values({ name: 'ada' })
    await expect(clientOf(db).end()).resolves.toBeUndefined()
    let called = false
    await clientOf(db).end(() => (called = true))
    expect(called).toBe(true)
    const pool = await registry.getPool('core', 'org1')
    expect(pool.ended).toBe(false)
    expect(await db.$count(users)).toBe(1)
  })
})

describe('queries through getDb', () => {
  it('runs CRUD on the tenant database', async () => {
    await using registry = registryFor()
    const db = createDrizzleAdapter(registry, { service: 'core', schema }).getDb('org1')

    const inserted = await db.insert(users).values([{ name: 'ada' }, { name: 'bob' }]).returning()
    expect(inserted).toEqual([
      { id: 1, name: 'ada' },
      { id: 2, name: 'bob' },
    ])
    expect(await userNames(admin1)).toEqual(['ada', 'bob'])

    await db.update(users).set({ name: 'bea' }).where(eq(users.name, 'bob'))
    expect(await db.select({ name: users.name }).from(users).where(eq(users.id, 2))).toEqual([{ name: 'bea' }])

    await db.delete(users).where(eq(users.name, 'ada'))
    expect(await userNames(admin1)).toEqual(['bea'])
    expect(await db.$count(users)).toBe(1)
    expect(registry.stats().connections.checkedOut).toBe(0)
  })

  it('passes drizzle query configs through untouched (array row mode, type parsers, named statements)', async () => {
    await using registry = registryFor()
    const db = createDrizzleAdapter(registry, { service: 'core', schema }).getDb('org1')
    await db.insert(users).values({ name: 'ada' })
    // Joined columns with equal names only map correctly in rowMode 'array'.
    await db.insert(posts).values({ authorId: 1, title: 'hello' })
    const joined = await db.select().from(posts).innerJoin(users, eq(posts.authorId, users.id))
    expect(joined).toEqual([{ posts: { id: 1, authorId: 1, title: 'hello' }, users: { id: 1, name: 'ada' } }])
    // drizzle's type parsers keep timestamptz as text
    const [row] = await db.execute<{ at: unknown }>(sql`select '2024-01-02 03:04:05+00'::timestamptz as at`).then((r) => r.rows)
    expect(typeof row?.at).toBe('string')
    const prepared = db.select().from(users).where(eq(users.name, sql.placeholder('name'))).prepare('user_by_name')
    expect(await prepared.execute({ name: 'ada' })).toEqual([{ id: 1, name: 'ada' }])
    expect(await prepared.execute({ name: 'ada' })).toEqual([{ id: 1, name: 'ada' }])
  })

  it('runs relational queries (findMany / findFirst with relations)', async () => {
    await using registry = registryFor()
    const db = createDrizzleAdapter(registry, { service: 'core', schema }).getDb('org1')
    await db.insert(users).values([{ name: 'ada' }, { name: 'bob' }])
    await db.insert(posts).values([
      { authorId: 1, title: 'a1' },
      { authorId: 1, title: 'a2' },
      { authorId: 2, title: 'b1' },
    ])
    const all = await db.query.users.findMany({ with: { posts: { columns: { title: true } } }, orderBy: users.id })
    expect(all).toEqual([
      { id: 1, name: 'ada', posts: [{ title: 'a1' }, { title: 'a2' }] },
      { id: 2, name: 'bob', posts: [{ title: 'b1' }] },
    ])
    const post = await db.query.posts.findFirst({ where: eq(posts.title, 'b1'), with: { author: true } })
    expect(post).toEqual({ id: 3, authorId: 2, title: 'b1', author: { id: 2, name: 'bob' } })
  })

  it('keeps two orgs on their own databases', async () => {
    await using registry = registryFor()
    const { getDb } = createDrizzleAdapter(registry, { service: 'core', schema })
    await getDb('org1').insert(users).values({ name: 'one' })
    await getDb('org2').insert(users).values([{ name: 'two' }, { name: 'deux' }])

    expect(await getDb('org1').select({ name: users.name }).from(users)).toEqual([{ name: 'one' }])
    expect(await getDb('org2').query.users.findMany({ columns: { name: true } })).toEqual([{ name: 'two' }, { name: 'deux' }])
    expect(await userNames(admin1)).toEqual(['one'])
    expect(await userNames(admin2)).toEqual(['two', 'deux'])
    expect(registry.stats().pools.count).toBe(2)
  })

  it('works without a schema and with casing', async () => {
    await using registry = registryFor()
    const db = createDrizzleAdapter(registry, { service: 'core', casing: 'snake_case' }).getDb('org1')
    await db.insert(users).values({ name: 'ada' })
    await db.insert(posts).values({ authorId: 1, title: 't' })
    expect(await db.select({ authorId: posts.authorId }).from(posts)).toEqual([{ authorId: 1 }])
  })
})

describe('pool ownership', () => {
  it('never ends or evicts a registry pool, also when instances fall out of the cache', async () => {
    await using registry = registryFor()
    const ended: unknown[] = []
    registry.on('pool:end', (e) => ended.push(e))
    registry.on('pool:evict', (e) => ended.push(e))
    const { getDb } = createDrizzleAdapter(registry, { service: 'core', schema, maxInstances: 1 })

    const first = getDb('org1')
    await first.insert(users).values({ name: 'ada' })
    await first.transaction(async (tx) => {
      await tx.insert(users).values({ name: 'bob' })
    })
    await expect(first.transaction(async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom')
    await getDb('org2').select().from(users) // drops org1's instance from the cache
    const again = getDb('org1')
    expect(again).not.toBe(first)
    expect(await again.$count(users)).toBe(2)
    await first.select().from(users) // the dropped instance still works

    const pool = await registry.getPool('core', 'org1')
    expect(pool.ended).toBe(false)
    expect(ended).toEqual([])
    expect(registry.stats()).toMatchObject({ pools: { count: 2 }, evictions: { total: 0 }, connections: { checkedOut: 0 } })
  })
})
