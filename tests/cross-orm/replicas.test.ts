import { createRegistry, staticSecrets } from '@hyperconn/core'
import type { Registry, RegistryEvents } from '@hyperconn/core'
import { createDrizzleAdapter } from '@hyperconn/drizzle'
import { createKnexAdapter } from '@hyperconn/knex'
import { createKyselyAdapter } from '@hyperconn/kysely'
import { connectClient, startPostgres, startStandby } from '@hyperconn/testkit'
import type { PostgresServer, StandbyServer } from '@hyperconn/testkit'
import { sql } from 'drizzle-orm'
import { integer, pgTable, serial, text } from 'drizzle-orm/pg-core'
import { sql as kyselySql } from 'kysely'
import type { Generated } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { unwrap } from './support/async.js'

// Issue 12 acceptance 2 against a real streaming hot standby of the test server (testkit startStandby).

const items = pgTable('items', { id: serial('id').primaryKey(), org: text('org').notNull(), n: integer('n') })
interface Db {
  items: { id: Generated<number>; org: string; n: number | null }
}

let primary: PostgresServer
let standby: StandbyServer

const urlOf = (server: { adminUrl: string }, database: string): string => server.adminUrl.replace(/\/postgres$/, `/${database}`)

beforeAll(async () => {
  primary = await startPostgres()
  for (const org of ['a', 'b']) {
    await using admin = await connectClient(primary.adminUrl)
    await admin.query(`CREATE DATABASE rep_${org}`)
    await using client = await connectClient(urlOf(primary, `rep_${org}`))
    await client.query('CREATE TABLE items (id serial PRIMARY KEY, org text NOT NULL, n integer)')
    await client.query('INSERT INTO items (org, n) SELECT $1, g FROM generate_series(1, 3) g', [org])
  }
  standby = await startStandby(primary)
  await standby.waitForReplay()
}, 120_000)

afterAll(async () => {
  await standby?.[Symbol.asyncDispose]()
  await primary?.stop()
})

function registryFor(replicas: { retryAfterMs?: number; maxLagMs?: number } = { retryAfterMs: 200 }): Registry<'core'> {
  const secrets: Record<string, Record<string, string>> = {}
  for (const org of ['a', 'b']) {
    secrets[`rp-${org}`] = { 'core-postgresql': urlOf(primary, `rep_${org}`), 'core-postgresql-ro': [urlOf(standby, `rep_${org}`)] as unknown as string }
  }
  return createRegistry({
    project: 'rp',
    services: { core: { replicas } },
    secrets: staticSecrets(secrets),
    pool: { max: 4, connectionTimeoutMillis: 2_000 },
    connections: { acquireTimeoutMs: 5_000 },
  })
}

type Read = () => Promise<{ r: boolean; orgs: string[] }>

/** A read through each adapter's builders, and where it ran (pg_is_in_recovery() is true on the standby). */
function readers(registry: Registry<'core'>, org: string): Record<'drizzle' | 'kysely' | 'knex', Read> {
  const drizzle = createDrizzleAdapter(registry, { service: 'core' }).getDb(org)
  const kysely = createKyselyAdapter<Db>(registry, { service: 'core' }).getDb(org)
  const knex = createKnexAdapter(registry, { service: 'core' }).getDb(org)
  return {
    drizzle: async () => {
      const rows = await drizzle.select({ r: sql<boolean>`pg_is_in_recovery()`, org: items.org }).from(items)
      return { r: rows[0]?.r as boolean, orgs: rows.map((x) => x.org) }
    },
    kysely: async () => {
      const rows = await kysely.selectFrom('items').select([kyselySql<boolean>`pg_is_in_recovery()`.as('r'), 'org']).execute()
      return { r: rows[0]?.r as boolean, orgs: rows.map((x) => x.org) }
    },
    knex: async () => {
      const rows: { r: boolean; org: string }[] = await knex<{ r: boolean; org: string }>('items').select(knex.raw('pg_is_in_recovery() AS r'), 'org')
      return { r: rows[0]?.r as boolean, orgs: rows.map((x) => x.org) }
    },
  }
}

const RAW = 'SELECT pg_is_in_recovery() AS r'

