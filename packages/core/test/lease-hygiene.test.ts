import { createRole } from '@hyperconn/testkit'
import type { TestDatabase } from '@hyperconn/testkit'
import { testDatabase } from '@hyperconn/testkit/vitest'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { createRegistry, RegistryClosedError, staticSecrets, TransactionClosedError } from '../src/index.js'
import type { Registry, SecretSource } from '../src/index.js'

// Regressions from the review of the shared-pool lease point: ways a connection could reach the next
// tenant carrying the previous one's state, or be held or opened where nobody gives it back.

let db: TestDatabase

beforeAll(async () => {
  db = await testDatabase('hygiene')
})

afterAll(async () => {
  await db?.[Symbol.asyncDispose]()
})

/** Two RLS-style tenants on one target and one connection, so every checkout reuses it. */
function oneConnection(extra: { secrets?: SecretSource } = {}): Registry {
  return createRegistry({
    project: 'h',
    services: { core: { isolation: { rls: 'app.tenant_id' } } },
    secrets: extra.secrets ?? staticSecrets({ 'h-a': { 'core-postgresql': db.url }, 'h-b': { 'core-postgresql': db.url } }),
    pool: { max: 1 },
    connections: { max: 2 },
  })
}

const WHO = "SELECT pg_backend_pid() AS pid, current_user AS usr, current_setting('app.tenant_id', true) AS tenant"
type Who = { pid: number; usr: string; tenant: string }

describe('a connection never reaches the next tenant carrying the previous one', () => {
  it('released while its query still runs: destroyed, and the released handle refuses further use', async () => {
    await using registry = oneConnection()
    const a = await registry.tenant('a', 'core').acquire()
    await a.query('SELECT 1') // settings applied: the next statement goes to the server at once
    const pidA = a.processID
    const running = a.query("SELECT pg_sleep(0.1); SET statement_timeout = '31s'").catch((e: unknown) => e)
    a.release()
    await expect(a.query('SELECT 1')).rejects.toBeInstanceOf(TransactionClosedError)
    const b = (await registry.tenant('b', 'core').query<Who & { timeout: string }>(`${WHO}, current_setting('statement_timeout') AS timeout`)).rows[0]
    await running
    expect(b?.tenant).toBe('b')
    expect(b?.timeout).not.toBe('31s')
    expect(b?.pid).not.toBe(pidA)
    expect(registry.stats().pools.list[0]).toMatchObject({ checkedOut: 0 })
  })

  it('a SET ROLE is undone before the next tenant runs (RESET ALL alone would keep it)', async () => {
    await using role = await createRole(db.url, `hyg_role_${process.pid}`, 'x')
    await using registry = oneConnection()
    const a = await registry.tenant('a', 'core').acquire()
    await a.query(`SET ROLE ${role.user}`)
    expect((await a.query<Who>(WHO)).rows[0]?.usr).toBe(role.user)
    a.release()
    const b = (await registry.tenant('b', 'core').query<Who>(WHO)).rows[0]
    expect(b).toMatchObject({ usr: 'postgres', tenant: 'b' })
  })

  it('whatever a getPool().connect() client ran is reset; the released client refuses further use', async () => {
    await using registry = createRegistry({
      project: 'h',
      services: ['core'],
      secrets: staticSecrets({ 'h-a': { 'core-postgresql': db.url }, 'h-b': { 'core-postgresql': db.url } }),
      pool: { max: 1 },
      connections: { max: 2 },
    })
    const client = await (await registry.getPool('core', 'a')).connect()
    await client.query("SELECT set_config('app.tenant_id', 'a', false)")
    const pid = (await client.query<Who>(WHO)).rows[0]?.pid
    client.release()
    expect(() => client.release()).toThrow(/already been released/)
    expect(() => client.query('SELECT 1')).toThrow(TransactionClosedError)
    const b = (await registry.tenant('b', 'core').query<Who>(WHO)).rows[0]
    expect(b?.pid).toBe(pid) // the same connection, reset
    expect(b?.tenant ?? '').toBe('')
  })
})

describe('nothing held or opened where nobody gives it back', () => {
  it('a pool:create listener that queries does not disturb the queue or leave connections after close()', async () => {
    const secrets: Record<string, Record<string, string>> = {}
    for (const org of ['a', 'b', 'c']) secrets[`h-${org}`] = { 'core-postgresql': `${db.url}?connect_timeout=${org.charCodeAt(0)}` }
    const registry = createRegistry({ project: 'h', services: ['core'], secrets: staticSecrets(secrets), eviction: { maxPools: 1 }, connections: { max: 4 } })
    const fromListener: Promise<unknown>[] = []
    registry.on('pool:create', () => {
      if (fromListener.length < 3) fromListener.push(registry.tenant('c', 'core').query('SELECT 1'))
    })
    await Promise.all(['a', 'b', 'a', 'b'].map((org) => registry.tenant(org, 'core').query('SELECT 1')))
    await vi.waitFor(() => expect(fromListener.length).toBeGreaterThan(0))
    await Promise.all(fromListener)
    expect(registry.stats().servers[0]?.waiting).toBe(0)
    expect(registry.stats().tenants.active).toEqual([])
    await registry.close({ timeoutMs: 1_000 })
    expect(registry.stats().connections).toEqual({ total: 0, idle: 0, waiting: 0, checkedOut: 0 })
  })

  it('a query whose secret arrives after close() rejects with RegistryClosedError and opens nothing', async () => {
    let answer!: () => void
    const slow: SecretSource = {
      get: () =>
        new Promise((resolve) => {
          answer = () => resolve({ 'core-postgresql': db.url })
        }),
    }
    const registry = createRegistry({ project: 'h', services: ['core'], secrets: slow, connections: { max: 2 } })
    const query = registry.tenant('late', 'core').query('SELECT 1').catch((e: unknown) => e)
    await vi.waitFor(() => expect(answer).toBeTypeOf('function'))
    const closing = registry.close()
    answer()
    expect(await query).toBeInstanceOf(RegistryClosedError)
    await closing
    expect(registry.stats()).toMatchObject({ pools: { count: 0 }, connections: { total: 0 } })
  })

  it('warm({ connections }) that cannot get them all gives back the ones it got', async () => {
    await using registry = createRegistry({
      project: 'h',
      services: ['core'],
      secrets: staticSecrets({ 'h-a': { 'core-postgresql': db.url } }),
      connections: { max: 2, acquireTimeoutMs: 100 },
    })
    await expect(registry.warm(['a'], { connections: 3 })).rejects.toMatchObject({ code: 'HC_POOL_SATURATED' })
    expect(registry.stats().tenants.active).toEqual([])
    expect(registry.stats().connections).toMatchObject({ checkedOut: 0, idle: 2 })
  })
})
