// Failure paths found in review: draining pools that pg never reports idle, close deadlines, credential
// rotation, a slow secret source, redaction after rotation, concurrent misses over maxPools. Physical pools are
// per connection target and shared by tenants; these tests look at them through stats() and pool events.
import { createRole } from '@hyperconn/testkit'
import { adminUrl, testDatabase } from '@hyperconn/testkit/vitest'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import {
  ConnectionError,
  createRegistry,
  InvalidOptionsError,
  RegistryClosedError,
  SecretNotFoundError,
  SecretSourceError,
  staticSecrets,
} from '../src/index.js'
import type { Registry, RegistryEvents, RegistryOptions, SecretSource } from '../src/index.js'
import { ManualClock } from './support/manual-clock.js'
import { deferred } from './support/pool-access.js'

let db: Awaited<ReturnType<typeof testDatabase>>
let db2: Awaited<ReturnType<typeof testDatabase>>
let admin: pg.Client

beforeAll(async () => {
  db = await testDatabase('resil_a')
  db2 = await testDatabase('resil_b')
  admin = new pg.Client({ connectionString: db.url })
  await admin.connect()
  await admin.query('create table items (id int primary key)')
  await admin.query('insert into items values (1)')
})

afterAll(async () => {
  await admin?.end()
  await db?.[Symbol.asyncDispose]()
  await db2?.[Symbol.asyncDispose]()
})

/** A source whose secrets the test changes; `hang()` makes every fetch wait until `resume()`. */
function mutableSource(initial: Record<string, string>) {
  const urls = new Map(Object.entries(initial))
  let fetches = 0
  let gate: Promise<void> | undefined
  let open: (() => void) | undefined
  const source: SecretSource & { set(name: string, url: string): void; hang(): void; resume(): void; readonly fetches: number } = {
    async get(name: string) {
      fetches++
      if (gate) {
        await gate
        throw new SecretSourceError(name, true, 'TimeoutError')
      }
      const url = urls.get(name)
      if (url === undefined) throw new SecretNotFoundError(name)
      return { 'core-postgresql': url }
    },
    set: (name, url) => void urls.set(name, url),
    hang: () => {
      gate = new Promise((resolve) => (open = resolve))
    },
    resume: () => {
      open?.()
      gate = undefined
    },
    get fetches() {
      return fetches
    },
  }
  return source
}

/** A registry with a small connection budget: the server allows 100 and another test file runs in parallel. */
function registry(options: Omit<RegistryOptions, 'project' | 'services'>): Registry {
  return createRegistry({ project: 't', services: ['core'], connections: { max: 20 }, ...options })
}

function collect<E extends keyof RegistryEvents>(target: Registry, event: E): RegistryEvents[E][] {
  const seen: RegistryEvents[E][] = []
  target.on(event, (e) => seen.push(e))
  return seen
}

/** The same database and credentials with a different connection option: a different connection target. */
function withConnectTimeout(url: string, seconds: number): string {
  const u = new URL(url)
  u.searchParams.set('connect_timeout', String(seconds))
  return u.toString()
}

async function backends(applicationName: string): Promise<number> {
  const { rows } = await admin.query<{ n: number }>(
    'select count(*)::int as n from pg_stat_activity where application_name = $1',
    [applicationName],
  )
  return rows[0]?.n ?? 0
}

