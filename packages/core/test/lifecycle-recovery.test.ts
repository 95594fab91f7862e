import { connectClient, startPostgres } from '@hyperconn/testkit'
import type { PostgresServer } from '@hyperconn/testkit'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createRegistry, staticSecrets } from '../src/index.js'
import type { Clock, Registry } from '../src/index.js'

/** Real time and timers, plus `jump(ms)`: what the process's clock does across a freeze. */
function systemClockForTests(): Clock & { jump(ms: number): void } {
  let offset = 0
  return {
    now: () => Date.now() + offset,
    setInterval: (fn, ms) => setInterval(fn, ms),
    clearInterval: (handle) => clearInterval(handle as ReturnType<typeof setInterval>),
    setTimeout: (fn, ms) => setTimeout(fn, ms),
    clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
    random: () => Math.random(),
    jump: (ms) => {
      offset += ms
    },
  }
}

// PostgreSQL restarts while this process is frozen (a Lambda thaw) or its event loop is blocked: no
// 'error' or 'end' event can clean the pools first, so every idle connection still looks alive when the
// next queries start. Each must succeed, and no statement may run twice. Own server: it is restarted.

let server: PostgresServer
const ORGS = Array.from({ length: 20 }, (_, i) => `org${i}`)

beforeAll(async () => {
  server = await startPostgres()
  await using admin = await connectClient(server.adminUrl)
  await admin.query('CREATE DATABASE recovery_a')
  await admin.query('CREATE DATABASE recovery_b')
  for (const name of ['recovery_a', 'recovery_b']) {
    await using client = await connectClient(server.adminUrl.replace(/\/postgres$/, `/${name}`))
    await client.query('CREATE TABLE hits (id serial PRIMARY KEY, org text NOT NULL)')
  }
}, 120_000)

afterAll(async () => {
  await server?.stop()
})

const urlOf = (database: string): string => server.adminUrl.replace(/\/postgres$/, `/${database}`)

function registryFor(clock: ReturnType<typeof systemClockForTests>): Registry<'core'> {
  const secrets: Record<string, Record<string, string>> = {}
  // Two physical pools (two databases), ten tenants each, RLS-style settings so connections are shared.
  ORGS.forEach((org, i) => (secrets[`rc-${org}`] = { 'core-postgresql': urlOf(i % 2 === 0 ? 'recovery_a' : 'recovery_b') }))
  return createRegistry({
    project: 'rc',
    services: { core: { isolation: { rls: 'app.tenant_id' } } },
    secrets: staticSecrets(secrets),
    pool: { max: 5 },
    connections: { max: 20 },
    clock,
  })
}

async function insertCounts(): Promise<Map<string, number>> {
  const counts = new Map<string, number>()
  for (const name of ['recovery_a', 'recovery_b']) {
    await using client = await connectClient(urlOf(name))
    const { rows } = await client.query<{ org: string; n: string }>('SELECT org, count(*) AS n FROM hits GROUP BY org')
    for (const row of rows) counts.set(row.org, Number(row.n))
  }
  return counts
}

describe('recovery after a restart while the process was frozen', () => {
  it('the next query of every warm tenant succeeds; no INSERT ran twice; warm({ connections }) refills', async () => {
    const clock = systemClockForTests()
    await using registry = registryFor(clock)
    const errors: string[] = []
    registry.on('connection:error', (e) => errors.push(e.sqlState ?? e.message))
    // Warm: every tenant has queried; both pools hold open idle connections.
    await registry.warm(ORGS, { connections: 2 })
    await Promise.all(ORGS.map((org) => registry.tenant(org).query('SELECT 1')))
    const before = registry.stats().pools.list
    expect(before).toHaveLength(2)
    for (const pool of before) expect(pool.idle).toBeGreaterThanOrEqual(2)

    // Frozen for 5 s while the server restarts: the clock jumps, and nothing runs meanwhile.
    server.restartSync()
    clock.jump(5_000)
    // Same tick: the queries start before any socket event of the dead connections is processed.
    const inserts = ORGS.map((org) => registry.tenant(org).query<{ id: number }>('INSERT INTO hits (org) VALUES ($1) RETURNING id', [org]))
    const results = await Promise.allSettled(inserts)
    expect(results.filter((r) => r.status === 'rejected')).toEqual([])
    const counts = await insertCounts()
    for (const org of ORGS) expect(counts.get(org), org).toBe(1)

    // Afterwards: the dead ones are gone, and warm() opens connections ahead of traffic again.
    await registry.warm(ORGS, { connections: 2 })
    for (const pool of registry.stats().pools.list) expect(pool.idle).toBeGreaterThanOrEqual(2)
    await using admin = await connectClient(server.adminUrl)
    const open = await admin.query<{ datname: string; n: string }>(
      "SELECT datname, count(*) AS n FROM pg_stat_activity WHERE datname LIKE 'recovery_%' GROUP BY datname",
    )
    for (const row of open.rows) expect(Number(row.n), row.datname).toBeGreaterThanOrEqual(2)
    expect(open.rows).toHaveLength(2)
  }, 60_000)

  it('a statement that fails on a live connection is never retried (it may have run)', async () => {
    const clock = systemClockForTests()
    await using registry = registryFor(clock)
    await registry.tenant('org0').query('SELECT 1')
    await using admin = await connectClient(urlOf('recovery_a'))
    const pid = (await registry.tenant('org0').query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid
    // Terminated while the statement runs: it fails, and the INSERT before the sleep is not run again.
    const running = registry
      .tenant('org0')
      .query("INSERT INTO hits (org) VALUES ('once'); SELECT pg_sleep(30)")
      .catch((e: unknown) => e)
    await expect
      .poll(async () => (await admin.query("SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", [pid])).rowCount)
      .toBe(1)
    await admin.query('SELECT pg_terminate_backend($1)', [pid])
    expect(await running).toMatchObject({ code: '57P01' })
    const { rows } = await admin.query<{ n: string }>("SELECT count(*) AS n FROM hits WHERE org = 'once'")
    expect(Number(rows[0]?.n)).toBe(0) // rolled back with its backend, and not retried
    await expect(registry.tenant('org0').query('SELECT 1')).resolves.toMatchObject({ rowCount: 1 })
  })
})
