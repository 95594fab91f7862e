import { connectClient } from '@hyperconn/testkit'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { priceListFor } from '../src/pricing-schemas.js'
import type { Price } from '../src/prices-repository.js'
import type { Review } from '../src/reviews-table.js'
import { reviewsFor } from '../src/reviews-policy.js'
import { sharedTenantIds } from '../src/shop-config.js'
import { startShopFixture } from './shop-fixture.js'
import type { ShopFixture } from './shop-fixture.js'

// Stores on the shared stores database: pricing with a schema per store, reviews in one table behind
// row-level security. More stores than the pool has connections, so connections move between stores.
const STORES = sharedTenantIds(24)
const POOL_MAX = 5 // createShopRegistry's pool.max

let shop: ShopFixture
let pricingUser: string
let reviewsUser: string
let storesAdminUrl: string

beforeAll(async () => {
  shop = await startShopFixture(['acme'], { sharedTenants: STORES })
  const shared = shop.env.local?.shared
  if (shared === undefined) throw new Error('expected the stores database')
  pricingUser = shared.pricingUser
  reviewsUser = shared.reviewsUser
  storesAdminUrl = shared.adminUrl
})

afterAll(async () => {
  await shop?.close()
})

const get = (url: string, orgId?: string) =>
  shop.app.http.inject({ method: 'GET', url, headers: orgId === undefined ? {} : { 'x-org-id': orgId } })

const addReview = (orgId: string, payload: object) =>
  shop.app.http.inject({ method: 'POST', url: '/reviews', headers: { 'x-org-id': orgId }, payload })

async function pricesOf(orgId: string): Promise<Price[]> {
  const response = await get('/prices', orgId)
  expect(response.statusCode, response.body).toBe(200)
  return response.json<{ prices: Price[] }>().prices
}

async function reviewsOf(orgId: string): Promise<Review[]> {
  const response = await get('/reviews', orgId)
  expect(response.statusCode, response.body).toBe(200)
  return response.json<{ reviews: Review[] }>().reviews
}

/** The physical pools whose connections log in as `user` (pool names are `host:port/database@user`). */
const poolsOf = (user: string) => shop.env.registry.stats().pools.list.filter((pool) => pool.name.endsWith(`@${user}`))

describe('the stores database is set up as each isolation mode expects', () => {
  it('pricing: one schema per store, owned by the role the pricing service logs in as', async () => {
    const schemas = await shop.storesSql<{ name: string; owner: string }>(
      `SELECT nspname AS name, pg_get_userbyid(nspowner) AS owner FROM pg_namespace WHERE nspname LIKE 'org\\_%' ORDER BY 1`,
    )
    expect(schemas).toEqual(STORES.map((orgId) => ({ name: `org_${orgId}`, owner: pricingUser })))
  })

  it('reviews: RLS enabled and forced; the app role is neither owner, superuser nor BYPASSRLS, and sees nothing without app.tenant_id', async () => {
    const [table] = await shop.storesSql(
      `SELECT relrowsecurity, relforcerowsecurity, pg_get_userbyid(relowner) AS owner FROM pg_class WHERE oid = 'public.reviews'::regclass`,
    )
    expect(table).toMatchObject({ relrowsecurity: true, relforcerowsecurity: true })
    expect(table.owner).not.toBe(reviewsUser)
    const [role] = await shop.storesSql('SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1', [reviewsUser])
    expect(role).toEqual({ rolsuper: false, rolbypassrls: false })
    // As that role (SET LOCAL ROLE in a superuser session), in a transaction that is rolled back.
    const admin = await connectClient(storesAdminUrl)
    const count = async (): Promise<number | undefined> => (await admin.query<{ n: number }>('SELECT count(*)::int AS n FROM reviews')).rows[0]?.n
    try {
      await admin.query('BEGIN')
      await admin.query(`SET LOCAL ROLE ${reviewsUser}`)
      expect(await count()).toBe(0)
      await admin.query("SELECT set_config('app.tenant_id', 'store001', true)")
      expect(await count()).toBe(reviewsFor('store001').length)
    } finally {
      await admin.query('ROLLBACK').catch(() => {})
      await admin.end()
    }
  })
})

