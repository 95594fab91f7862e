/**
 * `pnpm demo`: starts PostgreSQL, a local Secrets Manager endpoint, three tenant databases and the shop,
 * then drives a scripted scenario over HTTP and checks every expectation explicitly. Exit code 0 only if
 * all of them held; everything it started is stopped again, also on failure and on Ctrl-C.
 */
import { randomBytes } from 'node:crypto'
import { isDeepStrictEqual } from 'node:util'
import { CleanupStack } from './cleanup-stack.js'
import { onShutdownSignal } from './shutdown-signals.js'
import { createShopClient } from './shop-client.js'
import type { ShopClient } from './shop-client.js'
import type { ShopEnvironment } from './shop-environment.js'

// The SDK warns on every Node < 22 start that *future* releases will need Node 22: noise in a narrated demo.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'

const startedAt = performance.now()
const cleanup = new CleanupStack()
let failedChecks = 0
let interrupted = false
const interruption = new AbortController()
/** Start-up in progress: a signal waits for it, so that what it started is known and can be stopped. */
let startup: Promise<unknown> = Promise.resolve()

const say = (line: string): void => console.log(`  ${line}`)
const section = (title: string): void => console.log(`\n▸ ${title}`)

function check(ok: boolean, label: string): boolean {
  console.log(`  ${ok ? '✓' : '✗'} ${label}`)
  if (!ok) failedChecks++
  return ok
}

interface Snapshot {
  orders: number
  audit: number
  stock: Record<string, number>
  customers: string[]
  orderIds: number[]
}

/** What one tenant sees through the API: the three tables, read by the three ORMs. */
async function snapshot(client: ShopClient, orgId: string): Promise<Snapshot> {
  const [orders, audit, stock] = await Promise.all([client.orders(orgId), client.audit(orgId), client.stock(orgId)])
  if (orders.status !== 200 || audit.status !== 200 || stock.status !== 200) {
    throw new Error(`reading ${orgId} failed: HTTP ${orders.status}/${audit.status}/${stock.status}`)
  }
  return {
    orders: orders.body.orders.length,
    audit: audit.body.entries.length,
    stock: Object.fromEntries(stock.body.stock.map((item) => [item.sku, item.quantity])),
    customers: orders.body.orders.map((order) => order.customer),
    orderIds: orders.body.orders.map((order) => order.id),
  }
}

const describe = (s: Snapshot): string =>
  `orders ${s.orders}, audit ${s.audit}, stock ${Object.entries(s.stock).map(([sku, n]) => `${sku}=${n}`).join(' ')}`

function skuWithStock(s: Snapshot, atLeast: number): string {
  const sku = Object.keys(s.stock).sort().find((k) => (s.stock[k] ?? 0) >= atLeast)
  if (sku === undefined) throw new Error(`no product with at least ${atLeast} in stock: ${describe(s)}`)
  return sku
}

/**
 * The app's modules (ORMs, AWS SDK, Fastify) take seconds to load on a busy machine; they are imported
 * only after the signal handlers below are installed, so that an early Ctrl-C still ends cleanly.
 */
async function loadApp() {
  const [config, environment, app, registry, pricing, reviews, cli] = await Promise.all([
    import('./shop-config.js'),
    import('./shop-environment.js'),
    import('./shop-app.js'),
    import('./shop-registry.js'),
    import('./pricing-schemas.js'),
    import('./reviews-policy.js'),
    import('./migrate-with-cli.js'),
  ])
  return { ...config, ...environment, ...app, ...registry, ...pricing, ...reviews, ...cli }
}

/** Requests in flight at once when the demo sweeps over every store. */
const SWEEP_CONCURRENCY = 16

interface Sweep {
  /** Stores answered 200 with exactly the rows they should see. */
  complete: number
  rows: number
  /** Rows that name another store than the one that asked: must stay 0. */
  foreign: number
  problems: string[]
}

