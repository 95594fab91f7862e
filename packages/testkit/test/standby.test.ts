import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { setTimeout as delay } from 'node:timers/promises'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startPostgres, startStandby } from '../src/index.js'
import type { PostgresServer, StandbyServer } from '../src/index.js'

async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 })
  client.on('error', () => {})
  await client.connect()
  return client
}

async function query<Row extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<Row[]> {
  const client = await connect(url)
  try {
    return (await client.query<Row>(sql, params)).rows
  } finally {
    await client.end()
  }
}

/** Polls `probe` (no fixed sleeps) until it returns something other than undefined; fails after `timeoutMs`. */
async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined) return value
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await delay(10)
  }
}

async function visibleIds(url: string, table: string): Promise<number[]> {
  const rows = await query<{ id: number }>(url, `SELECT id FROM ${table} ORDER BY id`)
  return rows.map((row) => row.id)
}

async function untilVisible(standby: StandbyServer, table: string, id: number): Promise<void> {
  await eventually(`row ${id} of ${table} on the standby`, async () =>
    (await visibleIds(standby.adminUrl, table).catch((): number[] => [])).includes(id) ? true : undefined,
  )
}

/** Processes whose command line mentions `text` (e.g. a data directory): the postmaster, a watchdog shell. */
function processesMentioning(text: string): number[] {
  const pids: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(text)) pids.push(Number(entry))
    } catch {
      // gone meanwhile
    }
  }
  return pids
}