describe('migrations/pricing, applied to every store at start-up (migrateTenants)', () => {
  it("each store's schema has the currency column and its own schema_migrations with one record per migration", async () => {
    const columns = await shop.storesSql<{ schema: string }>(
      `SELECT table_schema AS schema FROM information_schema.columns WHERE table_name = 'prices' AND column_name = 'currency' ORDER BY 1`,
    )
    expect(columns.map((c) => c.schema)).toEqual(STORES.map((orgId) => `org_${orgId}`))
    const records = await shop.storesSql<{ schema: string; name: string }>(
      `SELECT table_schema AS schema FROM information_schema.tables WHERE table_name = 'schema_migrations' ORDER BY 1`,
    )
    expect(records.map((r) => r.schema)).toEqual(STORES.map((orgId) => `org_${orgId}`))
    for (const orgId of STORES) {
      const names = await shop.storesSql<{ name: string }>(`SELECT name FROM "org_${orgId}".schema_migrations`)
      expect(names).toEqual([{ name: '001_price_currency' }])
    }
  })

  it('a rerun applies nothing', async () => {
    const { migrateStores } = await import('../src/pricing-migrations.js')
    const report = await migrateStores(shop.env.registry, STORES)
    expect(report).toMatchObject({ total: STORES.length, failed: [], locked: [], notStarted: [] })
    expect(report.succeeded).toHaveLength(STORES.length)
    const [row] = await shop.storesSql<{ n: number }>(`SELECT count(*)::int AS n FROM "org_${STORES[0]}".schema_migrations`)
    expect(row?.n).toBe(1)
  })
})

describe('GET /prices (a schema per store)', () => {
  it('every store sees exactly its own price list, all on one physical pool of at most pool.max connections', async () => {
    const seen = await Promise.all(STORES.map(async (orgId) => [orgId, await pricesOf(orgId)] as const))
    for (const [orgId, prices] of seen) {
      expect(prices).toEqual(
        [...priceListFor(orgId)].sort((a, b) => a.sku.localeCompare(b.sku)).map((p) => ({ ...p, currency: 'EUR', orgId })),
      )
    }
    const pools = poolsOf(pricingUser)
    expect(pools).toHaveLength(1)
    expect(pools[0]?.total).toBeLessThanOrEqual(POOL_MAX)
  })
})

describe('GET /reviews (one table, row-level security)', () => {
  it('every store sees only its own rows, though the table holds every store\'s; one physical pool', async () => {
    const [all] = await shop.storesSql<{ n: number; tenants: number }>(
      'SELECT count(*)::int AS n, count(DISTINCT tenant_id)::int AS tenants FROM reviews',
    )
    expect(all?.tenants).toBe(STORES.length)
    const seen = await Promise.all(STORES.map(async (orgId) => [orgId, await reviewsOf(orgId)] as const))
    for (const [orgId, reviews] of seen) {
      expect(reviews.length).toBeGreaterThanOrEqual(reviewsFor(orgId).length)
      expect(reviews.filter((r) => r.tenantId !== orgId)).toEqual([])
    }
    const pools = poolsOf(reviewsUser)
    expect(pools).toHaveLength(1)
    expect(pools[0]?.total).toBeLessThanOrEqual(POOL_MAX)
  })

  it('both services for every store at once, three rounds: connections move between stores, no row crosses over', async () => {
    let foreign = 0
    let reads = 0
    await Promise.all(
      [1, 2, 3].flatMap(() =>
        STORES.flatMap((orgId) => [
          pricesOf(orgId).then((rows) => {
            reads += rows.length
            foreign += rows.filter((r) => r.orgId !== orgId).length
          }),
          reviewsOf(orgId).then((rows) => {
            reads += rows.length
            foreign += rows.filter((r) => r.tenantId !== orgId).length
          }),
        ]),
      ),
    )
    expect(foreign).toBe(0)
    expect(reads).toBeGreaterThanOrEqual(3 * STORES.length * 4)
    expect(poolsOf(pricingUser)).toHaveLength(1)
    expect(poolsOf(reviewsUser)).toHaveLength(1)
  })
})

