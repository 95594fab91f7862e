import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PROJECT, startShopFixture } from './shop-fixture.js'
import type { ShopFixture } from './shop-fixture.js'

let shop: ShopFixture

beforeAll(async () => {
  shop = await startShopFixture(['acme'])
})

afterAll(async () => {
  await shop?.close()
})

const request = (method: 'GET' | 'POST', url: string, headers: Record<string, string>) =>
  shop.app.http.inject({
    method,
    url,
    headers,
    ...(method === 'POST' ? { payload: { customer: 'Road Runner', items: [{ sku: 'anvil', quantity: 1 }] } } : {}),
  })

/** What must not happen for a rejected tenant: a new pool or a secret look-up. */
function sideEffects() {
  const before = { pools: shop.env.registry.stats().pools, calls: shop.secretsManager.getSecretValueCalls() }
  return () => ({
    poolsCreated: shop.env.registry.stats().pools.created - before.pools.created,
    poolCount: shop.env.registry.stats().pools.count - before.pools.count,
    secretCalls: shop.secretsManager.getSecretValueCalls() - before.calls,
  })
}

describe('bad x-org-id header', () => {
  it('missing → 400 with a clear message; no pool, no secret call', async () => {
    const effects = sideEffects()
    for (const [method, url] of [['GET', '/orders'], ['GET', '/stock'], ['GET', '/audit'], ['POST', '/orders']] as const) {
      const response = await request(method, url, {})
      expect(response.statusCode).toBe(400)
      expect(response.json()).toEqual({ error: 'missing_tenant', message: expect.stringContaining('x-org-id') })
    }
    expect(effects()).toEqual({ poolsCreated: 0, poolCount: 0, secretCalls: 0 })
  })

  it.each([
    ['path traversal', '../../etc/passwd'],
    ['whitespace', 'acme corp'],
    ['leading dash', '-acme'],
    ['too long', 'a'.repeat(65)],
    ['repeated header', 'acme, globex'],
  ])('malformed (%s) → 400 from InvalidTenantIdError; no pool, no secret call', async (_, orgId) => {
    const effects = sideEffects()
    for (const method of ['GET', 'POST'] as const) {
      const response = await request(method, '/orders', { 'x-org-id': orgId })
      expect(response.statusCode).toBe(400)
      const body = response.json()
      expect(body.error).toBe('invalid_tenant')
      expect(body.message).toMatch(/^Invalid orgId: /)
      expect(body.message).not.toContain(orgId) // hostile input is not echoed
    }
    expect(effects()).toEqual({ poolsCreated: 0, poolCount: 0, secretCalls: 0 })
  })
})

describe('unknown tenant', () => {
  it('→ 404 for every endpoint, with one GetSecretValue call for all of them (negative cache) and no pool', async () => {
    const effects = sideEffects()
    const first = await request('GET', '/orders', { 'x-org-id': 'umbrella' })
    const second = await request('GET', '/orders', { 'x-org-id': 'umbrella' })
    expect(first.statusCode).toBe(404)
    expect(second.statusCode).toBe(404)
    expect(second.json()).toEqual({ error: 'unknown_tenant', message: expect.stringContaining('x-org-id') })
    expect(shop.secretsManager.getSecretValueCalls(`${PROJECT}-umbrella`)).toBe(1)

    // Every ORM and the transaction path map it the same way, still from the negative cache.
    for (const [method, url] of [['GET', '/stock'], ['GET', '/audit'], ['POST', '/orders']] as const) {
      expect((await request(method, url, { 'x-org-id': 'umbrella' })).statusCode).toBe(404)
    }
    expect(shop.secretsManager.getSecretValueCalls(`${PROJECT}-umbrella`)).toBe(1)
    expect(effects()).toEqual({ poolsCreated: 0, poolCount: 0, secretCalls: 1 })
  })

  it('a known tenant next to it still works', async () => {
    const response = await request('GET', '/stock', { 'x-org-id': 'acme' })
    expect(response.statusCode).toBe(200)
    expect(response.json().stock).toContainEqual({ sku: 'anvil', name: 'Anvil (1 t)', quantity: 10 })
  })
})

describe('secret source failures', () => {
  it('a permanent SecretSourceError (access denied) → 500, not 503: retrying cannot help', async () => {
    await shop.secretsManager.setFault('accessDenied')
    try {
      const response = await request('GET', '/orders', { 'x-org-id': 'denied-org' })
      expect(response.statusCode).toBe(500)
      expect(response.headers['retry-after']).toBeUndefined()
      expect(response.json()).toEqual({ error: 'internal_error', message: 'Internal error.' })
    } finally {
      await shop.secretsManager.setFault('none')
    }
  })

  it('a transient SecretSourceError (throttling) → 503 with Retry-After: 1', async () => {
    await shop.secretsManager.setFault('throttle') // every attempt of the SDK's retries
    try {
      const response = await request('GET', '/orders', { 'x-org-id': 'throttled-org' })
      expect(response.statusCode).toBe(503)
      expect(response.headers['retry-after']).toBe('1')
      expect(response.json()).toMatchObject({ error: 'tenant_unavailable' })
    } finally {
      await shop.secretsManager.setFault('none')
    }
  })
})

describe('service endpoints', () => {
  it('/health answers without a tenant', async () => {
    const response = await request('GET', '/health', {})
    expect(response.statusCode).toBe(200)
    expect(response.json()).toEqual({ status: 'ok' })
  })

  it('/stats exposes registry.stats() and no secret', async () => {
    const response = await request('GET', '/stats', {})
    expect(response.statusCode).toBe(200)
    const stats = response.json()
    const live = shop.env.registry.stats()
    expect(stats.pools).toEqual(live.pools)
    expect(stats.secretCache).toEqual(live.secretCache)
    expect(stats.tenants).toMatchObject({ cached: live.tenants.cached })
    expect(stats.tenants.cached).toBeGreaterThanOrEqual(1)
    expect(stats.servers).toEqual(live.servers)
    expect(response.body).not.toMatch(/postgres(ql)?:\/\//)
  })
})
