import type { TestDatabase } from '@hyperconn/testkit'
import { testDatabase } from '@hyperconn/testkit/vitest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConnectionLeakError, createRegistry, InvalidOptionsError, staticSecrets } from '../src/index.js'
import type { Registry, RegistryEvents } from '../src/index.js'
import { ManualClock } from './support/manual-clock.js'

// Leak detection and registry.scope, on a clock the test moves by hand (no real time passes).

let db: TestDatabase

beforeAll(async () => {
  db = await testDatabase('leaks')
})

afterAll(async () => {
  await db?.[Symbol.asyncDispose]()
})

type Leak = RegistryEvents['connection:leak']

function registryWith(
  clock: ManualClock,
  leakDetection?: { thresholdMs: number; destroy?: boolean },
  eviction?: { idleTtlMs: number; sweepIntervalMs: number },
): { registry: Registry<'core'>; leaks: Leak[] } {
  const registry = createRegistry({
    project: 'lk',
    services: ['core'],
    secrets: staticSecrets({ 'lk-a': { 'core-postgresql': db.url }, 'lk-b': { 'core-postgresql': db.url } }),
    pool: { max: 2 },
    connections: { max: 4 },
    clock,
    ...(leakDetection === undefined ? {} : { leakDetection }),
    ...(eviction === undefined ? {} : { eviction }),
  })
  const leaks: Leak[] = []
  registry.on('connection:leak', (leak) => leaks.push(leak))
  return { registry, leaks }
}

const THIS_FILE = /lifecycle-leaks\.test\.ts:\d+/

describe('leakDetection', () => {
  it('reports a checkout held past thresholdMs once, with the stack that acquired it; the holder keeps working', async () => {
    const clock = new ManualClock()
    const { registry, leaks } = registryWith(clock, { thresholdMs: 30_000 })
    await using _ = registry
    const conn = await registry.tenant('a').acquire() // the stack must name this line
    const released = await registry.tenant('b').acquire()
    released.release()
    clock.advance(29_999)
    expect(leaks).toEqual([])
    clock.advance(1)
    expect(leaks).toHaveLength(1)
    expect(leaks[0]).toMatchObject({ service: 'core', orgId: 'a', heldMs: 30_000, reason: 'threshold', destroyed: false })
    expect(leaks[0]?.stack).toMatch(THIS_FILE)
    expect(registry.stats().leaks).toBe(1)
    clock.advance(120_000)
    expect(leaks).toHaveLength(1)
    await expect(conn.query('SELECT 1')).resolves.toMatchObject({ rowCount: 1 })
    conn.release()
    expect(registry.stats().connections.checkedOut).toBe(0)
  })

  it('with destroy: the connection is destroyed and the holder’s next query rejects with ConnectionLeakError (acquire and getPool().connect)', async () => {
    const clock = new ManualClock()
    const { registry, leaks } = registryWith(clock, { thresholdMs: 1_000, destroy: true })
    await using _ = registry
    const conn = await registry.tenant('a').acquire()
    const client = await (await registry.getPool('core', 'b')).connect()
    await conn.query('SELECT 1')
    clock.advance(1_000)
    expect(leaks.map((l) => [l.orgId, l.destroyed])).toEqual([
      ['a', true],
      ['b', true],
    ])
    expect(leaks[1]?.stack).toMatch(THIS_FILE)
    const error = await conn.query('SELECT 1').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ConnectionLeakError)
    expect(error).toMatchObject({ code: 'HC_CONNECTION_LEAK', service: 'core', orgId: 'a', reason: 'threshold' })
    await expect(client.query('SELECT 1')).rejects.toBeInstanceOf(ConnectionLeakError)
    // Their slots are free again: nothing is checked out, and the tenant's share is back.
    expect(registry.stats().connections.checkedOut).toBe(0)
    expect(registry.stats().tenants.active).toEqual([])
    conn.release()
    client.release()
    await expect(registry.tenant('a').query('SELECT 1')).resolves.toMatchObject({ rowCount: 1 })
    expect(registry.stats().leaks).toBe(2)
  })

  it('a reported leak does not keep its pool from being evicted; its holder then gets ConnectionLeakError', async () => {
    const clock = new ManualClock()
    const { registry } = registryWith(clock, { thresholdMs: 1_000 }, { idleTtlMs: 60_000, sweepIntervalMs: 10_000 })
    await using _ = registry
    const conn = await registry.tenant('a').acquire()
    await conn.query('SELECT 1')
    const ended = new Promise<RegistryEvents['pool:end']>((resolve) => registry.on('pool:end', resolve))
    clock.advance(120_000)
    await expect(ended).resolves.toMatchObject({ forced: false })
    expect(registry.stats().pools.count).toBe(0)
    // Taken from its holder: its slot and the tenant's share are free although it never released.
    expect(registry.stats().connections.checkedOut).toBe(0)
    expect(registry.stats().tenants.active).toEqual([])
    await expect(conn.query('SELECT 1')).rejects.toBeInstanceOf(ConnectionLeakError)
    conn.release()
    expect(registry.stats().connections.checkedOut).toBe(0)
  })

  it('is off unless configured: a held connection is never reported', async () => {
    const clock = new ManualClock()
    const { registry, leaks } = registryWith(clock)
    await using _ = registry
    const conn = await registry.tenant('a').acquire()
    clock.advance(3_600_000)
    expect(leaks).toEqual([])
    await expect(conn.query('SELECT 1')).resolves.toMatchObject({ rowCount: 1 })
    conn.release()
  })
})

