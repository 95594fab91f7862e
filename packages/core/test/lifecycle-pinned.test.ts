import type { TestDatabase } from '@hyperconn/testkit'
import { connectClient } from '@hyperconn/testkit'
import { testDatabase } from '@hyperconn/testkit/vitest'
import type pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConnectionError, createRegistry, isInTransaction, staticSecrets, TransactionClosedError } from '../src/index.js'
import type { Registry } from '../src/index.js'
import { ManualClock } from './support/manual-clock.js'

// tenant.connection(fn) and what a pinned or validated connection leaves for the next checkout.

let db: TestDatabase
let admin: pg.Client & AsyncDisposable

beforeAll(async () => {
  db = await testDatabase('pinned')
  admin = await connectClient(db.url)
  await admin.query('CREATE TABLE deferred (id int, CONSTRAINT deferred_u UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)')
})

afterAll(async () => {
  await admin?.[Symbol.asyncDispose]()
  await db?.[Symbol.asyncDispose]()
})

function registryWith(options: { max?: number; clock?: ManualClock; bad?: boolean } = {}): Registry<'core'> {
  return createRegistry({
    project: 'pn',
    services: {
      core: {
        isolation: { rls: 'app.tenant_id' },
        ...(options.bad === true ? { tenantSettings: (orgId: string) => (orgId === 'bad' ? { statement_timeout: 'soon' } : {}) } : {}),
      },
    },
    secrets: staticSecrets({ 'pn-a': { 'core-postgresql': db.url }, 'pn-b': { 'core-postgresql': db.url }, 'pn-bad': { 'core-postgresql': db.url } }),
    pool: { max: options.max ?? 1 },
    connections: { max: 4 },
    ...(options.clock === undefined ? {} : { clock: options.clock }),
  })
}

const PID = 'SELECT pg_backend_pid() AS pid'

describe('tenant.connection(fn)', () => {
  it('one backend, no transaction, ends with fn; later use is refused', async () => {
    await using registry = registryWith({ max: 2 })
    const tenant = registry.tenant('a')
    let leftover: Promise<unknown> | undefined
    const pids = await tenant.connection(async () => {
      expect(isInTransaction(tenant)).toBe(false)
      const all = await Promise.all(Array.from({ length: 6 }, async () => (await tenant.query<{ pid: number }>(PID)).rows[0]?.pid))
      const viaPool = (await (await registry.getPool('core', 'a')).query<{ pid: number }>(PID)).rows[0]?.pid
      const viaAcquire = await (async () => {
        await using conn = await tenant.acquire()
        return (await conn.query<{ pid: number }>(PID)).rows[0]?.pid
      })()
      leftover = Promise.resolve().then(() => new Promise((resolve) => setImmediate(resolve))).then(() => tenant.query('SELECT 1'))
      return [...all, viaPool, viaAcquire]
    })
    expect(new Set(pids).size).toBe(1)
    await expect(leftover).rejects.toBeInstanceOf(TransactionClosedError)
    expect(registry.stats().connections.checkedOut).toBe(0)
  })

  it('an advisory lock or SET left by the scope is gone before the next checkout', async () => {
    await using registry = registryWith()
    const pid = await registry.tenant('a').connection(async () => {
      await registry.tenant('a').query('SELECT pg_advisory_lock(42)')
      await registry.tenant('a').query("SET application_name = 'left-behind'")
      return (await registry.tenant('a').query<{ pid: number }>(PID)).rows[0]?.pid
    })
    const next = await registry.tenant('b').query<{ pid: number; app: string }>(`${PID}, current_setting('application_name') AS app`)
    expect(next.rows[0]?.pid).toBe(pid) // the same connection (pool max 1), reset
    expect(next.rows[0]?.app).not.toBe('left-behind')
    const locks = await admin.query("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 42")
    expect(locks.rowCount).toBe(0)
  })

  it('a plain autocommit query that takes a session advisory lock does not leave it to the next tenant', async () => {
    await using registry = registryWith()
    await registry.tenant('a').query('SELECT pg_advisory_lock(43)')
    await registry.tenant('b').query('SELECT 1')
    const locks = await admin.query("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 43")
    expect(locks.rowCount).toBe(0)
  })

  it('a COMMIT that fails as a statement (deferred constraint) ends that transaction only: the pinned scope goes on', async () => {
    await using registry = registryWith()
    const tenant = registry.tenant('a')
    const result = await tenant.connection(async () => {
      const failed = await tenant
        .transaction(async () => {
          await tenant.query('INSERT INTO deferred VALUES (1), (1)')
        })
        .catch((e: unknown) => e)
      const after = (await tenant.query<{ pid: number }>(PID)).rows[0]?.pid
      await tenant.transaction(() => tenant.query('INSERT INTO deferred VALUES (2)'))
      return { failed, after }
    })
    expect(result.failed).toMatchObject({ code: '23505' })
    expect(result.after).toBeGreaterThan(0)
    expect((await admin.query('SELECT id FROM deferred')).rows).toEqual([{ id: 2 }])
  })
})

describe('validation of idle connections', () => {
  it('a setting the server refuses fails that tenant only: no other idle connection is destroyed for it', async () => {
    const clock = new ManualClock()
    await using registry = registryWith({ max: 3, bad: true, clock })
    const held = await Promise.all([registry.tenant('a').acquire(), registry.tenant('a').acquire(), registry.tenant('a').acquire()])
    for (const conn of held) await conn.query('SELECT 1')
    for (const conn of held) conn.release()
    expect(registry.stats().pools.list[0]).toMatchObject({ total: 3, idle: 3 })
    clock.advance(5_000) // every idle connection is due for validation
    const error = await registry.tenant('bad').query('SELECT 1').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ConnectionError)
    expect((error as Error).message).toMatch(/statement_timeout/)
    await expect.poll(() => registry.stats().pools.list[0]?.total).toBe(2)
    await expect(registry.tenant('a').query('SELECT 1')).resolves.toMatchObject({ rowCount: 1 })
  })
})
