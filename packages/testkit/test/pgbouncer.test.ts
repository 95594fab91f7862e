import { spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { dirname, join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { connectClient, createRole, pgbouncerBinary, startPgBouncer, startPostgres } from '../src/index.js'
import type { PgBouncer, PostgresServer } from '../src/index.js'
import { processEnded } from '../src/processes.js'
import { describeWithPgBouncer } from '../src/vitest.js'

const POOL_SIZE = 2
const DATABASE = 'bounced'
const APP = { user: 'bouncer_app', password: 'app pw: "quoted" %' }
const TIMEOUT = 60_000

type Pool = Record<string, string | number> & { database: string; user: string }

/** Server connections of a SHOW POOLS row, in whatever state (sv_active, sv_idle, sv_used, sv_login, ...). */
function serverConnections(pool: Pool): number {
  return Object.entries(pool).reduce((sum, [key, value]) => sum + (key.startsWith('sv_') ? Number(value) : 0), 0)
}

function gone(pid: number): boolean {
  if (process.platform === 'linux') return processEnded(pid) === true
  try {
    process.kill(pid, 0)
    return false
  } catch {
    return true
  }
}

async function waitUntilGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms
  while (!gone(pid) && Date.now() < deadline) await delay(50)
  return gone(pid)
}

/** The pgbouncer's temp dir: its only argument is the ini file in it. */
function configDir(pid: number): string {
  const [, ini] = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
  return dirname(ini ?? '')
}

// Its own PostgreSQL (the shared one is left alone) and a PgBouncer with 2 server connections per db/user.
describeWithPgBouncer('startPgBouncer', () => {
  let server: PostgresServer
  let bouncer: PgBouncer
  /** Directly to PostgreSQL, as the superuser. */
  let databaseUrl: string

  beforeAll(async () => {
    server = await startPostgres()
    bouncer = await startPgBouncer({ server, defaultPoolSize: POOL_SIZE })
    await createRole(server.adminUrl, APP.user, APP.password)
    {
      await using admin = await connectClient(server.adminUrl)
      await admin.query(`CREATE DATABASE ${DATABASE} OWNER ${APP.user}`)
    }
    const url = new URL(server.adminUrl)
    url.pathname = `/${DATABASE}`
    databaseUrl = url.toString()
    await using admin = await connectClient(databaseUrl)
    await admin.query(`CREATE TABLE items (id serial PRIMARY KEY, role text NOT NULL, backend int NOT NULL)`)
    await admin.query(`GRANT ALL ON items, items_id_seq TO ${APP.user}`)
    await bouncer.addUser(APP.user, APP.password)
  }, TIMEOUT)

  afterAll(async () => {
    await bouncer?.stop()
    await server?.stop()
  }, TIMEOUT)

  it('pgbouncerBinary() finds the binary', () => {
    expect(pgbouncerBinary()).toMatch(/pgbouncer$/)
  })

  it(
    'ten SCRAM clients of two roles run concurrently on at most default_pool_size server connections per role',
    async () => {
      const urls = [bouncer.url(DATABASE), bouncer.url(DATABASE, APP.user, APP.password)]
      const clients = await Promise.all(Array.from({ length: 10 }, (_, i) => connectClient(urls[i % 2] ?? '')))
      await using admin = await connectClient(server.adminUrl)
      await using adminConsole = await connectClient(bouncer.url('pgbouncer'))
      try {
        // Samples what PgBouncer and PostgreSQL report while the clients run.
        let running = true
        let maxServer = 0
        let maxWaiting = 0
        let maxBackends = 0
        const sampler = (async () => {
          while (running) {
            const pools = (await adminConsole.query<Pool>('SHOW POOLS')).rows.filter((p) => p.database === DATABASE)
            for (const pool of pools) {
              maxServer = Math.max(maxServer, serverConnections(pool))
              maxWaiting = Math.max(maxWaiting, Number(pool.cl_waiting))
            }
            const backends = await admin.query<{ n: number }>(
              `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 GROUP BY usename`,
              [DATABASE],
            )
            maxBackends = Math.max(maxBackends, ...backends.rows.map((row) => row.n))
            await delay(5)
          }
        })()

        const work = clients.map(async (client, i) => {
          for (let round = 0; round < 5; round++) {
            await client.query('BEGIN')
            await client.query('INSERT INTO items (role, backend) VALUES (current_user, pg_backend_pid())')
            await client.query('SELECT pg_sleep(0.02)')
            await client.query('COMMIT')
          }
          return (await client.query<{ user: string }>('SELECT current_user AS user')).rows[0]?.user ?? `client ${i}`
        })
        const users = await Promise.all(work)
        running = false
        await sampler

        expect(new Set(users)).toEqual(new Set(['postgres', APP.user]))
        await using direct = await connectClient(databaseUrl)
        const perRole = await direct.query<{ role: string; rows: number; backends: number }>(
          'SELECT role, count(*)::int AS rows, count(DISTINCT backend)::int AS backends FROM items GROUP BY role ORDER BY role',
        )
        expect(perRole.rows).toEqual([
          { role: APP.user, rows: 25, backends: expect.any(Number) },
          { role: 'postgres', rows: 25, backends: expect.any(Number) },
        ])
        for (const row of perRole.rows) expect(row.backends).toBeLessThanOrEqual(POOL_SIZE)
        expect(maxServer).toBeGreaterThan(0)
        expect(maxServer).toBeLessThanOrEqual(POOL_SIZE)
        expect(maxBackends).toBeLessThanOrEqual(POOL_SIZE)
        // Five clients per role and two server connections: clients queued for one.
        expect(maxWaiting).toBeGreaterThan(0)
      } finally {
        await Promise.all(clients.map((client) => client.end()))
      }
    },
    TIMEOUT,
  )

  it('transaction pooling: two clients’ consecutive transactions run on the same backend', async () => {
    await using a = await connectClient(bouncer.url(DATABASE))
    await using b = await connectClient(bouncer.url(DATABASE))
    const backendOf = async (client: pg.Client): Promise<number> => {
      await client.query('BEGIN')
      const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')
      await client.query('COMMIT')
      return rows[0]?.pid ?? -1
    }
    const first = await backendOf(a)
    // The server connection went back to the pool at COMMIT; PgBouncer hands out the most recently used one.
    expect(await backendOf(b)).toBe(first)
    expect(await backendOf(a)).toBe(first)
  }, TIMEOUT)

  it('authenticates with SCRAM against the auth file: wrong passwords and roles never added are refused', async () => {
    await expect(connectClient(bouncer.url(DATABASE, APP.user, 'wrong'))).rejects.toThrow(/SASL authentication failed/)
    await using stranger = await createRole(server.adminUrl, 'bouncer_stranger', 'pw')
    await expect(connectClient(bouncer.url(DATABASE, stranger.user, stranger.password))).rejects.toThrow(
      /SASL authentication failed/,
    )
    await expect(bouncer.addUser(stranger.user, 'not its password')).rejects.toThrow(/wrong password for role/)
    await expect(bouncer.addUser('bouncer_nobody', 'pw')).rejects.toThrow(/no role "bouncer_nobody"/)
  }, TIMEOUT)

  it('refuses a startup `options` parameter (ignore_startup_parameters is extra_float_digits only)', async () => {
    const client = new pg.Client({ connectionString: bouncer.url(DATABASE), options: '-c search_path=x' })
    client.on('error', () => {})
    await expect(client.connect()).rejects.toThrow(/unsupported startup parameter: options/)
    // extra_float_digits is accepted
    const jdbcLike = new pg.Client({ connectionString: `${bouncer.url(DATABASE)}?extra_float_digits=3` })
    await jdbcLike.connect()
    await jdbcLike.end()
  }, TIMEOUT)

  it('restart(): same port, open connections are closed, new ones (of added users too) work', async () => {
    const before = { port: bouncer.port, pid: bouncer.pid }
    const old = await connectClient(bouncer.url(DATABASE, APP.user, APP.password))
    await old.query('SELECT 1')

    await bouncer.restart()

    expect(bouncer.port).toBe(before.port)
    expect(bouncer.pid).not.toBe(before.pid)
    expect(gone(before.pid ?? -1)).toBe(true)
    await expect(old.query('SELECT 1')).rejects.toThrow()
    await using fresh = await connectClient(bouncer.url(DATABASE, APP.user, APP.password))
    expect((await fresh.query<{ user: string }>('SELECT current_user AS user')).rows).toEqual([{ user: APP.user }])
  }, TIMEOUT)

  it('stop() ends the process and removes its temp dir; await using does too', async () => {
    let pid: number | undefined
    let dir = ''
    let url = ''
    {
      await using second = await startPgBouncer({ server })
      pid = second.pid
      expect(pid).toBeTypeOf('number')
      if (process.platform === 'linux') dir = configDir(pid ?? -1)
      url = second.url('postgres')
      await (await connectClient(url)).end()
    }
    expect(gone(pid ?? -1)).toBe(true)
    if (dir !== '') expect(existsSync(dir)).toBe(false)
    await expect(connectClient(url)).rejects.toMatchObject({ code: 'ECONNREFUSED' })
    // stop() is idempotent and restart()/addUser() after it are refused
    const third = await startPgBouncer({ server })
    await third.stop()
    await third.stop()
    expect(third.pid).toBeUndefined()
    await expect(third.restart()).rejects.toThrow(/has been stopped/)
    await expect(third.addUser(APP.user, APP.password)).rejects.toThrow(/has been stopped/)
  }, TIMEOUT)

  // A process that dies without calling stop(): SIGTERM runs testkit's signal hook, SIGKILL leaves it to the watchdog.
  it.each(['SIGTERM', 'SIGKILL'] as const)(
    'no pgbouncer survives its owner process dying of %s',
    async (signal) => {
      const root = join(dirname(fileURLToPath(import.meta.url)), '../../..')
      const owner = spawn(process.execPath, ['--import', 'tsx', 'packages/testkit/test/fixtures/pgbouncer-owner.ts'], {
        cwd: root,
        stdio: ['ignore', 'pipe', 'inherit'],
      })
      try {
        const [line] = await Promise.race([
          (async () => {
            for await (const text of createInterface({ input: owner.stdout })) return [text]
            return []
          })(),
          delay(TIMEOUT - 10_000).then(() => []),
        ])
        const { pid } = JSON.parse(line ?? '{}') as { pid?: number }
        expect(pid).toBeTypeOf('number')
        const started = pid ?? -1
        const dir = process.platform === 'linux' ? configDir(started) : ''

        owner.kill(signal)
        // The watchdog polls once a second.
        expect(await waitUntilGone(started, 10_000)).toBe(true)
        if (dir !== '') {
          const deadline = Date.now() + 5_000
          while (existsSync(dir) && Date.now() < deadline) await delay(50)
          expect(existsSync(dir)).toBe(false)
        }
      } finally {
        owner.kill('SIGKILL')
      }
    },
    TIMEOUT,
  )
})