describe('draining and closing', () => {
  it('evict() resolves when a direct pool.query connect fails while the pool drains', async () => {
    const bad = db.url.replace(/:\/\/([^:]+):([^@]+)@/, '://$1:wrong-password@')
    expect(bad).not.toBe(db.url)
    const source = mutableSource({ 't-o1': bad })
    await using reg = registry({ secrets: source })
    const evictions = collect(reg, 'pool:evict')
    const ends = collect(reg, 'pool:end')
    const pool = await reg.getPool('core', 'o1')
    const failing = pool.query('select 1').catch((e: unknown) => e)
    // the connect is under way in the tenant's physical pool
    const [physical] = reg.stats().pools.list
    expect(physical).toMatchObject({ opening: 1, checkedOut: 0 })
    const evicted = reg.evict('core', 'o1')
    // announced once the cache is consistent again, a microtask later
    await Promise.resolve()
    expect(evictions).toEqual([{ pool: physical?.name, reason: 'manual' }])
    const error = (await failing) as ConnectionError
    expect(error).toBeInstanceOf(ConnectionError)
    expect(error.sqlState).toBe('28P01')
    expect(error.message).toContain('"o1"')
    expect(error.message).not.toContain('wrong-password')
    await evicted
    expect(ends).toEqual([{ pool: physical?.name, forced: false }])
    expect(reg.stats().pools).toMatchObject({ count: 0, draining: 0 })
    expect(reg.stats().connections).toEqual({ total: 0, idle: 0, waiting: 0, checkedOut: 0 })
    // the refused password made it read the secret once more; the same password was not tried again
    expect(source.fetches).toBe(2)
  })

  it('close() at its deadline ends idle connections too, and reports pool:end once', async () => {
    const reg = registry({ secrets: mutableSource({ 't-o2': db.url }), pool: { max: 3, application_name: 'hc-resil-close' } })
    const ends = collect(reg, 'pool:end')
    const pool = await reg.getPool('core', 'o2')
    const clients = await Promise.all([pool.connect(), pool.connect(), pool.connect()])
    clients[0]?.release()
    clients[1]?.release()
    const leaked = clients[2]
    leaked?.on('error', () => {})
    const [physical] = reg.stats().pools.list
    expect(physical).toMatchObject({ total: 3, idle: 2, checkedOut: 1 })
    expect(await backends('hc-resil-close')).toBe(3)
    await reg.close({ timeoutMs: 100 })
    await vi.waitFor(async () => expect(await backends('hc-resil-close')).toBe(0))
    expect(reg.stats().pools).toMatchObject({ count: 0, draining: 0, list: [] })
    expect(pool.totalCount).toBe(1)
    leaked?.release()
    expect(pool.totalCount).toBe(0)
    expect(reg.stats().tenants.active).toEqual([])
    expect(ends).toEqual([{ pool: physical?.name, forced: true }])
  })

  it('a connection cut off at the close deadline rejects its next query with RegistryClosedError', async () => {
    const reg = registry({ secrets: mutableSource({ 't-o8': db.url }) })
    const tenant = reg.tenant('o8', 'core')
    const conn = await tenant.acquire()
    expect((await conn.query('select 1 as one')).rows[0].one).toBe(1)
    await reg.close({ timeoutMs: 50 })
    await expect(conn.query('select 2')).rejects.toBeInstanceOf(RegistryClosedError)
    conn.release()
    await expect(tenant.query('select 3')).rejects.toBeInstanceOf(RegistryClosedError)
    expect(reg.stats().connections.checkedOut).toBe(0)
  })

  it('close() and warm() reject malformed arguments with InvalidOptionsError', async () => {
    await using reg = registry({ secrets: mutableSource({}) })
    await expect(reg.warm('org1' as unknown as string[])).rejects.toBeInstanceOf(InvalidOptionsError)
    await expect(reg.warm(['org1'], { connections: -1 })).rejects.toBeInstanceOf(InvalidOptionsError)
    await expect(reg.close({ timeoutMs: Number.NaN })).rejects.toBeInstanceOf(InvalidOptionsError)
    expect(reg.stats().closed).toBe(false)
  })
})

describe('maxPools under concurrent misses', () => {
  it('never ends a pool that has a checkout, and every caller is eventually served', async () => {
    const orgs = ['a1', 'a2', 'a3', 'a4', 'a5', 'a6']
    // connect_timeout is part of a target's identity: six physical pools' worth of targets on one database
    const urls = Object.fromEntries(orgs.map((o, i) => [`t-${o}`, { 'core-postgresql': withConnectTimeout(db.url, 10 + i) }]))
    await using reg = registry({ eviction: { maxPools: 2 }, secrets: staticSecrets(urls) })
    const created: string[] = []
    const evictedWhileInUse: unknown[] = []
    let mostPools = 0
    reg.on('pool:create', (e) => {
      created.push(e.pool)
      mostPools = Math.max(mostPools, reg.stats().pools.count)
    })
    reg.on('pool:evict', (e) => {
      const pool = reg.stats().pools.list.find((p) => p.name === e.pool)
      if (pool === undefined || pool.checkedOut > 0 || pool.opening > 0) evictedWhileInUse.push({ event: e, pool })
    })
    // two transactions per tenant, all at once: each holds its connection across several round trips
    const results = await Promise.allSettled(
      [...orgs, ...orgs].map((o) => {
        const tenant = reg.tenant(o, 'core')
        return tenant.transaction(async () => {
          await tenant.query('select 1')
          const { rows } = await tenant.query<{ two: number }>('select 2 as two')
          return rows[0]?.two
        })
      }),
    )
    expect(results.filter((r) => r.status === 'rejected')).toEqual([])
    expect(results.map((r) => (r as PromiseFulfilledResult<unknown>).value)).toEqual(Array(12).fill(2))
    expect(evictedWhileInUse).toEqual([])
    expect(mostPools).toBeLessThanOrEqual(2)
    const stats = reg.stats()
    expect(stats.pools.count).toBeLessThanOrEqual(2)
    expect(created).toHaveLength(stats.pools.created)
    // every tenant needed its own pool at some point; room was made by ending unused ones
    expect(new Set(created).size).toBeGreaterThanOrEqual(6)
    expect(stats.evictions.lru).toBe(stats.pools.created - stats.pools.count)
    expect(stats.connections.checkedOut).toBe(0)
    expect(stats.tenants.active).toEqual([])
  })
})

