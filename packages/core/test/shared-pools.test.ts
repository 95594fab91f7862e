import { connectClient, createRole, startFakeSecretsManager } from '@hyperconn/testkit'
import type { FakeSecretsManager, TestDatabase } from '@hyperconn/testkit'
import { testDatabase } from '@hyperconn/testkit/vitest'
import type pg from 'pg'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import {
  awsSecretsManager,
  createRegistry,
  PoolSaturatedError,
  SecretFormatError,
  SecretNotFoundError,
  staticSecrets,
} from '../src/index.js'
import type { Registry, SecretSource } from '../src/index.js'

// Issue "Pools shared by connection target", acceptance 2 (core paths; the RLS and lock-up cases run
// through all three ORMs in tests/cross-orm). The server runs with max_connections 100.

const SCHEMA_TENANTS = 10_000
const WORKERS = 40

let db: TestDatabase
let admin: pg.Client & AsyncDisposable

/** Samples this database's server connections every few ms (from an admin connection) until stopped. */
function sampleConnections(database: string): { stop(): Promise<number> } {
  let peak = 0
  let running = true
  const loop = (async () => {
    const probe = await connectClient(db.url)
    try {
      while (running) {
        const { rows } = await probe.query<{ n: number }>(
          'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() AND application_name = $2',
          [database, 'hyperconn'],
        )
        peak = Math.max(peak, rows[0]?.n ?? 0)
        await new Promise<void>((resolve) => setImmediate(resolve))
      }
    } finally {
      await probe[Symbol.asyncDispose]()
    }
  })()
  return {
    async stop() {
      running = false
      await loop
      return peak
    },
  }
}

function withOptions(url: string, options: string): string {
  const u = new URL(url)
  u.searchParams.set('options', options)
  return u.toString()
}

beforeAll(async () => {
  db = await testDatabase('shared')
  admin = await connectClient(db.url)
  // 10,000 schemas with one row each, in batches (one statement per batch keeps it to a few seconds).
  for (let start = 0; start < SCHEMA_TENANTS; start += 500) {
    const statements: string[] = []
    for (let i = start; i < Math.min(start + 500, SCHEMA_TENANTS); i++) {
      statements.push(`CREATE SCHEMA org_${i}; CREATE TABLE org_${i}.items (org text NOT NULL); INSERT INTO org_${i}.items VALUES ('org${i}');`)
    }
    await admin.query(`BEGIN; ${statements.join(' ')} COMMIT;`)
  }
}, 120_000)

afterAll(async () => {
  await admin?.[Symbol.asyncDispose]()
  await db?.[Symbol.asyncDispose]()
})

