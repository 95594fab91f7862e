import { once } from 'node:events'
import pg from 'pg'
import { testDatabase } from '@hyperconn/testkit/vitest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createRegistry, PoolCapacityError, RegistryClosedError, staticSecrets } from '../src/index.js'
import type { Registry, RegistryEvents } from '../src/index.js'
import { ManualClock } from './support/manual-clock.js'

let db: Awaited<ReturnType<typeof testDatabase>>
let admin: pg.Client

beforeAll(async () => {
  db = await testDatabase('regpool')
  admin = new pg.Client({ connectionString: db.url })
  await admin.connect()
})

afterAll(async () => {
  await admin?.end()
  await db?.[Symbol.asyncDispose]()
})

function secrets(orgs: string[]) {
  return staticSecrets(Object.fromEntries(orgs.map((o) => [`t-${o}`, { 'core-postgresql': db.url }])))
}

function registryFor(orgs: string[], extra: Partial<Parameters<typeof createRegistry>[0]> = {}): Registry {
  return createRegistry({ project: 't', services: ['core'], secrets: secrets(orgs), ...extra })
}

function collect<E extends keyof RegistryEvents>(registry: Registry, event: E): RegistryEvents[E][] {
  const seen: RegistryEvents[E][] = []
  registry.on(event, (e) => seen.push(e))
  return seen
}

