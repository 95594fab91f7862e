// Failure paths found in review: draining pools that pg never reports idle, close deadlines, credential
// rotation, a slow secret source, redaction after rotation, concurrent misses over maxPools.
import { createRole } from '@hyperconn/testkit'
import { adminUrl, testDatabase } from '@hyperconn/testkit/vitest'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createRegistry, InvalidOptionsError, PoolCapacityError, SecretNotFoundError, SecretSourceError, staticSecrets } from '../src/index.js'
import type { RegistryEvents, SecretSource } from '../src/index.js'
import { ManualClock } from './support/manual-clock.js'

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

async function until(check: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await check())) await new Promise((resolve) => setImmediate(resolve))
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
    await using registry = createRegistry({ project: 't', services: ['core'], secrets: mutableSource({ 't-o1': bad }) })
    const pool = await registry.getPool('core', 'o1')
    const failing = pool.query('select 1').catch((e: unknown) => e)
    const evicted = registry.evict('core', 'o1')
    expect((await failing) as { code?: string }).toMatchObject({ code: '28P01' })
    await evicted
    expect(registry.stats().pools.draining).toBe(0)
  })

  it('close() at its deadline ends idle connections too, and reports pool:end once', async () => {
    const registry = createRegistry({
      project: 't',
      services: ['core'],
      secrets: mutableSource({ 't-o2': db.url }),
      pool: { max: 3, application_name: 'hc-resil-close' },
    })
    const ends: RegistryEvents['pool:end'][] = []
    registry.on('pool:end', (e) => ends.push(e))
    const pool = await registry.getPool('core', 'o2')
    const clients = await Promise.all([pool.connect(), pool.connect(), pool.connect()])
    clients[0]?.release()
    clients[1]?.release()
    const leaked = clients[2]
    leaked?.on('error', () => {})
    await registry.close({ timeoutMs: 100 })
    await until(async () => (await backends('hc-resil-close')) === 0)
    expect(pool.idleCount).toBe(0)
    expect(registry.stats().pools.draining).toBe(0)
    leaked?.release()
    await until(() => pool.totalCount === 0)
    expect(ends).toEqual([{ service: 'core', orgId: 'o2', forced: true }])
  })

  it('close() and warm() reject malformed arguments with InvalidOptionsError', async () => {
    await using registry = createRegistry({ project: 't', services: ['core'], secrets: mutableSource({}) })
    await expect(registry.warm('org1' as unknown as string[])).rejects.toBeInstanceOf(InvalidOptionsError)
    await expect(registry.close({ timeoutMs: Number.NaN })).rejects.toBeInstanceOf(InvalidOptionsError)
    expect(registry.stats().closed).toBe(false)
  })
})

describe('maxPools under concurrent misses', () => {
  it('counts creations in flight against the cap: no pool is created only to be evicted', async () => {
    const orgs = ['a1', 'a2', 'a3', 'a4', 'a5', 'a6']
    await using registry = createRegistry({
      project: 't',
      services: ['core'],
      eviction: { maxPools: 2 },
      secrets: staticSecrets(Object.fromEntries(orgs.map((o) => [`t-${o}`, { 'core-postgresql': db.url }]))),
    })
    const created: string[] = []
    registry.on('pool:create', (e) => created.push(e.orgId))
    const results = await Promise.allSettled(orgs.map((o) => registry.getPool('core', o)))
    const ok = results.filter((r) => r.status === 'fulfilled')
    const refused = results.filter((r) => r.status === 'rejected').map((r) => (r).reason)
    expect(ok.length + refused.length).toBe(6)
    expect(refused.every((e) => e instanceof PoolCapacityError)).toBe(true)
    const stats = registry.stats()
    expect(stats.pools.count).toBeLessThanOrEqual(2)
    expect(created).toHaveLength(stats.pools.created)
    expect(stats.evictions.lru).toBe(stats.pools.created - stats.pools.count)
    for (const r of ok) expect((r as PromiseFulfilledResult<pg.Pool & { retired: boolean }>).value.retired).toBe(false)
  })
})

