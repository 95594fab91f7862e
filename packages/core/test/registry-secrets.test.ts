import { startFakeSecretsManager } from '@hyperconn/testkit'
import { testDatabase } from '@hyperconn/testkit/vitest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  awsSecretsManager,
  createRegistry,
  InvalidTenantIdError,
  isHyperconnError,
  SecretFormatError,
  SecretNotFoundError,
  SecretSourceError,
  UnknownServiceError,
} from '../src/index.js'
import type { FakeSecretsManager } from '@hyperconn/testkit'
import { ManualClock } from './support/manual-clock.js'

const CREDENTIALS = { accessKeyId: 'AKIDREGISTRYTEST', secretAccessKey: 'not-a-real-key' }

let sm: FakeSecretsManager
let dbA: Awaited<ReturnType<typeof testDatabase>>
let dbB: Awaited<ReturnType<typeof testDatabase>>

beforeAll(async () => {
  sm = await startFakeSecretsManager()
  dbA = await testDatabase('regsec_a')
  dbB = await testDatabase('regsec_b')
})

afterAll(async () => {
  await sm?.close()
  await dbA?.[Symbol.asyncDispose]()
  await dbB?.[Symbol.asyncDispose]()
})

function source(maxAttempts = 1) {
  return awsSecretsManager({ region: sm.region, endpoint: sm.endpoint, credentials: CREDENTIALS, maxAttempts })
}