/** Calls `read` for every store, `concurrency` at a time, and counts what came back. */
async function sweep(
  orgIds: readonly string[],
  concurrency: number,
  read: (orgId: string) => Promise<{ status: number; owners: readonly string[] | undefined; expected: number }>,
): Promise<Sweep> {
  const result: Sweep = { complete: 0, rows: 0, foreign: 0, problems: [] }
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(concurrency, orgIds.length) }, async () => {
      for (let i = next++; i < orgIds.length; i = next++) {
        const orgId = orgIds[i] as string
        const { status, owners, expected } = await read(orgId)
        if (status !== 200 || owners === undefined) {
          result.problems.push(`${orgId}: HTTP ${status}`)
          continue
        }
        const foreign = owners.filter((owner) => owner !== orgId).length
        result.rows += owners.length
        result.foreign += foreign
        if (foreign === 0 && owners.length === expected) result.complete++
        else result.problems.push(`${orgId}: ${owners.length} rows (expected ${expected}), ${foreign} of another store`)
      }
    }),
  )
  return result
}

/**
 * Hundreds of stores on one shared database: each service on one physical pool whatever the number of
 * tenants, the tenant applied per checkout (search_path, app.tenant_id), and no row crossing over.
 * Returns the number of physical pools it added.
 */
async function sharedPools(
  client: ShopClient,
  stores: readonly string[],
  expected: { shopTenants: number; prices: (orgId: string) => number; reviews: (orgId: string) => number },
): Promise<number> {
  const [first, second] = stores
  if (first === undefined || second === undefined) throw new Error('the shared-pools section needs at least two stores')
  const n = stores.length
  section(`Shared pools: ${n} stores, each in pricing (a schema per store) and in reviews (one table, row-level security)`)
  const before = (await client.stats()).body
  const started = performance.now()

  const prices = await sweep(stores, SWEEP_CONCURRENCY, async (orgId) => {
    const { status, body } = await client.prices(orgId)
    return { status, owners: body.prices?.map((p) => p.orgId), expected: expected.prices(orgId) }
  })
  check(
    prices.complete === n && prices.foreign === 0,
    `GET /prices for ${n} stores, ${SWEEP_CONCURRENCY} at a time (Kysely; search_path "org_<orgId>"): ${prices.complete} complete, ${prices.rows} rows, ${prices.foreign} of another store`,
  )
  const reviews = await sweep(stores, SWEEP_CONCURRENCY, async (orgId) => {
    const { status, body } = await client.reviews(orgId)
    return { status, owners: body.reviews?.map((r) => r.tenantId), expected: expected.reviews(orgId) }
  })
  check(
    reviews.complete === n && reviews.foreign === 0,
    `GET /reviews for ${n} stores, ${SWEEP_CONCURRENCY} at a time (Drizzle; app.tenant_id, no WHERE): ${reviews.complete} complete, ${reviews.rows} rows, ${reviews.foreign} of another store`,
  )
  for (const problem of [...prices.problems, ...reviews.problems].slice(0, 5)) say(`  ${problem}`)
  const firstPrices = (await client.prices(first)).body.prices ?? []
  check(
    firstPrices.length > 0 && firstPrices.every((price) => price.currency === 'EUR'),
    `${first}: its prices carry the currency column the CLI's migration added (${firstPrices.map((p) => `${p.sku} ${p.priceCents} ${p.currency}`).join(', ')})`,
  )
  const elapsed = performance.now() - started

  const posted = await client.addReview(first, { sku: 'mug', stars: 3, body: 'Chipped on arrival' })
  const review = posted.body.review
  check(
    posted.status === 201 && review?.tenantId === first,
    `${first}: POST /reviews → ${posted.status}, tenant_id "${review?.tenantId}" filled in by the column default from app.tenant_id`,
  )
  const [seenByFirst, seenBySecond] = await Promise.all([client.reviews(first), client.reviews(second)])
  const foreignToSecond = seenBySecond.body.reviews?.filter((r) => r.tenantId !== second).length
  check(
    seenByFirst.body.reviews?.some((r) => r.id === review?.id) === true && foreignToSecond === 0,
    `${first} sees its new review #${review?.id}; ${second} sees ${foreignToSecond} rows of another store`,
  )
  const unknown = `store-x${randomBytes(2).toString('hex')}`
  const [unknownPrices, unknownReviews] = await Promise.all([client.prices(unknown), client.reviews(unknown)])
  check(
    unknownPrices.status === 404 && unknownReviews.status === 404,
    `unknown ${unknown}: GET /prices → ${unknownPrices.status}, GET /reviews → ${unknownReviews.status}`,
  )

  const after = (await client.stats()).body
  const added = after.pools.list.filter((pool) => !before.pools.list.some((old) => old.name === pool.name))
  const created = after.pools.created - before.pools.created
  const connections = added.reduce((sum, pool) => sum + pool.total, 0)
  check(
    created === 2 && added.length === 2,
    `${2 * n} tenants (${n} stores × 2 services) on ${created} physical pools, one per service (one database, two login roles), ${connections} connections:`,
  )
  for (const pool of added) say(`  ${pool.name}: ${pool.total} connections`)
  for (const server of after.servers) {
    say(`budget of ${server.server}: max ${server.max ?? 'auto'}, ${server.open} open, peak ${server.peak}, ${server.waiting} waiting`)
  }
  check(
    after.tenants.cached === expected.shopTenants + 2 * n,
    `tenants cached: ${after.tenants.cached} (${expected.shopTenants} shops + ${n} stores × 2 services; the stores were warmed at start-up)`,
  )
  say(`${2 * n} requests in ${Math.round(elapsed)} ms`)
  return created
}