describe('schema tenants in the seed layout share one pool', () => {
  it('10,000 tenants, default options, 40 workers round-robin: 0 errors, no cross-tenant row, one pool, connections within the budget', async () => {
    const secrets: Record<string, Record<string, string>> = {}
    for (let i = 0; i < SCHEMA_TENANTS; i++) {
      secrets[`seed-org${i}`] = { 'app-postgresql': withOptions(db.url, `-c search_path=org_${i}`) }
    }
    await using registry = createRegistry({ project: 'seed', services: ['app'], secrets: staticSecrets(secrets) })
    const sampler = sampleConnections(db.name)
    let errors = 0
    let wrong = 0
    let reads = 0
    let next = 0
    await Promise.all(
      Array.from({ length: WORKERS }, async () => {
        for (let i = next++; i < SCHEMA_TENANTS; i = next++) {
          const orgId = `org${i}`
          try {
            const { rows } = await registry.tenant(orgId, 'app').query<{ org: string }>('SELECT org FROM items')
            reads += rows.length
            wrong += rows.filter((r) => r.org !== orgId).length
          } catch {
            errors++
          }
        }
      }),
    )
    const peak = await sampler.stop()
    const stats = registry.stats()
    expect({ errors, wrong, reads }).toEqual({ errors: 0, wrong: 0, reads: SCHEMA_TENANTS })
    expect(stats.pools.created).toBe(1)
    const budget = stats.servers[0]
    expect(budget?.max).toBe(Math.floor((0.8 * (100 - 3)) / 1))
    expect(budget?.peak).toBeLessThanOrEqual(10) // pool.max 10 by default
    expect(peak).toBeGreaterThan(0)
    expect(peak).toBeLessThanOrEqual(budget?.peak ?? 0)
    expect(stats.tenants.cached).toBe(SCHEMA_TENANTS)
  }, 120_000)

  it('a connection reused across tenants carries only the current tenant\'s settings; keys another tenant set are reset', async () => {
    await using registry = createRegistry({
      project: 'p',
      services: { app: { tenantSettings: (orgId) => (orgId === 'org1' ? { statement_timeout: '4s', 'app.flag': 'one' } : {}) } },
      secrets: staticSecrets({
        'p-org1': { 'app-postgresql': withOptions(db.url, '-c search_path=org_1') },
        'p-org2': { 'app-postgresql': withOptions(db.url, '-c search_path=org_2') },
      }),
      pool: { max: 1 },
      connections: { max: 4 },
    })
    const probe = "SELECT pg_backend_pid() AS pid, current_setting('search_path') AS path, current_setting('statement_timeout') AS timeout, current_setting('app.flag', true) AS flag, (SELECT org FROM items) AS org"
    type Probe = { pid: number; path: string; timeout: string; flag: string | null; org: string }
    const one = (await registry.tenant('org1', 'app').query<Probe>(probe)).rows[0]
    const two = (await registry.tenant('org2', 'app').query<Probe>(probe)).rows[0]
    const inTx = await registry.tenant('org1', 'app').transaction(async () => (await registry.tenant('org1', 'app').query<Probe>(probe)).rows[0])
    const after = (await registry.tenant('org2', 'app').query<Probe>(probe)).rows[0]
    expect(one).toMatchObject({ path: 'org_1', timeout: '4s', flag: 'one', org: 'org1' })
    expect(two).toMatchObject({ pid: one?.pid, path: 'org_2', timeout: '0', org: 'org2' })
    expect(two?.flag ?? '').toBe('')
    expect(inTx).toMatchObject({ pid: one?.pid, path: 'org_1', timeout: '4s', flag: 'one', org: 'org1' })
    expect(after).toMatchObject({ pid: one?.pid, path: 'org_2', timeout: '0', org: 'org2' })
  })

  it('a SET run by the caller is not carried to the next tenant', async () => {
    await using registry = createRegistry({
      project: 'p',
      services: ['app'],
      secrets: staticSecrets({
        'p-org1': { 'app-postgresql': withOptions(db.url, '-c search_path=org_1') },
        'p-org2': { 'app-postgresql': withOptions(db.url, '-c search_path=org_2') },
      }),
      pool: { max: 1 },
      connections: { max: 4 },
    })
    const pool = await registry.getPool('app', 'org1')
    await pool.query('SET search_path TO org_2')
    await pool.query("SET work_mem TO '7MB'")
    const { rows } = await registry.tenant('org1', 'app').query<{ org: string; work_mem: string }>(
      "SELECT (SELECT org FROM items) AS org, current_setting('work_mem') AS work_mem",
    )
    expect(rows[0]?.org).toBe('org1')
    expect(rows[0]?.work_mem).not.toBe('7MB')
  })

  it('a setting the server refuses destroys the connection and rejects the query: nothing runs without its settings', async () => {
    await using registry = createRegistry({
      project: 'p',
      services: ['app'],
      secrets: staticSecrets({ 'p-bad': { 'app-postgresql': withOptions(db.url, '-c statement_timeout=soon') } }),
      connections: { max: 4 },
    })
    await expect(registry.tenant('bad', 'app').query('SELECT 1')).rejects.toMatchObject({
      code: 'HC_CONNECTION',
      message: expect.stringMatching(/session settings of service "app", org "bad" \(statement_timeout\)/) as unknown,
    })
    await vi.waitFor(() => expect(registry.stats().connections.total).toBe(0))
  })

  it('rejects secrets whose options carry anything but -c settings, naming the secret and key', async () => {
    await using registry = createRegistry({
      project: 'p',
      services: ['app'],
      secrets: staticSecrets({ 'p-x': { 'app-postgresql': withOptions(db.url, '-d 5') } }),
      connections: { max: 4 },
    })
    const error = await registry.tenant('x', 'app').query('SELECT 1').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(SecretFormatError)
    expect(error).toMatchObject({ secretName: 'p-x', key: 'app-postgresql' })
    expect(registry.stats()).toMatchObject({ pools: { count: 0 }, tenants: { cached: 0 } })
  })
})