describe('POST /reviews', () => {
  it('the database fills tenant_id in from the session; only that store sees the review', async () => {
    const response = await addReview('store003', { sku: 'mug', stars: 2, body: 'Handle came off' })
    expect(response.statusCode, response.body).toBe(201)
    const { review } = response.json<{ review: Review }>()
    expect(review).toMatchObject({ tenantId: 'store003', sku: 'mug', stars: 2, body: 'Handle came off' })
    const [stored] = await shop.storesSql('SELECT tenant_id FROM reviews WHERE id = $1', [review.id])
    expect(stored).toEqual({ tenant_id: 'store003' })
    expect((await reviewsOf('store003')).map((r) => r.id)).toContain(review.id)
    expect((await reviewsOf('store004')).map((r) => r.id)).not.toContain(review.id)
  })

  it('a body cannot name another tenant: the property is dropped and the review is the sender\'s', async () => {
    for (const payload of [
      { sku: 'mug', stars: 5, body: 'Sent by store004', tenantId: 'store005' },
      { sku: 'mug', stars: 5, body: 'Sent by store004', tenant_id: 'store005' },
    ]) {
      const response = await addReview('store004', payload)
      expect(response.statusCode, response.body).toBe(201)
      expect(response.json<{ review: Review }>().review.tenantId).toBe('store004')
    }
    const rows = await shop.storesSql("SELECT tenant_id FROM reviews WHERE body = 'Sent by store004'")
    expect(rows).toEqual([{ tenant_id: 'store004' }, { tenant_id: 'store004' }])
    expect((await reviewsOf('store005')).filter((r) => r.body === 'Sent by store004')).toEqual([])
  })

  it('an invalid review → 400, nothing written', async () => {
    const [before] = await shop.storesSql<{ n: number }>('SELECT count(*)::int AS n FROM reviews')
    for (const payload of [{ sku: 'mug', stars: 6, body: 'x' }, { sku: 'mug', stars: 5 }, { sku: 'Not a SKU', stars: 5, body: 'x' }]) {
      const response = await addReview('store004', payload)
      expect(response.statusCode).toBe(400)
      expect(response.json().error).toBe('invalid_request')
    }
    const [after] = await shop.storesSql<{ n: number }>('SELECT count(*)::int AS n FROM reviews')
    expect(after?.n).toBe(before?.n)
  })
})

describe('unknown and missing tenants', () => {
  it('an unknown org gets 404 on every store endpoint, with one secret look-up and no pool or tenant slot', async () => {
    const stats = () => shop.env.registry.stats()
    const before = { pools: stats().pools.created, tenants: stats().tenants.cached, calls: shop.secretsManager.getSecretValueCalls() }
    const responses = [
      await get('/prices', 'store999'),
      await get('/reviews', 'store999'),
      await addReview('store999', { sku: 'mug', stars: 4, body: 'Who am I?' }),
    ]
    for (const response of responses) {
      expect(response.statusCode).toBe(404)
      expect(response.json()).toEqual({ error: 'unknown_tenant', message: expect.stringContaining('x-org-id') })
    }
    expect(stats().pools.created).toBe(before.pools)
    expect(stats().tenants.cached).toBe(before.tenants)
    expect(shop.secretsManager.getSecretValueCalls() - before.calls).toBe(1)
    const [written] = await shop.storesSql<{ n: number }>("SELECT count(*)::int AS n FROM reviews WHERE tenant_id = 'store999'")
    expect(written?.n).toBe(0)
  })

  it('no x-org-id → 400 before any database work', async () => {
    for (const url of ['/prices', '/reviews']) {
      const response = await get(url)
      expect(response.statusCode).toBe(400)
      expect(response.json().error).toBe('missing_tenant')
    }
  })
})