async function scenario(): Promise<void> {
  console.log('hyperconn demo: a multi-tenant shop; Drizzle, Kysely and Knex in one transaction per order')
  const { readShopConfig, startShopEnvironment, createShopApp, shopSecretName, priceListFor, reviewsFor, migrateWithCli } = await loadApp()
  const config = readShopConfig()
  const [tenantA, tenantB, tenantC] = config.tenants
  if (tenantA === undefined || tenantB === undefined) throw new Error('the demo needs at least two tenants')

  section(config.mode === 'local' ? 'Setting up (local: embedded PostgreSQL + local Secrets Manager)' : 'Setting up (AWS Secrets Manager)')
  let env: ShopEnvironment | undefined
  let baseUrl = ''
  startup = (async () => {
    // finish() stops PostgreSQL after the HTTP server and the registry: testkit must not kill it on the signal.
    // The stores' pricing schemas are migrated below by the hyperconn CLI, not in this process.
    env = await startShopEnvironment(config, { onStep: say, signal: interruption.signal, handleSignals: false, migrateStores: false })
    cleanup.defer('environment', () => env?.close())
    const app = createShopApp({ registry: env.registry, telemetry: env.telemetry })
    cleanup.defer('HTTP server', () => app.close())
    baseUrl = await app.http.listen({ host: '127.0.0.1', port: 0 })
  })()
  await startup
  if (env === undefined || interrupted) return
  const { registry, local } = env
  say(`shop listening on ${baseUrl}: orders via Drizzle, stock via Kysely, audit log via Knex`)

  // Source-agnostic count of secret look-ups (works against real AWS too); the fake endpoint double-checks.
  const secretFetches = new Map<string, number>()
  registry.on('secret:fetch', ({ secretName }) => secretFetches.set(secretName, (secretFetches.get(secretName) ?? 0) + 1))
  const totalFetches = (): number => [...secretFetches.values()].reduce((a, b) => a + b, 0)

  const stores = config.mode === 'local' ? (config.sharedTenants ?? []) : []
  if (stores.length > 0 && local !== undefined) {
    section(`Migrations: the hyperconn CLI migrates the ${stores.length} stores' pricing schemas before any traffic`)
    const migration = await migrateWithCli({
      project: config.project,
      secretsEndpoint: local.secretsManager.endpoint,
      stores,
      signal: interruption.signal,
    })
    if (interrupted) return
    say(`$ ${migration.command}`)
    // One line per store (stdout is a pipe, not a terminal): show a few, then the summary.
    const shown = 3
    const okLines = migration.lines.filter((line) => line.startsWith('ok '))
    for (const line of migration.lines) {
      if (line.startsWith('report written to ')) continue // a temporary file, read below
      if (!line.startsWith('ok ') || okLines.indexOf(line) < shown) say(`│ ${line}`)
      if (line.startsWith('ok ') && okLines.indexOf(line) === shown && okLines.length > shown) say(`│ … ${okLines.length - shown} more "ok" lines`)
    }
    for (const line of migration.stderr.split('\n').filter(Boolean)) say(`│ (stderr) ${line}`)
    const report = migration.report
    check(
      migration.code === 0 && report?.succeeded.length === stores.length && report.failed.length === 0,
      `exit ${migration.code}; report: ${report?.succeeded.length ?? '?'} succeeded, ${report?.failed.length ?? '?'} failed (migrations/pricing/001_price_currency.sql, in one transaction and under a lock per store)`,
    )
  }

  const client = createShopClient(baseUrl)
  check((await client.health()).status === 200, 'GET /health → 200')
  const initialC = tenantC === undefined ? undefined : await snapshot(client, tenantC)

  section('Orders: one transaction across Drizzle, Kysely and Knex')
  const beforeA = await snapshot(client, tenantA)
  const skuA = skuWithStock(beforeA, 2)
  const placedA = await client.placeOrder(tenantA, { customer: 'Wile E. Coyote', items: [{ sku: skuA, quantity: 2 }] })
  check(placedA.status === 201, `${tenantA}: POST /orders 2 × ${skuA} → ${placedA.status}, order #${placedA.body.order?.id}`)
  const afterA = await snapshot(client, tenantA)
  check(
    afterA.orders === beforeA.orders + 1 &&
      afterA.audit === beforeA.audit + 1 &&
      afterA.stock[skuA] === (beforeA.stock[skuA] ?? 0) - 2,
    `${tenantA}: orders ${beforeA.orders}→${afterA.orders} (Drizzle), ${skuA} ${beforeA.stock[skuA]}→${afterA.stock[skuA]} (Kysely), audit ${beforeA.audit}→${afterA.audit} (Knex)`,
  )

  const beforeB = await snapshot(client, tenantB)
  const skuB = skuWithStock(beforeB, 1)
  const placedB = await client.placeOrder(tenantB, { customer: 'Hank Scorpio', items: [{ sku: skuB, quantity: 1 }] })
  check(placedB.status === 201, `${tenantB}: POST /orders 1 × ${skuB} → ${placedB.status}, order #${placedB.body.order?.id}`)
  const afterB = await snapshot(client, tenantB)
  check(
    afterB.orders === beforeB.orders + 1 &&
      afterB.audit === beforeB.audit + 1 &&
      afterB.stock[skuB] === (beforeB.stock[skuB] ?? 0) - 1,
    `${tenantB}: orders ${beforeB.orders}→${afterB.orders}, ${skuB} ${beforeB.stock[skuB]}→${afterB.stock[skuB]}, audit ${beforeB.audit}→${afterB.audit}`,
  )

  section('A failing order rolls back all three writes')
  // Two lines, processed in SKU order: the first one's stock update succeeds inside the transaction,
  // the second one cannot be served, so that real Kysely write (and Drizzle's order row) must vanish.
  const skus = Object.keys(afterA.stock).sort()
  const first = skus.find((sku, i) => i < skus.length - 1 && (afterA.stock[sku] ?? 0) >= 1)
  const second = first === undefined ? undefined : skus[skus.indexOf(first) + 1]
  if (first === undefined || second === undefined) throw new Error(`${tenantA} needs two products: ${describe(afterA)}`)
  const tooMany = (afterA.stock[second] ?? 0) + 1
  const rejected = await client.placeOrder(tenantA, {
    customer: 'Wile E. Coyote',
    items: [{ sku: first, quantity: 1 }, { sku: second, quantity: tooMany }],
  })
  check(
    rejected.status === 409 && rejected.body.error === 'insufficient_stock',
    `${tenantA}: POST /orders 1 × ${first} + ${tooMany} × ${second} → ${rejected.status} ${rejected.body.error}: ${rejected.body.message}`,
  )
  say(`inside its transaction: order row inserted (Drizzle), 1 × ${first} taken (Kysely), then ${second} refused → ROLLBACK`)
  const afterFailure = await snapshot(client, tenantA)
  say(`before: ${describe(afterA)}`)
  say(`after:  ${describe(afterFailure)}`)
  check(afterFailure.orders === afterA.orders, `no order row left behind (Drizzle): ${afterA.orders} → ${afterFailure.orders}`)
  check(
    isDeepStrictEqual(afterFailure.stock, afterA.stock),
    `stock unchanged, including the ${first} taken before the failure (Kysely): ${afterA.stock[first]} → ${afterFailure.stock[first]}`,
  )
  check(afterFailure.audit === afterA.audit, `no audit entry (Knex): ${afterA.audit} → ${afterFailure.audit}`)

  section('Tenants never see each other\'s rows')
  const nowB = await snapshot(client, tenantB)
  check(
    afterFailure.customers.includes('Wile E. Coyote') && !afterFailure.customers.includes('Hank Scorpio'),
    `${tenantA} sees only its own orders (${afterFailure.customers.join(', ')})`,
  )
  check(
    nowB.customers.includes('Hank Scorpio') && !nowB.customers.includes('Wile E. Coyote'),
    `${tenantB} sees only its own orders (${nowB.customers.join(', ')})`,
  )
  check(isDeepStrictEqual(nowB, afterB), `${tenantB}'s orders, stock and audit untouched by ${tenantA}'s orders (${describe(nowB)})`)
  const sharedIds = afterFailure.orderIds.filter((id) => nowB.orderIds.includes(id))
  if (sharedIds.length > 0) say(`both have an order #${sharedIds.join(', #')}: separate databases, separate sequences`)
  if (tenantC !== undefined && initialC !== undefined) {
    const nowC = await snapshot(client, tenantC)
    check(isDeepStrictEqual(nowC, initialC), `${tenantC} untouched (${describe(nowC)})`)
  }

  section('Bad and unknown tenants')
  const poolsBefore = (await client.stats()).body.pools.count
  const fetchesBefore = totalFetches()
  const missing = await client.orders(undefined)
  check(missing.status === 400 && missing.body.error === 'missing_tenant', `no x-org-id → ${missing.status}: ${missing.body.message}`)
  const invalid = await client.orders('../../etc/passwd')
  check(invalid.status === 400 && invalid.body.error === 'invalid_tenant', `x-org-id: ../../etc/passwd → ${invalid.status}: ${invalid.body.message}`)
  check(
    (await client.stats()).body.pools.count === poolsBefore && totalFetches() === fetchesBefore,
    'neither created a pool nor asked the secret source',
  )
  const unknown = `umbrella-${randomBytes(3).toString('hex')}`
  const secretName = shopSecretName(config.project, unknown)
  const unknown1 = await client.orders(unknown)
  const unknown2 = await client.stock(unknown)
  check(
    unknown1.status === 404 && unknown2.status === 404 && unknown2.body.error === 'unknown_tenant',
    `x-org-id: ${unknown} twice → ${unknown1.status}, ${unknown2.status}: ${unknown2.body.message}`,
  )
  check(secretFetches.get(secretName) === 1, `secret "${secretName}" looked up once for two requests (negative cache)`)
  if (local !== undefined) {
    const calls = local.secretsManager.getSecretValueCalls(secretName)
    check(calls === 1, `the Secrets Manager endpoint received ${calls} GetSecretValue for it`)
  }
  check((await client.stats()).body.pools.count === poolsBefore, `still ${poolsBefore} pools: none for the unknown tenant`)

  let sharedPoolCount = 0
  if (stores.length >= 2) {
    sharedPoolCount = await sharedPools(client, stores, {
      shopTenants: config.tenants.length,
      prices: (orgId) => priceListFor(orgId).length,
      reviews: (orgId) => reviewsFor(orgId).length,
    })
  } else {
    section('Shared pools')
    say(config.mode === 'local' ? 'skipped: HYPERCONN_SHARED_TENANTS is below 2' : 'skipped: the stores are provisioned in local mode only')
  }

  section('Registry stats (GET /stats)')
  const stats = (await client.stats()).body
  say(`pools: ${stats.pools.count} open (${stats.pools.list.map((p) => p.name).sort().join(', ')}), ${stats.pools.created} created, ${stats.evictions.total} evicted`)
  say(`tenants: ${stats.tenants.cached} cached (max ${stats.tenants.max})`)
  for (const server of stats.servers) say(`budget of ${server.server}: ${server.open} open of ${server.max ?? 'auto'} (peak ${server.peak}), ${server.waiting} waiting`)
  say(`connections: ${stats.connections.total} open, ${stats.connections.idle} idle, ${stats.connections.waiting} waiting`)
  const cache = stats.secretCache
  say(`secret cache: ${cache.entries} entries, ${cache.fetches} fetches, ${cache.hits} hits, ${cache.misses} misses, ${cache.negativeHits} negative hits`)
  if (local !== undefined) say(`GetSecretValue calls received by the endpoint: ${local.secretsManager.getSecretValueCalls()}`)
  check(
    stats.pools.count === config.tenants.length + sharedPoolCount,
    `one pool per shop tenant (${config.tenants.length})${sharedPoolCount === 0 ? '' : ` + one per shared service (${sharedPoolCount})`}`,
  )

  await observability(client)
}