describe('the connection budget', () => {
  const databases: TestDatabase[] = []
  beforeAll(async () => {
    for (let i = 0; i < 15; i++) databases.push(await testDatabase('budget'))
  }, 60_000)
  afterAll(async () => {
    for (const database of databases) await database[Symbol.asyncDispose]()
  })

  function budgetRegistry(extra: { acquireTimeoutMs?: number } = {}): Registry {
    const secrets: Record<string, Record<string, string>> = {}
    databases.forEach((database, i) => {
      secrets[`b-org${i}`] = { 'core-postgresql': database.url }
    })
    return createRegistry({
      project: 'b',
      services: ['core'],
      secrets: staticSecrets(secrets),
      pool: { max: 10 },
      connections: { max: 40, ...extra },
    })
  }

  it('15 database tenants with pool.max 10 against connections.max 40: 0 errors, callers wait, never over 40', async () => {
    await using registry = budgetRegistry()
    let errors = 0
    await Promise.all(
      databases.flatMap((_, i) =>
        Array.from({ length: 12 }, async () => {
          try {
            await registry.tenant(`org${i}`, 'core').query('SELECT pg_sleep(0.02)')
          } catch {
            errors++
          }
        }),
      ),
    )
    const { rows } = await admin.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname LIKE 'budget%' AND application_name = 'hyperconn'",
    )
    expect(errors).toBe(0)
    const server = registry.stats().servers[0]
    expect(server?.peak).toBeLessThanOrEqual(40)
    expect(server?.peak).toBeGreaterThanOrEqual(30) // demand of 180 filled the budget
    expect(rows[0]?.n).toBeLessThanOrEqual(40)
    expect(registry.stats().pools.count).toBe(15)
  })

  it('with the whole budget held, a waiter rejects with PoolSaturatedError naming the limit after acquireTimeoutMs', async () => {
    await using registry = budgetRegistry({ acquireTimeoutMs: 200 })
    const held = await Promise.all(Array.from({ length: 40 }, (_, n) => registry.tenant(`org${n % 4}`, 'core').acquire()))
    await Promise.all(held.map((c) => c.query('SELECT 1')))
    const error = await registry.tenant('org9', 'core').query('SELECT 1').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(PoolSaturatedError)
    expect(error).toMatchObject({ limit: 'connections.max', limitValue: 40, service: 'core', orgId: 'org9' })
    expect((error as Error).message).toMatch(/Raise connections.max/)
    expect((error as PoolSaturatedError).waitedMs).toBeGreaterThanOrEqual(200)
    for (const c of held) c.release()
    // Once released, the same tenant is served (an idle connection of another pool is closed to make room).
    await expect(registry.tenant('org9', 'core').query('SELECT 1 AS ok')).resolves.toMatchObject({ rows: [{ ok: 1 }] })
    expect(registry.stats().servers[0]?.open).toBeLessThanOrEqual(40)
  })

  it('fairness: a tenant at its perTenant limit with 100 queued queries delays another tenant by at most one checkout', async () => {
    await admin.query('CREATE SEQUENCE IF NOT EXISTS fairness_seq')
    await admin.query("SELECT setval('fairness_seq', 1, false)")
    const secrets = staticSecrets({
      'f-a': { 'core-postgresql': db.url },
      'f-b': { 'core-postgresql': db.url },
    })
    await using registry = createRegistry({
      project: 'f',
      services: ['core'],
      secrets,
      connections: { max: 2, perTenant: 2 },
    })
    const a = registry.tenant('a', 'core')
    const b = registry.tenant('b', 'core')
    await Promise.all([a.query('SELECT 1'), b.query('SELECT 1')]) // both tenants resolved, budget read
    // A's first two queries block on a lock the admin session holds, so nothing is released meanwhile.
    await admin.query('SELECT pg_advisory_lock(4242)')
    const started: Promise<unknown>[] = []
    // Each of A's queries draws its number first, then holds its connection 20 ms, so B's statement can only
    // race the one query of A started at the same release, not a run of them (on a loaded machine a backend
    // can lag a few round trips behind another).
    const aQuery =
      'WITH l AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared(4242)), ' +
      "n AS MATERIALIZED (SELECT nextval('fairness_seq') AS n FROM l) SELECT n.n FROM n, pg_sleep(0.02)"
    for (let n = 0; n < 102; n++) started.push(a.query(aQuery))
    await vi.waitFor(() => expect(registry.stats().tenants.active).toContainEqual({ service: 'core', orgId: 'a', checkedOut: 2, waiting: 100 }))
    const theirs = b.query<{ n: string }>("SELECT nextval('fairness_seq') AS n")
    await vi.waitFor(() => expect(registry.stats().tenants.active).toContainEqual({ service: 'core', orgId: 'b', checkedOut: 0, waiting: 1 }))
    await admin.query('SELECT pg_advisory_unlock(4242)')
    await Promise.all(started)
    const mine = Number((await theirs).rows[0]?.n)
    // B's turn came at the first release, before any queued query of A. A's two running queries drew 1
    // and 2; B's statement then races on the server with the one queued query of A that the second
    // release started, so B draws 3 or 4 (strict FIFO would have given B 103).
    expect(mine).toBeLessThanOrEqual(4)
  })
})

