import { isInTransaction } from '@hyperconn/core'
import { sql as drizzleSql } from 'drizzle-orm'
import { sql as kyselySql } from 'kysely'
import type pg from 'pg'
import { describe, expect, it } from 'vitest'
import { crossOrmDatabases, ENTRY_POINTS, VIAS } from './support/fixture.js'
import type { Via, WhereAmI } from './support/fixture.js'

// Issue 9 acceptance through every adapter: tenant.connection pins one connection for all of them,
// hooks run once per checkout whichever adapter checked out, and a connection released inside a
// transaction never reaches the next caller in that state.

const databases = crossOrmDatabases(2, 'xlife')

describe('tenant.connection(fn)', () => {
  it('Drizzle, Kysely, Knex and core inside see one backend; a session SET persists across them; no transaction', async () => {
    await using fx = await databases.open()
    const { org, orgs } = fx
    const other = orgs[1]
    const outside = await org.whereAmI('core')
    const seen = await org.tenant.connection(async () => {
      await org.tenant.query("SET application_name = 'pinned'")
      const rows: { via: Via; where: WhereAmI; app: string; inTx: boolean }[] = []
      for (const via of VIAS) {
        rows.push({ via, where: await org.whereAmI(via), app: await applicationName(org, via), inTx: isInTransaction(org.tenant) })
      }
      // Concurrent ones are serialised on the pinned connection.
      const concurrent = await Promise.all([...VIAS, ...VIAS].map((via) => org.whereAmI(via)))
      // Another tenant inside is not pinned: its own connection.
      const otherTenant = await other?.whereAmI('core')
      return { rows, concurrent, otherTenant }
    })
    const pid = seen.rows[0]?.where.pid
    for (const row of seen.rows) expect(row, row.via).toMatchObject({ where: { pid }, app: 'pinned', inTx: false })
    expect(new Set(seen.concurrent.map((w) => w.pid))).toEqual(new Set([pid]))
    // Every statement its own transaction: txid_current() differs each time.
    const txids = [...seen.rows.map((r) => r.where.txid), ...seen.concurrent.map((w) => w.txid)]
    expect(new Set(txids).size).toBe(txids.length)
    expect(seen.otherTenant?.database).not.toBe(seen.rows[0]?.where.database)
    expect(outside.pid).toBeGreaterThan(0)
    expect(fx.registry.stats().connections.checkedOut).toBe(0)
  })

  it.each(ENTRY_POINTS)('a transaction opened by %s inside runs on the pinned connection and commits', async (entry) => {
    await using fx = await databases.open()
    const { org } = fx
    const result = await org.tenant.connection(async () => {
      const before = await org.whereAmI('kysely')
      const inside = await org.transaction(entry, async (native) => {
        await native.insert(`pinned-${entry}`)
        return Promise.all(VIAS.map((via) => org.whereAmI(via)))
      })
      const after = await org.whereAmI('drizzle')
      return { before, inside, after }
    })
    expect(new Set(result.inside.map((w) => w.pid))).toEqual(new Set([result.before.pid]))
    expect(new Set(result.inside.map((w) => w.txid)).size).toBe(1)
    expect(result.after.pid).toBe(result.before.pid)
    expect(await org.labels()).toEqual([`pinned-${entry}`])
  })

  it('queries of the pinned scope outside a transaction begun in it wait for it instead of joining it', async () => {
    await using fx = await databases.open()
    const { org } = fx
    const [inTx, sibling] = await org.tenant.connection(() =>
      Promise.all([
        org.transaction('core', async (native) => {
          await native.insert('tx')
          return native.whereAmI()
        }),
        org.whereAmI('knex'),
      ]),
    )
    expect(sibling.pid).toBe(inTx.pid)
    expect(sibling.txid).not.toBe(inTx.txid)
  })
})

describe('hooks through every adapter', () => {
  it('onClaim and onRelease run once per checkout, in order, whichever adapter checked out', async () => {
    const log: string[] = []
    await using fx = await databases.open({
      hooks: {
        onClaim: async (conn) => {
          await conn.query("SELECT set_config('app.request', 'r1', false)")
          log.push('claim')
        },
        onRelease: async (conn) => {
          await conn.query("SELECT set_config('app.request', '', false)")
          log.push('release')
        },
      },
    })
    const { org } = fx
    for (const via of VIAS) {
      log.length = 0
      const seen = await requestSetting(org, via)
      log.push('query')
      await expect.poll(() => log.length).toBe(3)
      expect(seen, via).toBe('r1')
      expect(log, via).toEqual(['claim', 'query', 'release'])
    }
    for (const entry of ENTRY_POINTS) {
      log.length = 0
      await org.transaction(entry, async () => {
        for (const via of VIAS) await org.whereAmI(via)
      })
      await expect.poll(() => log.length).toBe(2)
      expect(log, entry).toEqual(['claim', 'release'])
    }
  })
})

describe('session hygiene', () => {
  it('a connection released inside an open transaction by hand is rolled back before the next caller gets it', async () => {
    await using fx = await databases.open({ pool: { max: 1 } })
    const { org } = fx
    const conn = await org.tenant.acquire()
    await conn.query('BEGIN')
    await conn.query("INSERT INTO items (orm, label) VALUES ('core', 'abandoned')")
    const pid = conn.processID
    conn.release()
    const client = await (await fx.registry.getPool('core', org.orgId)).connect()
    await client.query('BEGIN')
    await client.query('SELECT * FROM nonexistent_table').catch(() => undefined) // failed transaction
    client.release()
    const next = await org.tenant.query<{ pid: number; in_tx: boolean }>(
      'SELECT pg_backend_pid() AS pid, statement_timestamp() <> transaction_timestamp() AS in_tx',
    )
    expect(next.rows[0]).toEqual({ pid, in_tx: false })
    expect(await org.labels()).toEqual([])
    const idleInTx = await org.admin.query("SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'")
    expect(idleInTx.rowCount).toBe(0)
  })
})

type Org = Awaited<ReturnType<typeof databases.open>>['org']

async function applicationName(org: Org, via: Via): Promise<string> {
  return (await show(org, via, "SELECT current_setting('application_name') AS v")) ?? ''
}

async function requestSetting(org: Org, via: Via): Promise<string | undefined> {
  return show(org, via, "SELECT current_setting('app.request', true) AS v")
}

async function show(org: Org, via: Via, text: string): Promise<string | undefined> {
  switch (via) {
    case 'core':
      return (await org.tenant.query<{ v: string }>(text)).rows[0]?.v
    case 'drizzle':
      return (await org.drizzle.execute<{ v: string }>(drizzleSql.raw(text))).rows[0]?.v
    case 'kysely':
      return (await kyselySql.raw<{ v: string }>(text).execute(org.kysely)).rows[0]?.v
    case 'knex':
      return (await org.knex.raw<pg.QueryResult<{ v: string }>>(text)).rows[0]?.v
  }
}