/** How many `/metrics` lines of one kind the demo prints before summing up the rest. */
const METRIC_LINES_SHOWN = 10

/** Probes and the Prometheus endpoint, as a scraper and an orchestrator see them after the traffic above. */
async function observability(client: ShopClient): Promise<void> {
  section('Observability: GET /healthz, /readyz and /metrics (OpenTelemetry → Prometheus)')
  const [live, ready] = await Promise.all([client.healthz(), client.readyz()])
  check(live.status === 200 && live.body.ok, `GET /healthz → ${live.status} (liveness: the process answers)`)
  const servers = ready.body.servers ?? []
  check(
    ready.status === 200 && ready.body.ok && servers.length > 0 && servers.every((s) => s.reachable === true),
    `GET /readyz → ${ready.status} (registry.health()): ${servers.map((s) => `${s.server} reachable ${s.reachable}, ${s.budget.inUse}/${s.budget.open} in use, ${s.waiting} waiting`).join('; ')}`,
  )

  const pools = (await client.stats()).body.pools.list.map((pool) => pool.name)
  const metrics = await client.metrics()
  const lines = metrics.body.split('\n')
  const series = (name: string): string[] => lines.filter((line) => line.startsWith(`${name}{`))
  const counts = series('db_client_connection_count')
  // Each physical pool reports its idle and its used connections, labelled with its name (no secret in it).
  const labelled = (pool: string, state: string): boolean =>
    counts.some((line) => line.includes(`db_client_connection_pool_name="${pool}"`) && line.includes(`db_client_connection_state="${state}"`))
  check(
    metrics.status === 200 && pools.length > 0 && pools.every((pool) => labelled(pool, 'idle') && labelled(pool, 'used')),
    `GET /metrics → ${metrics.status}: db_client_connection_count{state="idle"|"used"} for each of the ${pools.length} physical pools`,
  )
  // The scope label is the same on every line: left out here to keep the lines readable.
  const show = (line: string): string => line.replace(/,?otel_scope_name="[^"]*"/, '')
  for (const line of counts.slice(0, METRIC_LINES_SHOWN)) say(`  ${show(line)}`)
  if (counts.length > METRIC_LINES_SHOWN) say(`  … ${counts.length - METRIC_LINES_SHOWN} more db_client_connection_count lines`)
  for (const line of series('hyperconn_secret_fetches_total')) say(`  ${show(line)}`)
  const waits = series('db_client_connection_wait_time_count').length
  say(`  and per pool: max, pending_requests, wait_time and use_time histograms (${waits} pool × service series);`)
  say(`  timeouts, evictions and leaks counters appear with their first occurrence (grafana/hyperconn-dashboard.json)`)
  check(!metrics.body.includes('postgresql://') && !metrics.body.includes('password'), 'no connection string and no password in /metrics')
}