describe('read replicas', () => {
  it('adapter reads go to the replica; writes, raw SQL, transactions and primary(fn) to the primary', async () => {
    await using registry = registryFor()
    const tenant = registry.tenant('a')
    const read = readers(registry, 'a')
    for (const [orm, run] of Object.entries(read)) expect((await run()).r, orm).toBe(true)
    // Raw SQL is the primary's unless inside replica(fn).
    expect((await tenant.query<{ r: boolean }>(RAW)).rows[0]?.r).toBe(false)
    expect((await tenant.replica(() => tenant.query<{ r: boolean }>(RAW))).rows[0]?.r).toBe(true)
    for (const [orm, run] of Object.entries(read)) {
      expect((await tenant.primary(run)).r, `${orm} in primary()`).toBe(false)
      expect((await tenant.transaction(run)).r, `${orm} in a transaction`).toBe(false)
      expect((await tenant.replica(() => tenant.transaction(run))).r, `${orm} in a transaction in replica()`).toBe(false)
    }
    // replica() inside primary() stays on the primary.
    for (const [orm, run] of Object.entries(read)) expect((await tenant.primary(() => tenant.replica(run))).r, `${orm} in replica() in primary()`).toBe(false)
    // Builder writes inside replica(fn) still go to the primary (only raw SQL may reach a replica there).
    await tenant.replica(async () => {
      await createDrizzleAdapter(registry, { service: 'core' }).getDb('a').insert(items).values({ org: 'a', n: 20 })
      await createKyselyAdapter<Db>(registry, { service: 'core' }).getDb('a').insertInto('items').values({ org: 'a', n: 21 }).execute()
      await createKnexAdapter(registry, { service: 'core' }).getDb('a')('items').insert({ org: 'a', n: 22 })
    })
    // Writes through each adapter succeed: a replica would refuse them.
    await createDrizzleAdapter(registry, { service: 'core' }).getDb('a').insert(items).values({ org: 'a', n: 10 })
    await createKyselyAdapter<Db>(registry, { service: 'core' }).getDb('a').insertInto('items').values({ org: 'a', n: 11 }).execute()
    await createKnexAdapter(registry, { service: 'core' }).getDb('a')('items').insert({ org: 'a', n: 12 })
    await using check = await connectClient(urlOf(primary, 'rep_a'))
    expect((await check.query("SELECT count(*)::int AS n FROM items WHERE n >= 10")).rows[0]?.n).toBe(6)
    await check.query('DELETE FROM items WHERE n >= 10')
  })

  it('raw SELECT ... FOR UPDATE, a data-modifying WITH and nextval() through tenant.query go to the primary; a raw write in replica(fn) is refused by the replica', async () => {
    await using registry = registryFor()
    const tenant = registry.tenant('a')
    const statements = [
      `${RAW} FROM items WHERE n = 1 FOR UPDATE`,
      "WITH moved AS (UPDATE items SET n = n WHERE n = 1 RETURNING 1) SELECT pg_is_in_recovery() AS r FROM moved",
      "SELECT pg_is_in_recovery() AS r, nextval('items_id_seq') AS id",
    ]
    for (const text of statements) expect((await tenant.query<{ r: boolean }>(text)).rows[0]?.r, text).toBe(false)
    const refused = await tenant.replica(() => tenant.query("INSERT INTO items (org) VALUES ('a')")).catch((e: unknown) => e)
    expect(refused).toMatchObject({ code: '25006' })
  })

  it('tenants never read another tenant\'s replica: 0 cross-tenant rows', async () => {
    await using registry = registryFor()
    let foreign = 0
    await Promise.all(
      ['a', 'b', 'a', 'b', 'a', 'b'].map(async (org) => {
        for (const run of Object.values(readers(registry, org))) {
          for (let i = 0; i < 5; i++) {
            const { r, orgs } = await run()
            expect(r).toBe(true)
            foreign += orgs.filter((o) => o !== org).length
          }
        }
      }),
    )
    expect(foreign).toBe(0)
  })

  it('replica stopped: reads keep working on the primary; replica back: reads return to it', async () => {
    await using registry = registryFor({ retryAfterMs: 200 })
    const events: string[] = []
    registry.on('replica:down', () => events.push('down'))
    registry.on('replica:up', () => events.push('up'))
    const { kysely, drizzle } = readers(registry, 'a')
    expect((await kysely()).r).toBe(true)
    await standby.stop()
    try {
      // Existing replica connections die with it; new ones are refused: each read still succeeds, on the primary.
      await expect.poll(async () => (await drizzle().catch((e: unknown) => ({ r: unwrap(e) }))).r, { timeout: 10_000 }).toBe(false)
      for (let i = 0; i < 5; i++) expect((await kysely()).r).toBe(false)
      expect(events).toContain('down')
      expect(registry.stats().replicas).toEqual([expect.objectContaining({ down: true })])
      // Readiness holds: the primary serves the reads.
      const health = await registry.health()
      expect(health.ok).toBe(true)
      expect(health.servers.find((s) => s.server.endsWith(`:${standby.port}`))).toMatchObject({ replica: true, reachable: false })
    } finally {
      await standby.start()
    }
    await expect.poll(async () => (await kysely()).r, { timeout: 10_000 }).toBe(true)
    expect(events.at(-1)).toBe('up')
  }, 60_000)

  it('a lagging replica is skipped when maxLagMs is set', async () => {
    await using registry = registryFor({ retryAfterMs: 200, maxLagMs: 50 })
    const reasons: RegistryEvents['replica:down'][] = []
    registry.on('replica:down', (e) => reasons.push(e))
    const { knex } = readers(registry, 'b')
    // Earlier writes fully replayed first: otherwise the lag reads as the time since the last replayed commit.
    await standby.waitForReplay()
    await expect.poll(async () => (await knex()).r, { timeout: 10_000 }).toBe(true)
    await standby.pauseReplay()
    try {
      await using writer = await connectClient(urlOf(primary, 'rep_b'))
      await writer.query('UPDATE items SET n = n WHERE n = 1')
      await expect.poll(async () => (await standby.replayLagMs()) ?? 0, { timeout: 10_000 }).toBeGreaterThan(1_100)
      // The lag is measured at most once a second per replica: a read after that lands on the primary.
      await expect.poll(async () => (await knex()).r, { timeout: 10_000 }).toBe(false)
      expect(reasons.some((e) => /replay lag/.test(e.reason))).toBe(true)
    } finally {
      await standby.resumeReplay()
    }
    await standby.waitForReplay()
    await expect.poll(async () => (await knex()).r, { timeout: 10_000 }).toBe(true)
  }, 60_000)
})