describe('registry.scope', () => {
  it('destroys and reports what was left held when fn settles; released work is not reported', async () => {
    const clock = new ManualClock()
    const { registry, leaks } = registryWith(clock)
    await using _ = registry
    let kept: Awaited<ReturnType<ReturnType<typeof registry.tenant>['acquire']>> | undefined
    const value = await registry.scope(async () => {
      await registry.tenant('b').query('SELECT 1')
      await registry.tenant('b').transaction(() => registry.tenant('b').query('SELECT 1'))
      await using done = await registry.tenant('b').acquire()
      await done.query('SELECT 1')
      kept = await registry.tenant('a').acquire()
      await kept.query('SELECT 1')
      clock.advance(250)
      return 'ok'
    })
    expect(value).toBe('ok')
    expect(leaks).toEqual([
      {
        service: 'core',
        orgId: 'a',
        heldMs: 250,
        reason: 'scope',
        destroyed: true,
        stack: expect.stringMatching(/not captured/),
      },
    ])
    expect(registry.stats()).toMatchObject({ leaks: 1, connections: { checkedOut: 0 } })
    await expect(kept?.query('SELECT 1')).rejects.toMatchObject({ code: 'HC_CONNECTION_LEAK', reason: 'scope' })
  })

  it('also when fn throws (the error passes through), and for a checkout that completes after fn settled', async () => {
    const clock = new ManualClock()
    const { registry, leaks } = registryWith(clock, { thresholdMs: 60_000 })
    await using _ = registry
    let late: Promise<unknown> | undefined
    const failure = new Error('handler failed')
    await expect(
      registry.scope(async () => {
        await registry.tenant('a').acquire()
        late = registry.tenant('b').acquire() // not awaited: completes after the scope settled
        throw failure
      }),
    ).rejects.toBe(failure)
    const lateConn = (await late) as { query: (sql: string) => Promise<unknown> }
    await expect(lateConn.query('SELECT 1')).rejects.toBeInstanceOf(ConnectionLeakError)
    expect(leaks.map((l) => [l.orgId, l.reason, l.destroyed])).toEqual([
      ['a', 'scope', true],
      ['b', 'scope', true],
    ])
    expect(leaks[0]?.stack).toMatch(THIS_FILE)
    expect(registry.stats().connections.checkedOut).toBe(0)
  })

  it('scopes nest, and each tracks only its own registry', async () => {
    const clock = new ManualClock()
    const { registry, leaks } = registryWith(clock)
    const other = registryWith(clock)
    await using _ = registry
    await using __ = other.registry
    let outerConn: { release(): void } | undefined
    await registry.scope(async () => {
      outerConn = await registry.tenant('a').acquire()
      await other.registry.scope(async () => {
        await registry.tenant('b').acquire() // the inner scope is another registry's: the outer one tracks it
        await other.registry.tenant('b').acquire()
      })
      expect(other.leaks.map((l) => l.orgId)).toEqual(['b'])
      expect(leaks).toEqual([])
      outerConn.release()
    })
    expect(leaks.map((l) => l.orgId)).toEqual(['b'])
  })

  it('rejects a non-function with InvalidOptionsError', async () => {
    const { registry } = registryWith(new ManualClock())
    await using _ = registry
    await expect(registry.scope('nope' as never)).rejects.toBeInstanceOf(InvalidOptionsError)
  })
})
