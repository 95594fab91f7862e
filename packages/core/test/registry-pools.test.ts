import { once } from 'node:events'
import pg from 'pg'
import { testDatabase } from '@hyperconn/testkit/vitest'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { createRegistry, PoolSaturatedError, RegistryClosedError, staticSecrets } from '../src/index.js'
import type { PhysicalPoolStats, Registry, RegistryEvents } from '../src/index.js'
import { ManualClock } from './support/manual-clock.js'
import { deferred } from './support/pool-access.js'

// Physical pools are per connection target (host, port, database, user, credentials, connection options):
// tenants that must get pools of their own are given databases of their own.
let db: Awaited<ReturnType<typeof testDatabase>>
let dbB: Awaited<ReturnType<typeof testDatabase>>
let dbC: Awaited<ReturnType<typeof testDatabase>>
let admin: pg.Client

beforeAll(async () => {
  db = await testDatabase('regpool')
  dbB = await testDatabase('regpool_b')
  dbC = await testDatabase('regpool_c')
  admin = new pg.Client({ connectionString: db.url })
  await admin.connect()
})

afterAll(async () => {
  await admin?.end()
  await db?.[Symbol.asyncDispose]()
  await dbB?.[Symbol.asyncDispose]()
  await dbC?.[Symbol.asyncDispose]()
})

/** orgs: org id → URL (default: the shared test database). */
function secrets(orgs: string[] | Record<string, string>) {
  const urls = Array.isArray(orgs) ? Object.fromEntries(orgs.map((o) => [o, db.url])) : orgs
  return staticSecrets(Object.fromEntries(Object.entries(urls).map(([o, url]) => [`t-${o}`, { 'core-postgresql': url }])))
}

function registryFor(orgs: string[] | Record<string, string>, extra: Partial<Parameters<typeof createRegistry>[0]> = {}): Registry {
  // A small budget: the server allows 100 connections and another test file runs in parallel.
  return createRegistry({ project: 't', services: ['core'], secrets: secrets(orgs), connections: { max: 20 }, ...extra })
}

function collect<E extends keyof RegistryEvents>(registry: Registry, event: E): RegistryEvents[E][] {
  const seen: RegistryEvents[E][] = []
  registry.on(event, (e) => seen.push(e))
  return seen
}

/** The physical pool whose target is `database` (names are `host:port/database@user`, `#n` when repeated). */
function poolOf(registry: Registry, database: string): PhysicalPoolStats | undefined {
  return registry.stats().pools.list.find((p) => p.name.includes(`/${database}@`) && !p.draining)
}

