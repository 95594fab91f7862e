import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Price } from '../src/prices-repository.js'
import { migrateWithCli } from '../src/migrate-with-cli.js'
import { sharedTenantIds } from '../src/shop-config.js'
import { PROJECT, startShopFixture } from './shop-fixture.js'
import type { ShopFixture } from './shop-fixture.js'

// What `pnpm demo` does before its traffic: the stores are provisioned but not migrated, and the
// hyperconn CLI (a child process, with hyperconn.config.ts) migrates their pricing schemas.
const STORES = sharedTenantIds(6)

let shop: ShopFixture
beforeAll(async () => {
  shop = await startShopFixture(['acme'], { sharedTenants: STORES, migrateStores: false })
})
afterAll(async () => {
  await shop?.close()
})

const currencyColumns = async (): Promise<number> =>
  (await shop.storesSql<{ n: number }>(`SELECT count(*)::int AS n FROM information_schema.columns WHERE table_name = 'prices' AND column_name = 'currency'`))[0]?.n ?? -1

describe('hyperconn migrate --config hyperconn.config.ts', () => {
  it("migrates every store's pricing schema: a line per store, the summary, the report, exit 0; a rerun changes nothing", async () => {
    expect(await currencyColumns()).toBe(0)
    const run = () => migrateWithCli({ project: PROJECT, secretsEndpoint: shop.secretsManager.endpoint, stores: STORES })

    const first = await run()
    expect(first.stderr).toBe('')
    expect(first.code).toBe(0)
    expect(first.lines[0]).toBe('migrating 6 tenants of service "pricing", 4 at a time')
    expect(first.lines.filter((line) => /^ok store00[1-6] \d+ms$/.test(line))).toHaveLength(6)
    expect(first.lines).toContainEqual(expect.stringMatching(/^done: 6 tenants of service "pricing" in .*: 6 succeeded, 0 failed$/))
    expect(first.report).toMatchObject({ service: 'pricing', total: 6, failed: [], skipped: [], aborted: false })
    expect([...(first.report?.succeeded ?? [])].sort()).toEqual(STORES)
    expect(await currencyColumns()).toBe(STORES.length)

    // The app (another process's registry, already warmed) reads the new column.
    const response = await shop.app.http.inject({ method: 'GET', url: '/prices', headers: { 'x-org-id': 'store003' } })
    expect(response.json<{ prices: Price[] }>().prices.map((p) => p.currency)).toEqual(['EUR', 'EUR'])

    const again = await run()
    expect(again.code).toBe(0)
    expect(again.report?.succeeded).toHaveLength(6)
    for (const orgId of STORES) {
      expect(await shop.storesSql(`SELECT name FROM "org_${orgId}".schema_migrations`)).toEqual([{ name: '001_price_currency' }])
    }
  }, 60_000)
})