describe('credential rotation', () => {
  it('N concurrent callers failing with 28P01 after a rotation all retry on one rebuilt pool', async () => {
    await using role = await createRole(adminUrl(), 'hc_resil_rot', 'old-pass-1111')
    const source = mutableSource({ 't-o3': db.urlFor(role.user, 'old-pass-1111') })
    await using reg = registry({ secrets: source, pool: { max: 5 } })
    const created = collect(reg, 'pool:create')
    const tenant = reg.tenant('o3', 'core')
    expect((await tenant.query('select current_user as u')).rows[0].u).toBe(role.user)
    expect(reg.stats().connections).toMatchObject({ total: 1, idle: 1 })
    await admin.query(`alter role hc_resil_rot password 'new-pass-2222'`)
    source.set('t-o3', db.urlFor(role.user, 'new-pass-2222'))
    // the old connection goes away (as a restart or failover would do)
    await admin.query(`select pg_terminate_backend(pid) from pg_stat_activity where usename = 'hc_resil_rot'`)
    await vi.waitFor(() => expect(reg.stats().connections.total).toBe(0))
    const results = await Promise.allSettled([1, 2, 3, 4, 5].map(() => tenant.query('select current_user as u')))
    expect(results.filter((r) => r.status === 'rejected')).toEqual([])
    for (const r of results) expect((r as PromiseFulfilledResult<{ rows: { u: string }[] }>).value.rows[0]?.u).toBe(role.user)
    // one refresh for all five callers
    expect(source.fetches).toBe(2)
    // the credentials are part of the target: a second physical pool holds the new password's connections
    expect(created).toHaveLength(2)
    expect(created[1]?.pool).not.toBe(created[0]?.pool)
    const fresh = reg.stats().pools.list.find((p) => p.name === created[1]?.pool)
    expect(fresh?.total).toBeGreaterThanOrEqual(1)
    expect(fresh?.total).toBeLessThanOrEqual(5)
    expect(reg.stats().pools.list.find((p) => p.name === created[0]?.pool)?.total ?? 0).toBe(0)
    expect((await tenant.query('select 1 as again')).rows[0].again).toBe(1)
    expect(created).toHaveLength(2)
    expect(source.fetches).toBe(2)
  })

  it('a secret that moves the tenant to another database takes effect on use once the cached secret expires', async () => {
    const clock = new ManualClock()
    const source = mutableSource({ 't-o4': db.url })
    await using reg = registry({ secrets: source, clock, secretCache: { ttlMs: 1_000 } })
    const created = collect(reg, 'pool:create')
    const tenant = reg.tenant('o4', 'core')
    expect((await tenant.query('select current_database() as d')).rows[0].d).toBe(db.name)
    source.set('t-o4', db2.url)
    // within the TTL the cached secret is used: no fetch, same database
    expect((await tenant.query('select current_database() as d')).rows[0].d).toBe(db.name)
    expect(source.fetches).toBe(1)
    clock.advance(60_000)
    // the first use after expiry still runs on the cached binding and refreshes it in the background;
    // shortly after, queries land on the new database
    await tenant.query('select 1')
    await vi.waitFor(async () => expect((await tenant.query('select current_database() as d')).rows[0].d).toBe(db2.name))
    expect(source.fetches).toBe(2)
    expect(created.map((e) => e.pool)).toEqual([expect.stringContaining(db.name), expect.stringContaining(db2.name)])
    expect((await tenant.query('select current_database() as d')).rows[0].d).toBe(db2.name)
    expect(source.fetches).toBe(2)
  })

  it('a tenant that holds a transaction open the whole time still moves its new queries after the TTL', async () => {
    const clock = new ManualClock()
    const source = mutableSource({ 't-o7': db.url })
    await using reg = registry({ secrets: source, clock, secretCache: { ttlMs: 1_000 }, eviction: { sweepIntervalMs: 10_000 } })
    const tenant = reg.tenant('o7', 'core')
    const inTransaction = deferred()
    const finish = deferred()
    const transaction = tenant.transaction(async () => {
      const before = (await tenant.query('select current_database() as d')).rows[0].d as string
      inTransaction.resolve()
      await finish.promise
      // the transaction stays on the connection it began on
      const after = (await tenant.query('select current_database() as d')).rows[0].d as string
      return [before, after]
    })
    await inTransaction.promise
    source.set('t-o7', db2.url)
    clock.advance(10_000)
    // outside the transaction: the busy tenant's new queries move to the new database
    await vi.waitFor(async () => expect((await tenant.query('select current_database() as d')).rows[0].d).toBe(db2.name))
    expect(reg.stats().tenants.active).toContainEqual({ service: 'core', orgId: 'o7', checkedOut: 1, waiting: 0 })
    finish.resolve()
    expect(await transaction).toEqual([db.name, db.name])
    expect((await tenant.query('select current_database() as d')).rows[0].d).toBe(db2.name)
    expect(source.fetches).toBe(2)
  })

  it('a warm tenant opens new connections while the secret source hangs after the TTL', async () => {
    const clock = new ManualClock()
    const source = mutableSource({ 't-o5': db.url })
    await using registry = createRegistry({
      project: 't',
      services: ['core'],
      secrets: source,
      connections: { max: 20 },
      clock,
      pool: { maxUses: 1, connectionTimeoutMillis: 5_000 },
      secretCache: { ttlMs: 1_000 },
    })
    const tenant = registry.tenant('o5', 'core')
    await tenant.query('select 1')
    clock.advance(5_000)
    source.hang()
    expect((await tenant.query('select 1 as ok')).rows[0].ok).toBe(1)
    source.resume()
  })

  it('after a rotation, the new password is redacted from query errors too', async () => {
    await using role = await createRole(adminUrl(), 'hc_resil_red', 'Old-Secret-Aa11')
    const clock = new ManualClock()
    const source = mutableSource({ 't-m1': db.urlFor(role.user, 'Old-Secret-Aa11') })
    await using registry = createRegistry({
      project: 't',
      services: ['core'],
      secrets: source,
      connections: { max: 20 },
      clock,
      pool: { maxUses: 1 },
      secretCache: { ttlMs: 1_000 },
    })
    const tenant = registry.tenant('m1', 'core')
    const before = (await tenant.query('select $1::int', ['Old-Secret-Aa11']).catch((e: unknown) => e)) as Error
    await admin.query(`alter role hc_resil_red password 'New-Secret-Bb22'`)
    source.set('t-m1', db.urlFor(role.user, 'New-Secret-Bb22'))
    clock.advance(5_000)
    await tenant.query('select 1')
    const after = (await tenant.query('select $1::int', ['New-Secret-Bb22']).catch((e: unknown) => e)) as Error
    expect(before.message).not.toContain('Old-Secret-Aa11')
    expect(after.message).not.toContain('New-Secret-Bb22')
    // still pg's own error, with its SQLSTATE
    expect((after as Error & { code?: string }).code).toBe('22P02')
  })
})

describe('query errors', () => {
  it('keep their class and SQLSTATE when an unrelated secret value appears in the stack', async () => {
    await using registry = createRegistry({
      project: 't',
      services: ['core'],
      secrets: staticSecrets({ 't-h1': { 'core-postgresql': db.url, dbname: 'work' } }),
      connections: { max: 20 },
    })
    const error = await registry.tenant('h1', 'core').query('insert into items values (1)').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(pg.DatabaseError)
    expect((error as { code?: string }).code).toBe('23505')
  })
})

describe('acquire() inside nested scopes', () => {
  it('an outer connection used inside a savepoint runs there instead of deadlocking', async () => {
    await using registry = createRegistry({
      project: 't',
      services: ['core'],
      secrets: mutableSource({ 't-o6': db.url }),
      connections: { max: 20 },
    })
    const tenant = registry.tenant('o6', 'core')
    const depth = await tenant.transaction(async () => {
      const outer = await tenant.acquire()
      return tenant.transaction(async () => (await outer.query('select 1 as one')).rows[0].one as number, {
        propagation: 'nested',
      })
    })
    expect(depth).toBe(1)
    expect(registry.stats().connections.checkedOut).toBe(0)
  })
})