/** Lets announced events (a microtask after the cache change) and socket closes land. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

describe('pool cache', () => {
  it('survives pg_terminate_backend on idle connections: event emitted, next query succeeds', async () => {
    await using registry = registryFor(['o1'], { pool: { max: 3, application_name: 'hc-terminate-test' } })
    const errors = collect(registry, 'connection:error')
    const pool = await registry.getPool('core', 'o1')
    // three idle connections in the tenant's physical pool
    const clients = await Promise.all([pool.connect(), pool.connect(), pool.connect()])
    expect(pool.totalCount).toBe(3)
    clients.forEach((c) => c.release())
    expect(pool.totalCount).toBe(0)
    const physical = poolOf(registry, db.name)
    expect(physical).toMatchObject({ total: 3, idle: 3, checkedOut: 0 })
    const allReported = new Promise<void>((resolve) => {
      registry.on('connection:error', () => errors.length >= 3 && resolve())
    })
    const killed = await admin.query(
      `select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'hc-terminate-test' and pid <> pg_backend_pid()`,
    )
    expect(killed.rowCount).toBe(3)
    await allReported
    expect(errors).toHaveLength(3)
    for (const error of errors) {
      expect(error).toMatchObject({ pool: physical?.name, phase: 'idle', sqlState: '57P01' })
      expect(error.message).toMatch(/terminat/i)
    }
    await vi.waitFor(() => expect(poolOf(registry, db.name)).toMatchObject({ total: 0, idle: 0 }))
    const result = await pool.query('select 41 + 1 as answer')
    expect(result.rows[0].answer).toBe(42)
    expect(registry.stats().connectionErrors).toBe(3)
  })

  it('survives a checked-out client whose backend is killed', async () => {
    await using registry = registryFor(['o2'], { pool: { application_name: 'hc-terminate-co' } })
    const errors = collect(registry, 'connection:error')
    const pool = await registry.getPool('core', 'o2')
    const client = await pool.connect()
    const dead = once(client, 'error')
    await admin.query(`select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'hc-terminate-co'`)
    await dead
    expect(errors.some((e) => e.phase === 'checked-out')).toBe(true)
    client.release(true)
    expect((await pool.query('select 1 as ok')).rows[0].ok).toBe(1)
  })

  it("an evicted pool's in-flight query completes; later calls get a fresh pool; the old object still works", async () => {
    // advisory locks are per database: the tenant uses the admin's database
    await using registry = registryFor({ o3: db.url })
    const created = collect(registry, 'pool:create')
    const evictions = collect(registry, 'pool:evict')
    const ended = collect(registry, 'pool:end')
    const pool = await registry.getPool('core', 'o3')
    await admin.query('select pg_advisory_lock(4242)')
    const inFlight = pool.query('select pg_advisory_lock(4242), 7 as seven')
    // wait until the query is really waiting on the lock
    await vi.waitFor(async () => {
      const r = await admin.query(`select count(*)::int as n from pg_locks where locktype = 'advisory' and not granted`)
      expect(r.rows[0].n).toBeGreaterThan(0)
    })
    expect(created).toHaveLength(1)
    const oldPool = created[0]?.pool
    expect(oldPool).toContain(db.name)
    const evicted = registry.evict('core', 'o3')
    let evictDone = false
    void evicted.then(() => (evictDone = true))
    // events are announced once the cache is consistent again (a microtask later)
    await vi.waitFor(() => expect(evictions).toEqual([{ pool: oldPool, reason: 'manual' }]))
    expect(registry.stats().tenants.cached).toBe(0)
    expect(registry.stats().pools).toMatchObject({ count: 0, draining: 1 })
    // the tenant's binding is resolved again; its next query opens a new physical pool, not the draining one
    const fresh = await registry.getPool('core', 'o3')
    // getPool hands out the same tenant-bound object; what is fresh is the physical pool below it
    expect(fresh).toBe(pool)
    expect((await fresh.query('select 6 as six')).rows[0].six).toBe(6)
    expect(created).toHaveLength(2)
    expect(created[1]?.pool).not.toBe(oldPool)
    expect(evictDone).toBe(false)
    expect(ended).toEqual([])
    await admin.query('select pg_advisory_unlock(4242)')
    const row = (await inFlight).rows[0]
    expect(row.seven).toBe(7)
    await evicted
    expect(ended).toEqual([{ pool: oldPool, forced: false }])
    expect(registry.stats().pools).toMatchObject({ count: 1, draining: 0 })
    await admin.query('select pg_advisory_unlock_all()')
    // the caller that kept the evicted pool object is routed to the current physical pool
    expect((await pool.query('select 5 as five, current_database() as d')).rows[0]).toEqual({ five: 5, d: db.name })
    expect((await fresh.query('select 6 as six')).rows[0].six).toBe(6)
    expect(created).toHaveLength(2)
  })

  it('evict() keeps a physical pool that another cached tenant still uses', async () => {
    await using registry = registryFor({ s1: dbB.url, s2: dbB.url })
    const evictions = collect(registry, 'pool:evict')
    const [s1, s2] = await Promise.all([registry.getPool('core', 's1'), registry.getPool('core', 's2')])
    expect(s1).not.toBe(s2)
    await Promise.all([s1.query('select 1'), s2.query('select 1')])
    expect(registry.stats().pools.count).toBe(1)
    await registry.evict('core', 's1')
    expect(evictions).toEqual([])
    expect(registry.stats().tenants.cached).toBe(1)
    expect(registry.stats().pools.count).toBe(1)
    await registry.evict('core', 's2')
    expect(evictions).toEqual([{ pool: expect.stringContaining(dbB.name), reason: 'manual' }])
    expect(registry.stats().pools).toMatchObject({ count: 0, draining: 0 })
  })

  it('pool.end() from outside cannot end a registry pool', async () => {
    await using registry = registryFor(['o4'])
    const pool = await registry.getPool('core', 'o4')
    await pool.end()
    expect((await pool.query('select 1 as one')).rows[0].one).toBe(1)
    await pool.end()
    expect(registry.stats().pools.count).toBe(1)
    expect((await pool.query('select 2 as two')).rows[0].two).toBe(2)
  })

  it('evicts the least recently used unused physical pool at maxPools', async () => {
    const clock = new ManualClock()
    await using registry = registryFor({ a: db.url, b: dbB.url, c: dbC.url }, { clock, eviction: { maxPools: 2 } })
    const evictions = collect(registry, 'pool:evict')
    const a = await registry.getPool('core', 'a')
    await a.query('select 1')
    clock.advance(10)
    await (await registry.getPool('core', 'b')).query('select 1')
    clock.advance(10)
    await a.query('select 1') // a's pool is now more recently used than b's
    clock.advance(10)
    const c = await registry.getPool('core', 'c')
    expect(registry.stats().pools.count).toBe(2)
    expect(evictions).toEqual([])
    await c.query('select 1')
    expect(evictions).toEqual([{ pool: expect.stringContaining(dbB.name), reason: 'lru' }])
    expect(registry.stats().pools.count).toBe(2)
    expect(poolOf(registry, db.name)).toBeDefined()
    expect(poolOf(registry, dbC.name)).toBeDefined()
    expect(poolOf(registry, dbB.name)).toBeUndefined()
    expect(registry.stats().evictions).toMatchObject({ lru: 1, total: 1 })
    expect(await registry.getPool('core', 'a')).toBe(a)
  })

  it('when every physical pool is busy, a new tenant waits for one to become unused, and is refused after acquireTimeoutMs', async () => {
    await using registry = registryFor(
      { busy: db.url, other: dbB.url },
      { eviction: { maxPools: 1 }, connections: { max: 20, acquireTimeoutMs: 200 } },
    )
    const busy = await registry.getPool('core', 'busy')
    const other = await registry.getPool('core', 'other')
    const client = await busy.connect()
    let settled = false
    const waiting = other.query('select current_database() as d').finally(() => (settled = true))
    await vi.waitFor(() => expect(registry.stats().tenants.active).toContainEqual({ service: 'core', orgId: 'other', checkedOut: 0, waiting: 1 }))
    expect(other.waitingCount).toBe(1)
    expect(settled).toBe(false)
    // nothing was evicted under the busy tenant: its connection still works
    expect(registry.stats().pools.count).toBe(1)
    expect(registry.stats().evictions.total).toBe(0)
    expect((await client.query('select 1 as still')).rows[0].still).toBe(1)
    client.release()
    // the busy pool is unused now: it makes room and the waiting tenant is served
    expect((await waiting).rows[0].d).toBe(dbB.name)
    expect(registry.stats().evictions.lru).toBe(1)
    expect(poolOf(registry, dbB.name)).toBeDefined()

    // with the only pool held, a new tenant is refused with the limit that was hit
    const held = await other.connect()
    const started = Date.now()
    const error = (await busy.query('select 1').catch((e: unknown) => e)) as PoolSaturatedError
    expect(error).toBeInstanceOf(PoolSaturatedError)
    expect(error).toMatchObject({ code: 'HC_POOL_SATURATED', service: 'core', orgId: 'busy', limit: 'eviction.maxPools', limitValue: 1 })
    expect(Date.now() - started).toBeGreaterThanOrEqual(190)
    expect(error.message).toContain('eviction.maxPools')
    expect(registry.stats().pools.count).toBe(1)
    expect(registry.stats().evictions.lru).toBe(1)
    expect((await held.query('select 1 as still')).rows[0].still).toBe(1)
    held.release()
    expect(registry.stats().tenants.active).toEqual([])
  })

  it('the background sweeper ends physical pools unused for idleTtlMs and drops idle bindings, never a pool with a checkout', async () => {
    const clock = new ManualClock()
    await using registry = registryFor(
      { idle: db.url, held: dbB.url },
      { clock, eviction: { idleTtlMs: 60_000, sweepIntervalMs: 10_000 } },
    )
    const evictions = collect(registry, 'pool:evict')
    await (await registry.getPool('core', 'idle')).query('select 1')
    const held = await registry.getPool('core', 'held')
    const client = await held.connect()
    const idleName = poolOf(registry, db.name)?.name
    const heldName = poolOf(registry, dbB.name)?.name
    expect(registry.stats().tenants.cached).toBe(2)
    clock.advance(50_000)
    await settle()
    expect(evictions).toEqual([])
    clock.advance(20_000)
    await settle()
    expect(evictions).toEqual([{ pool: idleName, reason: 'idle' }])
    expect(registry.stats().pools.count).toBe(1)
    expect(registry.stats().tenants.cached).toBeLessThan(2)
    // the held connection is untouched
    expect((await client.query('select current_database() as d')).rows[0].d).toBe(dbB.name)
    clock.advance(200_000)
    await settle()
    expect(evictions).toEqual([{ pool: idleName, reason: 'idle' }])
    client.release()
    clock.advance(70_000)
    await settle()
    expect(evictions).toEqual([
      { pool: idleName, reason: 'idle' },
      { pool: heldName, reason: 'idle' },
    ])
    expect(registry.stats().pools.count).toBe(0)
    expect(registry.stats().tenants.cached).toBe(0)
    expect(registry.stats().evictions).toMatchObject({ idle: 2, total: 2 })
    // a swept tenant works again: binding and pool are made anew
    expect((await held.query('select 1 as back')).rows[0].back).toBe(1)
  })

  it('close() with a checked-out client resolves by its deadline, and later calls reject', async () => {
    const registry = registryFor({ c1: db.url, c2: dbB.url })
    const created = collect(registry, 'pool:create')
    const pool = await registry.getPool('core', 'c1')
    await (await registry.getPool('core', 'c2')).query('select 1')
    const client = await pool.connect()
    const c1Name = poolOf(registry, db.name)?.name
    const c2Name = poolOf(registry, dbB.name)?.name
    expect(created.map((e) => e.pool).sort()).toEqual([c1Name, c2Name].sort())
    // a transaction of c1 that is still open at the deadline
    const tenant = registry.tenant('c1', 'core')
    const inTransaction = deferred()
    const resume = deferred()
    const transaction = tenant
      .transaction(async () => {
        await tenant.query('select 1')
        inTransaction.resolve()
        await resume.promise
        await tenant.query('select 2')
      })
      .catch((e: unknown) => e)
    await inTransaction.promise
    const ends = collect(registry, 'pool:end')
    client.on('error', () => {})
    const started = Date.now()
    await registry.close({ timeoutMs: 300 })
    expect(Date.now() - started).toBeLessThan(5_000)
    // once per pool; whether c2 (nothing checked out) counts as forced is checked in the next test
    expect(ends.map((e) => e.pool).sort()).toEqual([c1Name, c2Name].sort())
    expect(ends).toContainEqual({ pool: c1Name, forced: true })
    await expect(registry.getPool('core', 'c1')).rejects.toBeInstanceOf(RegistryClosedError)
    expect(() => registry.tenant('c1', 'core')).toThrow(RegistryClosedError)
    await expect(client.query('select 1')).rejects.toThrow()
    resume.resolve()
    const cutOff = await transaction
    expect(cutOff).toBeInstanceOf(RegistryClosedError)
    expect((cutOff as RegistryClosedError).message).toMatch(/"c1"/)
    expect(registry.stats().closed).toBe(true)
    expect(registry.stats().pools).toMatchObject({ count: 0, draining: 0 })
    await expect(registry.close()).resolves.toBeUndefined()
    expect(ends).toHaveLength(2)
  })

  it('close() at its deadline reports forced: true only for pools that still had connections checked out', async () => {
    const registry = registryFor({ c3: db.url, c4: dbB.url })
    await (await registry.getPool('core', 'c4')).query('select 1')
    const client = await (await registry.getPool('core', 'c3')).connect()
    client.on('error', () => {})
    const busyName = poolOf(registry, db.name)?.name
    const idleName = poolOf(registry, dbB.name)?.name
    const ends = collect(registry, 'pool:end')
    await registry.close({ timeoutMs: 200 })
    expect(ends).toHaveLength(2)
    expect(ends).toContainEqual({ pool: busyName, forced: true })
    // c4's pool only had idle connections: ending it cut nothing off
    expect(ends).toContainEqual({ pool: idleName, forced: false })
    client.release()
  })

  it('warm() resolves bindings ahead of traffic, and with { connections } opens connections in each physical pool', async () => {
    await using registry = registryFor({ w1: db.url, w2: dbB.url, w3: db.url })
    const created = collect(registry, 'pool:create')
    await registry.warm(['w1', 'w2', 'w3'])
    expect(registry.stats().tenants).toMatchObject({ cached: 3, resolving: 0 })
    expect(registry.stats().secretCache.entries).toBe(3)
    await registry.warm(['w1', 'w2', 'w3'], { service: 'core', connections: 2 })
    // w1 and w3 share a target: two physical pools, each holding at least two idle connections
    expect(created).toHaveLength(2)
    const list = registry.stats().pools.list
    expect(list).toHaveLength(2)
    for (const pool of list) {
      expect(pool.total).toBeGreaterThanOrEqual(2)
      expect(pool.idle).toBe(pool.total)
      expect(pool.checkedOut).toBe(0)
    }
    expect(registry.stats().tenants.active).toEqual([])
  })
})