describe('credential rotation', () => {
  it('N concurrent callers failing with 28P01 after a rotation all retry on one rebuilt pool', async () => {
    await using role = await createRole(adminUrl(), 'hc_resil_rot', 'old-pass-1111')
    const source = mutableSource({ 't-o3': db.urlFor(role.user, 'old-pass-1111') })
    await using registry = createRegistry({ project: 't', services: ['core'], secrets: source, pool: { max: 5 } })
    const rotations: RegistryEvents['pool:evict'][] = []
    registry.on('pool:evict', (e) => rotations.push(e))
    await registry.getPool('core', 'o3')
    await admin.query(`alter role hc_resil_rot password 'new-pass-2222'`)
    source.set('t-o3', db.urlFor(role.user, 'new-pass-2222'))
    const tenant = registry.tenant('o3', 'core')
    const results = await Promise.allSettled([1, 2, 3, 4, 5].map(() => tenant.query('select 1 as x')))
    expect(results.filter((r) => r.status === 'rejected')).toEqual([])
    expect(source.fetches).toBe(2)
    expect(rotations).toEqual([{ service: 'core', orgId: 'o3', reason: 'rotation' }])
  })

  it('a secret that moves the tenant to another database replaces the pool once the cached secret expires', async () => {
    const clock = new ManualClock()
    const source = mutableSource({ 't-o4': db.url })
    await using registry = createRegistry({
      project: 't',
      services: ['core'],
      secrets: source,
      clock,
      pool: { maxUses: 1 },
      secretCache: { ttlMs: 1_000 },
    })
    const rotated = new Promise<RegistryEvents['pool:evict']>((resolve) =>
      registry.on('pool:evict', (e) => e.reason === 'rotation' && resolve(e)),
    )
    const tenant = registry.tenant('o4', 'core')
    expect((await tenant.query('select current_database() as d')).rows[0].d).toBe(db.name)
    source.set('t-o4', db2.url)
    clock.advance(60_000)
    // the first new connection after expiry still uses the cached secret and refreshes it meanwhile
    await tenant.query('select 1')
    await rotated
    expect((await tenant.query('select current_database() as d')).rows[0].d).toBe(db2.name)
    expect(source.fetches).toBe(2)
  })

  it('the sweeper refreshes expired secrets of busy pools, so a move reaches a pool that is never idle', async () => {
    const clock = new ManualClock()
    const source = mutableSource({ 't-o7': db.url })
    await using registry = createRegistry({
      project: 't',
      services: ['core'],
      secrets: source,
      clock,
      secretCache: { ttlMs: 1_000 },
      eviction: { sweepIntervalMs: 10_000 },
    })
    const rotated = new Promise<void>((resolve) => registry.on('pool:evict', (e) => e.reason === 'rotation' && resolve()))
    const pool = await registry.getPool('core', 'o7')
    const held = await pool.connect()
    source.set('t-o7', db2.url)
    clock.advance(10_000)
    await rotated
    held.release()
    expect((await registry.tenant('o7', 'core').query('select current_database() as d')).rows[0].d).toBe(db2.name)
  })

  it('a warm tenant opens new connections while the secret source hangs after the TTL', async () => {
    const clock = new ManualClock()
    const source = mutableSource({ 't-o5': db.url })
    await using registry = createRegistry({
      project: 't',
      services: ['core'],
      secrets: source,
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
    })
    const error = await registry.tenant('h1', 'core').query('insert into items values (1)').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(pg.DatabaseError)
    expect((error as { code?: string }).code).toBe('23505')
  })
})

describe('acquire() inside nested scopes', () => {
  it('an outer connection used inside a savepoint runs there instead of deadlocking', async () => {
    await using registry = createRegistry({ project: 't', services: ['core'], secrets: mutableSource({ 't-o6': db.url }) })
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

