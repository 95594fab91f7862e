import { randomBytes } from 'node:crypto'
import type { HealthReport } from '@hyperconn/core'
import { createTestDatabase } from '@hyperconn/testkit'
import type { TestDatabase } from '@hyperconn/testkit'
import { adminUrl } from '@hyperconn/testkit/vitest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { sharedTenantIds } from '../src/shop-config.js'
import { SHOP_SECRET_KEY, shopSecretName } from '../src/shop-registry.js'
import { prepareTenantDatabases } from '../src/tenant-databases.js'
import { PROJECT, startShopFixture } from './shop-fixture.js'
import type { ShopFixture } from './shop-fixture.js'

// GET /metrics (OpenTelemetry → Prometheus exporter, served by the app's Fastify), /healthz and /readyz on
// the app as main.ts builds it. One extra tenant's login role has a marker password: whatever the registry
// reports, the password and the connection string must not appear in it.
const MARKER_TENANT = 'marker'
const MARKER_PASSWORD = `Pw${randomBytes(12).toString('hex')}`
const STORES = sharedTenantIds(3)

let shop: ShopFixture
let markerDb: TestDatabase

beforeAll(async () => {
  shop = await startShopFixture(['acme', 'globex'], { sharedTenants: STORES })
  const user = `shop_marker_${randomBytes(4).toString('hex')}`
  markerDb = await createTestDatabase(adminUrl(), { prefix: 'shop_marker', owner: { user, password: MARKER_PASSWORD } })
  shop.secretsManager.setSecret(shopSecretName(PROJECT, MARKER_TENANT), { [SHOP_SECRET_KEY]: markerDb.urlFor(user, MARKER_PASSWORD) })
  await prepareTenantDatabases(shop.env.registry, [MARKER_TENANT], { seed: true })
})

afterAll(async () => {
  await shop?.close() // the registry lets go of the marker database first
  await markerDb?.[Symbol.asyncDispose]()
})

const get = (url: string, orgId?: string) =>
  shop.app.http.inject({ method: 'GET', url, headers: orgId === undefined ? {} : { 'x-org-id': orgId } })

/** The secrets the endpoints must never show: the marker password, any connection string, the superuser's password. */
function expectNoSecret(text: string): void {
  expect(text).not.toContain(MARKER_PASSWORD)
  expect(text).not.toMatch(/postgres(ql)?:\/\//)
  const superuserPassword = decodeURIComponent(new URL(adminUrl()).password)
  if (superuserPassword !== '') expect(text).not.toContain(superuserPassword)
}

/** `name{labels} value` lines of one metric, labels parsed. */
function series(text: string, name: string): Array<{ labels: Record<string, string>; value: number }> {
  return text
    .split('\n')
    .filter((line) => line.startsWith(`${name}{`))
    .map((line) => {
      const match = /^[^{]+\{(.*)\} (\S+)$/.exec(line)
      if (match === null) throw new Error(`not a Prometheus sample: ${line}`)
      const labels = Object.fromEntries([...(match[1] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]))
      return { labels, value: Number(match[2]) }
    })
}

describe('observability endpoints', () => {
  it('GET /metrics: per-pool connection counts in Prometheus format, no secret', async () => {
    for (const orgId of ['acme', 'globex', MARKER_TENANT]) expect((await get('/stock', orgId)).statusCode).toBe(200)
    expect((await get('/orders', MARKER_TENANT)).statusCode).toBe(200)
    expect((await get('/prices', STORES[0])).statusCode).toBe(200)
    expect((await get('/reviews', STORES[1])).statusCode).toBe(200)
    expect((await get('/stock', 'nobody-here')).statusCode).toBe(404)

    const response = await get('/metrics')
    expect(response.statusCode).toBe(200)
    expect(response.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/)
    const text = response.body
    expectNoSecret(text)

    // Every physical pool: idle and used, labelled with its `host:port/database@user`, equal to stats() now.
    const counts = series(text, 'db_client_connection_count')
    const pools = shop.env.registry.stats().pools.list
    expect(pools.length).toBe(5) // acme, globex, marker; the stores' pricing pool and reviews pool
    for (const pool of pools) {
      const of = (state: string) =>
        counts.find((s) => s.labels.db_client_connection_pool_name === pool.name && s.labels.db_client_connection_state === state)?.value
      expect(of('idle'), pool.name).toBe(pool.idle)
      expect((of('idle') ?? 0) + (of('used') ?? 0), pool.name).toBe(pool.total)
      expect(pool.name).toMatch(/^[^/]+:\d+\/\w+@\w+$/)
    }
    expect(counts.some((s) => s.labels.db_client_connection_pool_name?.includes('shop_marker'))).toBe(true)

    const max = series(text, 'db_client_connection_max')
    expect(max.map((s) => s.value)).toEqual(pools.map(() => 5)) // createShopRegistry's pool.max
    expect(series(text, 'db_client_connection_pending_requests').every((s) => s.value === 0)).toBe(true)
    const waits = series(text, 'db_client_connection_wait_time_count')
    expect(waits.find((s) => s.labels.hyperconn_service === 'pricing')?.value).toBeGreaterThan(0)
    expect(series(text, 'db_client_connection_use_time_bucket').some((s) => s.labels.le === '+Inf')).toBe(true)
    const fetches = series(text, 'hyperconn_secret_fetches_total')
    expect(fetches.find((s) => s.labels.hyperconn_outcome === 'ok')?.value).toBeGreaterThan(0)
    expect(fetches.find((s) => s.labels.hyperconn_outcome === 'not_found')?.value).toBe(1)
  })

  it('GET /healthz: 200 while the process runs', async () => {
    const response = await get('/healthz')
    expect(response.statusCode).toBe(200)
    expect(response.json()).toEqual({ ok: true })
  })

  it('GET /readyz: 200 with registry.health(), every server reachable, no secret', async () => {
    const response = await get('/readyz')
    expect(response.statusCode).toBe(200)
    const report = response.json<HealthReport>()
    expect(report).toMatchObject({ ok: true, closed: false })
    expect(report.servers.length).toBeGreaterThan(0)
    for (const server of report.servers) {
      expect(server).toMatchObject({ reachable: true, waiting: 0, lastError: null })
      expect(server.budget.open).toBeGreaterThan(0)
    }
    expectNoSecret(response.body)
  })

  // Last: closes the registry (the fixture's close() closes it again, which is a no-op).
  it('GET /readyz: 503 once the registry is closed; /healthz and /metrics still answer', async () => {
    await shop.env.registry.close()
    const ready = await get('/readyz')
    expect(ready.statusCode).toBe(503)
    expect(ready.json<HealthReport>()).toMatchObject({ ok: false, closed: true })
    expect((await get('/healthz')).statusCode).toBe(200)
    // The gauges' callback is gone with the registry. The SDK (2.12, cumulative) keeps exporting the last
    // observed values of the series nobody observes any more (open-telemetry/opentelemetry-js#4096): not asserted.
    const metrics = await get('/metrics')
    expect(metrics.statusCode).toBe(200)
    expectNoSecret(metrics.body)
  })
})