describe('secrets through the real AWS SDK', () => {
  it('2,000 concurrent getPool calls over 50 orgs x 2 services fetch each org secret exactly once', async () => {
    const orgs = Array.from({ length: 50 }, (_, i) => `sf${i}`)
    for (const org of orgs) sm.setSecret(`martech-${org}`, { 'core-postgresql': dbA.url, 'billing-postgresql': dbB.url })
    sm.resetCounters()
    await using registry = createRegistry({
      project: 'martech',
      services: ['core', 'billing'],
      secrets: source(3),
      connections: { max: 20 },
    })
    const created: string[] = []
    registry.on('pool:create', (e) => created.push(e.pool))
    const calls = Array.from({ length: 2000 }, (_, i) => {
      const org = orgs[i % 50] as string
      const service = Math.floor(i / 50) % 2 === 0 ? 'core' : 'billing'
      return registry.getPool(service, org).then((pool) => ({ org, service, pool }))
    })
    const results = await Promise.all(calls)
    expect(sm.getSecretValueCalls()).toBe(50)
    for (const org of orgs) expect(sm.getSecretValueCalls(`martech-${org}`)).toBe(1)
    // every (service, org) gets one tenant-bound pool object, shared by all its callers
    const pools = new Map<string, (typeof results)[number]>()
    for (const r of results) {
      const k = JSON.stringify([r.service, r.org])
      if (pools.has(k)) expect(pools.get(k)?.pool).toBe(r.pool)
      else pools.set(k, r)
    }
    expect(pools.size).toBe(100)
    expect(new Set([...pools.values()].map((r) => r.pool)).size).toBe(100)
    expect(registry.stats().tenants).toMatchObject({ cached: 100, resolving: 0 })
    // getPool opens nothing; queries do, and tenants with the same target share its physical pool
    expect(registry.stats().pools.count).toBe(0)
    const rows = await Promise.all(
      [...pools.values()].map(async ({ service, org, pool }) => {
        expect(pool.tenant).toEqual({ service, orgId: org })
        const { rows } = await pool.query('select current_database() as db')
        return { service, db: rows[0].db as string }
      }),
    )
    for (const { service, db } of rows) expect(db).toBe(service === 'core' ? dbA.name : dbB.name)
    const stats = registry.stats()
    expect(stats.pools.count).toBe(2)
    expect(stats.pools.created).toBe(2)
    expect(created).toHaveLength(2)
    expect(created.some((name) => name.includes(dbA.name))).toBe(true)
    expect(created.some((name) => name.includes(dbB.name))).toBe(true)
    expect(stats.servers).toHaveLength(1)
    expect(stats.servers[0]?.peak).toBeLessThanOrEqual(20)
    expect(sm.getSecretValueCalls()).toBe(50)
  })

  it('("billing_v2","org1") and ("billing","v2_org1") never share a pool or a secret', async () => {
    sm.setSecret('martech-org1', { 'billing_v2-postgresql': dbA.url })
    sm.setSecret('martech-v2_org1', { 'billing-postgresql': dbB.url })
    sm.resetCounters()
    await using registry = createRegistry({
      project: 'martech',
      services: ['billing', 'billing_v2'],
      secrets: source(),
      connections: { max: 20 },
    })
    const a = await registry.getPool('billing_v2', 'org1')
    const b = await registry.getPool('billing', 'v2_org1')
    expect(a).not.toBe(b)
    expect(sm.getSecretValueCalls('martech-org1')).toBe(1)
    expect(sm.getSecretValueCalls('martech-v2_org1')).toBe(1)
    const [ra, rb] = await Promise.all([a.query('select current_database() as db'), b.query('select current_database() as db')])
    expect(ra.rows[0].db).toBe(dbA.name)
    expect(rb.rows[0].db).toBe(dbB.name)
    // the other combinations do not exist in either secret
    await expect(registry.getPool('billing', 'org1')).rejects.toBeInstanceOf(SecretFormatError)
    await expect(registry.getPool('billing_v2', 'v2_org1')).rejects.toBeInstanceOf(SecretFormatError)
    expect(registry.stats().pools.count).toBe(2)
  })

  it('rejects every malformed tenant id or service with a typed error before any secret call', async () => {
    sm.resetCounters()
    await using registry = createRegistry({ project: 'martech', services: ['core'], secrets: source(), connections: { max: 20 } })
    const badOrgIds: unknown[] = [
      '', '..', '../admin', 'a/b', 'a b', ' org1', 'org1\n', 'org\u0000', 'x'.repeat(65), 'ünïcode', 'оrg1',
      '-org', '_org', 'a.b', "x'; DROP TABLE t; --", 'org1%2F..', 42, null, undefined, {},
    ]
    for (const orgId of badOrgIds) {
      await expect(registry.getPool('core', orgId as string)).rejects.toBeInstanceOf(InvalidTenantIdError)
      expect(() => registry.tenant(orgId as string, 'core')).toThrow(InvalidTenantIdError)
      await expect(registry.warm([orgId as string])).rejects.toBeInstanceOf(InvalidTenantIdError)
    }
    // @ts-expect-error not a service of this registry: checked at run time too
    await expect(registry.getPool('core/..', 'org1')).rejects.toBeInstanceOf(InvalidTenantIdError)
    // @ts-expect-error not a service of this registry: checked at run time too
    await expect(registry.getPool('billing', 'org1')).rejects.toBeInstanceOf(UnknownServiceError)
    const error = await registry.getPool('core', 'a\u0007b').catch((e: unknown) => e)
    expect(isHyperconnError(error)).toBe(true)
    expect((error as InvalidTenantIdError).code).toBe('HC_INVALID_TENANT_ID')
    expect((error as Error).message).not.toContain('\u0007')
    expect(sm.getSecretValueCalls()).toBe(0)
    const stats = registry.stats()
    expect(stats.pools).toMatchObject({ count: 0, created: 0, draining: 0 })
    expect(stats.tenants).toEqual({ cached: 0, max: 20_000, resolving: 0, active: [] })
    expect(stats.servers).toEqual([])
    expect(stats.secretCache.entries).toBe(0)
  })

  it('a malformed secret is rejected with SecretFormatError naming secret and key, and creates no pool', async () => {
    sm.setSecret('martech-notjson', 'postgresql://u:MARKERnotjson@h/db')
    sm.setSecret('martech-badurl', { 'core-postgresql': 'mysql://u:MARKERbadurl@h/db' })
    sm.setSecret('martech-nokey', { 'other-postgresql': 'postgresql://u:MARKERnokey@h/db' })
    await using registry = createRegistry({ project: 'martech', services: ['core'], secrets: source(), connections: { max: 20 } })
    for (const org of ['notjson', 'badurl', 'nokey']) {
      const error = (await registry.getPool('core', org).catch((e: unknown) => e)) as SecretFormatError
      expect(error).toBeInstanceOf(SecretFormatError)
      expect(error.secretName).toBe(`martech-${org}`)
      expect(error.message).toContain(`martech-${org}`)
      expect(error.message).not.toMatch(/MARKER/)
    }
    expect(registry.stats().pools.count).toBe(0)
  })

  it('serves cached tenants past the TTL while Secrets Manager is throttled or down; new tenants fail as transient', async () => {
    sm.setSecret('martech-warm1', { 'core-postgresql': dbA.url })
    sm.setSecret('martech-cold1', { 'core-postgresql': dbA.url })
    const clock = new ManualClock()
    await using registry = createRegistry({
      project: 'martech',
      services: ['core'],
      secrets: source(),
      connections: { max: 20 },
      clock,
      secretCache: { ttlMs: 1_000, staleIfErrorMs: 60_000, jitter: 0 },
    })
    const stale: string[] = []
    registry.on('secret:stale', (e) => stale.push(e.secretName))
    const warm = registry.tenant('warm1', 'core')
    expect((await warm.query('select 1 as one')).rows[0].one).toBe(1)
    clock.advance(5_000) // past the TTL

    for (const fault of ['throttle', 'error500', 'refuse'] as const) {
      await sm.setFault(fault)
      // an evicted tenant needs its secret again to bind: the stale copy is served
      await registry.evict('core', 'warm1')
      expect((await warm.query('select 2 as two')).rows[0].two).toBe(2)
      const error = (await registry.getPool('core', 'cold1').catch((e: unknown) => e)) as SecretSourceError
      expect(error).toBeInstanceOf(SecretSourceError)
      expect(error.transient).toBe(true)
    }
    await sm.setFault('none')
    clock.advance(1_001) // past errorBackoffMs: the source is asked again
    expect(stale.length).toBeGreaterThan(0)
    expect(stale.every((name) => name === 'martech-warm1')).toBe(true)
    expect(registry.stats().secretCache.staleServed).toBeGreaterThan(0)
    // once the source is back, the cold tenant works
    await expect(registry.getPool('core', 'cold1')).resolves.toBeDefined()
  })

  it('negative-caches not-found secrets for notFoundTtlMs', async () => {
    const clock = new ManualClock()
    sm.resetCounters()
    await using registry = createRegistry({
      project: 'martech',
      services: ['core'],
      secrets: source(),
      connections: { max: 20 },
      clock,
      secretCache: { notFoundTtlMs: 10_000 },
    })
    for (let i = 0; i < 5; i++) {
      await expect(registry.getPool('core', 'ghost')).rejects.toBeInstanceOf(SecretNotFoundError)
    }
    expect(sm.getSecretValueCalls('martech-ghost')).toBe(1)
    clock.advance(10_001)
    await expect(registry.getPool('core', 'ghost')).rejects.toBeInstanceOf(SecretNotFoundError)
    expect(sm.getSecretValueCalls('martech-ghost')).toBe(2)
    expect(registry.stats().pools.count).toBe(0)
  })
})