describe('pool cache', () => {
  it('survives pg_terminate_backend on idle connections: event emitted, next query succeeds', async () => {
    await using registry = registryFor(['o1'], { pool: { max: 3, application_name: 'hc-terminate-test' } })
    const errors = collect(registry, 'connection:error')
    const pool = await registry.getPool('core', 'o1')
    // three idle connections
    const clients = await Promise.all([pool.connect(), pool.connect(), pool.connect()])
    clients.forEach((c) => c.release())
    expect(pool.idleCount).toBe(3)
    const allReported = new Promise<void>((resolve) => {
      registry.on('connection:error', () => errors.length >= 3 && resolve())
    })
    const killed = await admin.query(
      `select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'hc-terminate-test' and pid <> pg_backend_pid()`,
    )
    expect(killed.rowCount).toBe(3)
    await allReported
    expect(errors).toHaveLength(3)
    expect(pool.totalCount).toBe(0)
    expect(errors[0]).toMatchObject({ service: 'core', orgId: 'o1', phase: 'idle', sqlState: '57P01' })
    const result = await pool.query('select 41 + 1 as answer')
    expect(result.rows[0].answer).toBe(42)
    expect(registry.stats().connectionErrors).toBeGreaterThanOrEqual(1)
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
    await using registry = registryFor(['o3'])
    const ended = collect(registry, 'pool:end')
    const pool = await registry.getPool('core', 'o3')
    await admin.query('select pg_advisory_lock(4242)')
    const inFlight = pool.query('select pg_advisory_lock(4242), 7 as seven')
    // wait until the query is really waiting on the lock
    for (;;) {
      const r = await admin.query(`select count(*)::int as n from pg_locks where locktype = 'advisory' and not granted`)
      if (r.rows[0].n > 0) break
    }
    const evicted = registry.evict('core', 'o3')
    let evictDone = false
    void evicted.then(() => (evictDone = true))
    const fresh = await registry.getPool('core', 'o3')
    expect(fresh).not.toBe(pool)
    expect(evictDone).toBe(false)
    await admin.query('select pg_advisory_unlock(4242)')
    const row = (await inFlight).rows[0]
    expect(row.seven).toBe(7)
    await evicted
    expect(ended).toEqual([{ service: 'core', orgId: 'o3', forced: false }])
    await admin.query('select pg_advisory_unlock_all()')
    // the caller that kept the evicted pool object is routed to the current pool
    expect((await pool.query('select 5 as five')).rows[0].five).toBe(5)
    expect((await fresh.query('select 6 as six')).rows[0].six).toBe(6)
  })

  it('pool.end() from outside cannot end a registry pool', async () => {
    await using registry = registryFor(['o4'])
    const pool = await registry.getPool('core', 'o4')
    await pool.end()
    expect((await pool.query('select 1 as one')).rows[0].one).toBe(1)
  })

  it('evicts the least recently used idle pool at maxPools', async () => {
    const clock = new ManualClock()
    await using registry = registryFor(['a', 'b', 'c'], { clock, eviction: { maxPools: 2 } })
    const evictions = collect(registry, 'pool:evict')
    const a = await registry.getPool('core', 'a')
    clock.advance(10)
    await registry.getPool('core', 'b')
    clock.advance(10)
    await registry.getPool('core', 'a') // a is now more recent than b
    clock.advance(10)
    await registry.getPool('core', 'c')
    expect(evictions).toEqual([{ service: 'core', orgId: 'b', reason: 'lru' }])
    expect(registry.stats().pools.count).toBe(2)
    expect(await registry.getPool('core', 'a')).toBe(a)
  })

  it('when every cached pool is busy, a new tenant gets PoolCapacityError and nothing is evicted', async () => {
    await using registry = registryFor(['busy', 'other'], { eviction: { maxPools: 1 } })
    const pool = await registry.getPool('core', 'busy')
    const client = await pool.connect()
    const error = await registry.getPool('core', 'other').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(PoolCapacityError)
    expect(registry.stats().pools.count).toBe(1)
    expect((await client.query('select 1 as still')).rows[0].still).toBe(1)
    client.release()
    await expect(registry.getPool('core', 'other')).resolves.toBeDefined()
    expect(registry.stats().evictions.lru).toBe(1)
  })

  it('the background sweeper ends pools idle for idleTtlMs, and never a busy one', async () => {
    const clock = new ManualClock()
    await using registry = registryFor(['idle', 'held'], {
      clock,
      eviction: { idleTtlMs: 60_000, sweepIntervalMs: 10_000 },
    })
    const evictions = collect(registry, 'pool:evict')
    await registry.getPool('core', 'idle')
    const held = await registry.getPool('core', 'held')
    const client = await held.connect()
    clock.advance(50_000)
    expect(evictions).toEqual([])
    clock.advance(20_000)
    expect(evictions).toEqual([{ service: 'core', orgId: 'idle', reason: 'idle' }])
    expect(registry.stats().pools.count).toBe(1)
    client.release()
    clock.advance(70_000)
    expect(evictions.map((e) => e.orgId)).toEqual(['idle', 'held'])
    expect(registry.stats().pools.count).toBe(0)
  })

  it('close() with a checked-out client resolves by its deadline, and later calls reject', async () => {
    const registry = registryFor(['c1', 'c2'])
    const pool = await registry.getPool('core', 'c1')
    await registry.getPool('core', 'c2')
    const client = await pool.connect()
    const ends = collect(registry, 'pool:end')
    client.on('error', () => {})
    await registry.close({ timeoutMs: 300 })
    expect(ends).toContainEqual({ service: 'core', orgId: 'c1', forced: true })
    expect(ends).toContainEqual({ service: 'core', orgId: 'c2', forced: false })
    await expect(registry.getPool('core', 'c1')).rejects.toBeInstanceOf(RegistryClosedError)
    expect(() => registry.tenant('c1', 'core')).toThrow(RegistryClosedError)
    await expect(client.query('select 1')).rejects.toThrow()
    expect(registry.stats().closed).toBe(true)
    await expect(registry.close()).resolves.toBeUndefined()
  })

  it('warm() creates pools ahead of traffic', async () => {
    await using registry = registryFor(['w1', 'w2'])
    const created = collect(registry, 'pool:create')
    await registry.warm(['w1', 'w2'])
    expect(created.map((e) => e.orgId).sort()).toEqual(['w1', 'w2'])
  })
})