describe('secrets and tenants', () => {
  let sm: FakeSecretsManager
  beforeAll(async () => {
    sm = await startFakeSecretsManager()
  })
  afterAll(async () => {
    await sm?.close()
  })

  function awsRegistry(extra: Partial<Parameters<typeof createRegistry>[0]> = {}): Registry {
    return createRegistry({
      project: 's',
      services: ['core'],
      secrets: awsSecretsManager({ region: sm.region, endpoint: sm.endpoint, credentials: { accessKeyId: 'a', secretAccessKey: 'b' } }),
      connections: { max: 10 },
      ...extra,
    })
  }

  it('a burst of unknown org ids at maxPools takes no pool or tenant slot and does not delay a real new tenant', async () => {
    let release!: () => void
    const gate = new Promise<void>((resolve) => {
      release = resolve
    })
    const known = staticSecrets({ 'u-real': { 'core-postgresql': db.url } })
    const source: SecretSource = {
      async get(name) {
        if (name === 'u-real') return known.get(name)
        await gate
        throw new SecretNotFoundError(name)
      },
    }
    await using registry = createRegistry({ project: 'u', services: ['core'], secrets: source, eviction: { maxPools: 1, maxTenants: 5 }, connections: { max: 4 } })
    const unknown = Array.from({ length: 201 }, (_, i) => registry.tenant(`ghost${i}`, 'core').query('SELECT 1').catch((e: unknown) => e))
    await vi.waitFor(() => expect(registry.stats().tenants.resolving).toBe(201))
    await expect(registry.tenant('real', 'core').query('SELECT 1 AS ok')).resolves.toMatchObject({ rows: [{ ok: 1 }] })
    expect(registry.stats()).toMatchObject({ pools: { count: 1 }, tenants: { cached: 1 } })
    release()
    const errors = await Promise.all(unknown)
    expect(errors.every((e) => e instanceof SecretNotFoundError)).toBe(true)
    expect(registry.stats()).toMatchObject({ pools: { count: 1, created: 1 }, tenants: { cached: 1, resolving: 0 } })
  })

  it('rotation through getPool().query: ALTER ROLE, secret updated, backends terminated: 20 concurrent queries succeed with at most 2 fetches', async () => {
    await using role = await createRole(db.url, 'rot_user', 'first-password')
    sm.setSecret('s-rot', { 'core-postgresql': db.urlFor(role.user, 'first-password') })
    await using registry = awsRegistry()
    const pool = await registry.getPool('core', 'rot')
    await Promise.all(Array.from({ length: 5 }, () => pool.query('SELECT pg_sleep(0.01)')))
    sm.resetCounters()
    await admin.query("ALTER ROLE rot_user PASSWORD 'second-password'")
    sm.setSecret('s-rot', { 'core-postgresql': db.urlFor(role.user, 'second-password') })
    await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'rot_user'")
    await vi.waitFor(() => expect(registry.stats().connections.total).toBe(0))
    const results = await Promise.all(Array.from({ length: 20 }, () => pool.query<{ u: string }>('SELECT current_user AS u')))
    expect(results.map((r) => r.rows[0]?.u)).toEqual(Array(20).fill('rot_user'))
    expect(sm.getSecretValueCalls('s-rot')).toBeGreaterThanOrEqual(1)
    expect(sm.getSecretValueCalls('s-rot')).toBeLessThanOrEqual(2)
  })

  it('a deleted secret ends the tenant once its refresh finds it gone', async () => {
    sm.setSecret('s-gone', { 'core-postgresql': db.url })
    await using registry = awsRegistry({ secretCache: { ttlMs: 0 } })
    const tenant = registry.tenant('gone', 'core')
    await expect(tenant.query('SELECT 1 AS ok')).resolves.toMatchObject({ rows: [{ ok: 1 }] })
    sm.deleteSecret('s-gone')
    await vi.waitFor(() => expect(tenant.query('SELECT 1')).rejects.toBeInstanceOf(SecretNotFoundError))
    expect(registry.stats().tenants.cached).toBe(0)
  })

  it('a fixed malformed secret takes effect on the next request', async () => {
    sm.setSecret('s-fixme', { 'core-postgresql': 'not a url' })
    await using registry = awsRegistry()
    await expect(registry.tenant('fixme', 'core').query('SELECT 1')).rejects.toBeInstanceOf(SecretFormatError)
    sm.setSecret('s-fixme', { 'other-key': db.url })
    await expect(registry.tenant('fixme', 'core').query('SELECT 1')).rejects.toMatchObject({ key: 'core-postgresql' })
    sm.setSecret('s-fixme', { 'core-postgresql': db.url })
    await expect(registry.tenant('fixme', 'core').query('SELECT 1 AS ok')).resolves.toMatchObject({ rows: [{ ok: 1 }] })
    expect(registry.stats()).toMatchObject({ pools: { count: 1 }, tenants: { cached: 1 } })
  })
})
