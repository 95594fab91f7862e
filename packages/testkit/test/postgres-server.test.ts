import { existsSync } from 'node:fs'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import type { Server } from 'node:net'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { once } from 'node:events'
import pg from 'pg'
import { describe, expect, it } from 'vitest'
import { startPostgres } from '../src/index.js'

async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url })
  client.on('error', () => {})
  await client.connect()
  return client
}

// Each test starts its own server (the shared one from global-setup is left alone); ~1 s each, mostly initdb.
describe('startPostgres', () => {
  it('starts a password-protected server and stop() removes it and its data dir', async () => {
    const server = await startPostgres()

    const url = new URL(server.adminUrl)
    expect(url.hostname).toBe('127.0.0.1')
    expect(Number(url.port)).toBe(server.port)
    expect(url.username).toBe('postgres')
    expect(url.pathname).toBe('/postgres')

    const client = await connect(server.adminUrl)
    const [settings] = (
      await client.query<{ max: string; enc: string; su: boolean; dir: string }>(
        "SELECT current_setting('max_connections') AS max, current_setting('server_encoding') AS enc, rolsuper AS su, current_setting('data_directory') AS dir FROM pg_roles WHERE rolname = current_user",
      )
    ).rows
    expect(settings).toMatchObject({ max: '100', enc: 'UTF8', su: true })
    const dataDir = settings?.dir ?? ''
    expect(basename(dataDir)).toMatch(/^hyperconn-pg-/)
    expect(existsSync(dataDir)).toBe(true)
    await client.end()

    url.password = 'wrong'
    await expect(connect(url.toString())).rejects.toMatchObject({ code: '28P01' })
    // The password must not leak through logging the server object.
    expect(JSON.stringify(server)).not.toContain(new URL(server.adminUrl).password)

    await server.stop()
    await server.stop() // idempotent
    await expect(connect(server.adminUrl)).rejects.toMatchObject({ code: 'ECONNREFUSED' })
    expect(existsSync(dataDir)).toBe(false)
  })

  it('supports await using', async () => {
    let adminUrl: string
    {
      await using server = await startPostgres()
      adminUrl = server.adminUrl
      await (await connect(adminUrl)).end()
    }
    await expect(connect(adminUrl)).rejects.toMatchObject({ code: 'ECONNREFUSED' })
  })

  it('cleans up when the server cannot start (fixed port already taken)', async () => {
    const blocker: Server = createServer()
    blocker.listen(0, '127.0.0.1')
    await once(blocker, 'listening')
    const address = blocker.address()
    const port = typeof address === 'object' && address !== null ? address.port : 0
    // A dir of our own (traversable by the postgres OS user) so we can see exactly what is left behind.
    const parent = await mkdtemp(join(tmpdir(), 'hyperconn-test-'))
    await chmod(parent, 0o755)
    const dataDir = join(parent, 'data')
    try {
      await expect(startPostgres({ port, dataDir })).rejects.toThrow(/failed to start[\s\S]*Address already in use/)
      expect(existsSync(dataDir)).toBe(false)
    } finally {
      blocker.close()
      await rm(parent, { recursive: true, force: true })
    }
  })

  it('handleSignals: false adds no signal listener for that server; a signal stops only the servers that handle them', async () => {
    const count = () => ({
      term: process.listenerCount('SIGTERM'),
      int: process.listenerCount('SIGINT'),
      hup: process.listenerCount('SIGHUP'),
      exit: process.listenerCount('exit'),
    })
    const before = count()
    const owned = await startPostgres({ handleSignals: false })
    try {
      // The exit hook stays as the last resort; no signal hook.
      expect(count()).toEqual({ ...before, exit: before.exit + 1 })

      const beforeListeners = process.listeners('SIGTERM')
      const handled = await startPostgres()
      const [listener] = process.listeners('SIGTERM').filter((l) => !beforeListeners.includes(l))
      expect(count()).toEqual({ term: before.term + 1, int: before.int + 1, hup: before.hup + 1, exit: before.exit + 1 })

      // What a SIGTERM does while the process has a handler of its own (as the example app has): call
      // testkit's listener directly, with our own listener keeping the signal from being re-raised.
      const keepAlive = (): void => {}
      process.on('SIGTERM', keepAlive)
      try {
        expect(listener).toBeTypeOf('function')
        ;(listener as (signal: NodeJS.Signals) => void)('SIGTERM')
      } finally {
        process.removeListener('SIGTERM', keepAlive)
      }
      await expect(connect(handled.adminUrl)).rejects.toMatchObject({ code: 'ECONNREFUSED' })
      const client = await connect(owned.adminUrl)
      expect((await client.query('SELECT 1 AS ok')).rows).toEqual([{ ok: 1 }])
      await client.end()
      expect(count()).toEqual({ ...before, exit: before.exit + 1 })
      await handled.stop()
    } finally {
      await owned.stop()
    }
    expect(count()).toEqual(before)
    await expect(connect(owned.adminUrl)).rejects.toMatchObject({ code: 'ECONNREFUSED' })
  })
})