let finishing: Promise<never> | undefined

/** Stops everything (idempotent) and exits. */
function finish(code: number): Promise<never> {
  finishing ??= (async () => {
    section('Cleaning up')
    const problems = await cleanup.run()
    for (const problem of problems) console.error(`  ✗ ${problem.message}`)
    if (problems.length === 0) say('HTTP server, registry, Secrets Manager endpoint and PostgreSQL stopped; temp data removed')
    const seconds = ((performance.now() - startedAt) / 1000).toFixed(1)
    const ok = code === 0 && problems.length === 0
    const outcome = ok ? 'demo passed' : interrupted ? 'demo interrupted' : 'demo FAILED'
    console.log(`\n${outcome} in ${seconds} s`)
    return process.exit(ok ? 0 : code === 0 ? 1 : code)
  })()
  return finishing
}

onShutdownSignal((signal) => {
  interrupted = true
  interruption.abort()
  console.log(`\n${signal} received: stopping`)
  void startup.then(
    () => finish(130),
    (error: unknown) => {
      // Start-up stopped what it had started; report only if that went wrong.
      if (error instanceof AggregateError) console.error(`  ✗ ${error.message}`)
      return finish(130)
    },
  )
})

try {
  await scenario()
  if (!interrupted && failedChecks > 0) console.error(`\n${failedChecks} expectation(s) failed`)
  if (!interrupted) await finish(failedChecks === 0 ? 0 : 1)
} catch (error) {
  if (!interrupted) {
    console.error('\n  ✗ the demo stopped with an error:', error)
    await finish(1)
  }
}