describe('startStandby', () => {
  let primary: PostgresServer
  let standby: StandbyServer

  beforeAll(async () => {
    primary = await startPostgres()
    standby = await startStandby(primary)
    await query(primary.adminUrl, 'CREATE TABLE items (id int PRIMARY KEY); CREATE SEQUENCE counter')
  }, 120_000)

  afterAll(async () => {
    await standby?.[Symbol.asyncDispose]()
    await primary?.stop()
  }, 60_000)

  it('is a hot standby streaming from the primary: rows written there become visible', { timeout: 60_000 }, async () => {
    expect(standby.port).not.toBe(primary.port)
    const [state] = await query<{ recovery: boolean; receiver: string; data: string }>(
      standby.adminUrl,
      "SELECT pg_is_in_recovery() AS recovery, (SELECT status FROM pg_stat_wal_receiver) AS receiver, current_setting('data_directory') AS data",
    )
    expect(state).toMatchObject({ recovery: true, receiver: 'streaming' })
    const [replication] = await query(
      primary.adminUrl,
      'SELECT state, slot_name FROM pg_stat_replication JOIN pg_replication_slots ON active_pid = pid WHERE application_name = $1',
      [standby.slotName],
    )
    expect(replication).toMatchObject({ state: 'streaming', slot_name: standby.slotName })

    await query(primary.adminUrl, 'INSERT INTO items VALUES (1)')
    await untilVisible(standby, 'items', 1)
    expect(await visibleIds(standby.adminUrl, 'items')).toEqual([1])
    expect(await standby.replayLagMs()).toBe(0)
    // The password stays out of logs.
    expect(JSON.stringify(standby)).not.toContain(new URL(standby.adminUrl).password)
  })

  it('refuses writes (25006 read_only_sql_transaction)', { timeout: 60_000 }, async () => {
    await expect(query(standby.adminUrl, 'INSERT INTO items VALUES (100)')).rejects.toMatchObject({ code: '25006' })
    await expect(query(standby.adminUrl, 'CREATE TABLE nope (id int)')).rejects.toMatchObject({ code: '25006' })
    await standby.waitForReplay()
    await expect(query(standby.adminUrl, "SELECT nextval('counter')")).rejects.toMatchObject({ code: '25006' })
    expect(await query(standby.adminUrl, 'SELECT count(*)::int AS n FROM items')).toHaveLength(1)
  })

  it('waitForReplay() resolves once what the primary committed is visible', { timeout: 60_000 }, async () => {
    await query(primary.adminUrl, 'INSERT INTO items VALUES (2)')
    await standby.waitForReplay()
    expect(await visibleIds(standby.adminUrl, 'items')).toContain(2)
  })

  it('stop() refuses connections; start() brings it back on the same port and it catches up', { timeout: 60_000 }, async () => {
    const port = standby.port
    await standby.stop()
    await standby.stop() // idempotent
    await expect(connect(standby.adminUrl)).rejects.toMatchObject({ code: 'ECONNREFUSED' })

    // Written while it is down: the slot keeps the WAL on the primary.
    await query(primary.adminUrl, 'INSERT INTO items VALUES (3)')
    await query(primary.adminUrl, 'SELECT pg_switch_wal()')
    await query(primary.adminUrl, 'CHECKPOINT')

    await standby.start()
    await standby.start() // no-op while it runs
    expect(standby.port).toBe(port)
    await untilVisible(standby, 'items', 3)
    const [state] = await query(standby.adminUrl, 'SELECT pg_is_in_recovery() AS recovery, (SELECT status FROM pg_stat_wal_receiver) AS receiver')
    expect(state).toEqual({ recovery: true, receiver: 'streaming' })
  })

  it('pauseReplay() freezes what the standby shows and the lag grows; resumeReplay() catches up', { timeout: 60_000 }, async () => {
    await standby.waitForReplay()
    await standby.pauseReplay()
    expect(await query(standby.adminUrl, 'SELECT pg_get_wal_replay_pause_state() AS state')).toEqual([{ state: 'paused' }])

    await query(primary.adminUrl, 'INSERT INTO items VALUES (4)')
    // Received but not applied: the lag is the time since the last transaction it did apply.
    const first = await eventually('a replay lag > 0', async () => {
      const lag = await standby.replayLagMs()
      return lag !== null && lag > 0 ? lag : undefined
    })
    await query(primary.adminUrl, 'INSERT INTO items VALUES (5)')
    await eventually('the replay lag to grow', async () => {
      const lag = await standby.replayLagMs()
      return lag !== null && lag > first ? lag : undefined
    })
    expect(await visibleIds(standby.adminUrl, 'items')).not.toContain(4)
    await expect(standby.waitForReplay({ timeoutMs: 200 })).rejects.toThrow(/waitForReplay\(\).*within 200 ms/)

    await standby.resumeReplay()
    await untilVisible(standby, 'items', 5)
    expect(await visibleIds(standby.adminUrl, 'items')).toEqual([1, 2, 3, 4, 5])
    await eventually('no replay lag', async () => ((await standby.replayLagMs()) === 0 ? true : undefined))
  })

  it('dispose stops it and removes its directory, watchdog and slot; start() then refuses', { timeout: 60_000 }, async () => {
    const second = await startStandby(primary)
    const [{ dir } = { dir: '' }] = await query<{ dir: string }>(second.adminUrl, "SELECT current_setting('data_directory') AS dir")
    expect(dir).toMatch(/hyperconn-pg-standby-/)
    const postmasterPid = Number(readFileSync(`${dir}/postmaster.pid`, 'utf8').split('\n')[0])
    // The postmaster and the SIGKILL watchdog both name the directory.
    expect(processesMentioning(dir)).toContain(postmasterPid)
    expect(processesMentioning(dir).length).toBeGreaterThanOrEqual(2)
    await untilVisible(second, 'items', 5)

    await second[Symbol.asyncDispose]()
    await second[Symbol.asyncDispose]() // idempotent
    expect(existsSync(dir)).toBe(false)
    expect(existsSync(`/proc/${postmasterPid}`)).toBe(false)
    expect(processesMentioning(dir)).toEqual([])
    await expect(connect(second.adminUrl)).rejects.toMatchObject({ code: 'ECONNREFUSED' })
    expect(await query(primary.adminUrl, 'SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [second.slotName])).toEqual([])
    await expect(second.start()).rejects.toThrow(/disposed/)
    // The first standby is unaffected.
    expect(await query(primary.adminUrl, 'SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [standby.slotName])).toHaveLength(1)
  })
})
