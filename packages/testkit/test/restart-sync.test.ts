import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { describe, expect, it } from 'vitest'
import { startPostgres } from '../src/postgres-server.js'

function postmasterPid(dataDir: string): number {
  return Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0])
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** Postmaster pids that a SIGKILL watchdog of this process is armed for (from /proc). */
function watchdogTargets(): number[] {
  const targets: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    let args: string[]
    try {
      args = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0')
    } catch {
      continue
    }
    // sh -c SCRIPT hyperconn-pg-watchdog <our pid> <postmaster pid> <data dir>
    const at = args.indexOf('hyperconn-pg-watchdog')
    if (at > 0 && args[at + 1] === String(process.pid)) targets.push(Number(args[at + 2]))
  }
  return targets
}

async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url })
  client.on('error', () => {})
  await client.connect()
  return client
}

describe('PostgresServer.restartSync', () => {
  const name = 'restarts PostgreSQL while the event loop is blocked; stop() then stops the new postmaster'
  it(name, { timeout: 60_000 }, async () => {
    // A dir of our own (traversable by the postgres OS user) so we can read postmaster.pid and see what is left.
    const parent = await mkdtemp(join(tmpdir(), 'hyperconn-test-'))
    await chmod(parent, 0o755)
    const dataDir = join(parent, 'data')
    try {
      const server = await startPostgres({ dataDir })
      const firstPid = postmasterPid(dataDir)
      const pids = [firstPid]
      try {
        const old = new pg.Client({ connectionString: server.adminUrl })
        const events: string[] = []
        old.on('error', (error: Error & { code?: string }) => events.push(`error ${error.code ?? error.message}`))
        old.on('end', () => events.push('end'))
        await old.connect()
        await old.query('CREATE TABLE survives (n int); INSERT INTO survives VALUES (42)')
        if (process.platform === 'linux') expect(watchdogTargets()).toContain(firstPid)

        server.restartSync()

        // Nothing was processed while it ran: the old connection still looks alive, and is used as if it were.
        expect(events).toEqual([])
        const next = old.query('SELECT 1')
        const secondPid = postmasterPid(dataDir)
        pids.push(secondPid)
        expect(secondPid).not.toBe(firstPid)
        expect(isRunning(secondPid)).toBe(true)
        // (a) Its backend was terminated by the fast shutdown: the query fails (57P01 "terminating connection due to
        // administrator command", read from the socket only now; or the closed socket itself).
        await expect(next).rejects.toSatisfy(
          (error: Error & { code?: string }) =>
            error.code === '57P01' || /terminat|ECONNRESET|EPIPE|closed/i.test(error.message),
        )
        await old.end().catch(() => {})

        // (b) A new connection works: same port, password and data.
        const fresh = await connect(server.adminUrl)
        expect((await fresh.query('SELECT n FROM survives')).rows).toEqual([{ n: 42 }])
        if (process.platform === 'linux') {
          const targets = watchdogTargets()
          expect(targets).toContain(secondPid)
          expect(targets).not.toContain(firstPid)
        }

        // Again, now from a postmaster that restartSync() itself started.
        server.restartSync()
        const thirdPid = postmasterPid(dataDir)
        pids.push(thirdPid)
        expect(thirdPid).not.toBe(secondPid)
        await expect(fresh.query('SELECT 1')).rejects.toThrow()
        await fresh.end().catch(() => {})
        const third = await connect(server.adminUrl)
        expect((await third.query('SELECT n FROM survives')).rows).toEqual([{ n: 42 }])
        await third.end()
      } finally {
        await server.stop()
      }

      for (const pid of pids) expect(isRunning(pid)).toBe(false)
      expect(existsSync(dataDir)).toBe(false)
      if (process.platform === 'linux') expect(watchdogTargets().filter((pid) => pids.includes(pid))).toEqual([])
      expect(() => server.restartSync()).toThrow(/has been stopped/)
      await expect(connect(server.adminUrl)).rejects.toMatchObject({ code: 'ECONNREFUSED' })
    } finally {
      await rm(parent, { recursive: true, force: true })
    }
  })
})
