import { context } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { AggregationTemporality, MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics'
import type { DataPoint, Histogram, MetricData } from '@opentelemetry/sdk-metrics'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import type { TestDatabase } from '@hyperconn/testkit'
import { connectClient, createRole } from '@hyperconn/testkit'
import type { TestRole } from '@hyperconn/testkit'
import { testDatabase } from '@hyperconn/testkit/vitest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createRegistry, InvalidOptionsError, PoolSaturatedError, staticSecrets } from '../src/index.js'
import type { Registry } from '../src/index.js'
import { loadOtelApi } from '../src/telemetry/telemetry-api.js'

// OpenTelemetry through the SDK's own readers and exporters, against real PostgreSQL.

class TestReader extends MetricReader {
  constructor() {
    super({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE })
  }
  protected onForceFlush(): Promise<void> {
    return Promise.resolve()
  }
  protected onShutdown(): Promise<void> {
    return Promise.resolve()
  }
}

const MARKER = 'Pw-Marker-7f3a9c'
let db1: TestDatabase
let db2: TestDatabase
let role: TestRole

beforeAll(async () => {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  db1 = await testDatabase('otel')
  db2 = await testDatabase('otel')
  role = await createRole(db1.url, `otel_${process.pid}`, MARKER)
  for (const db of [db1, db2]) {
    await using admin = await connectClient(db.url)
    await admin.query(`GRANT ALL ON DATABASE ${db.name} TO ${role.user}; GRANT ALL ON SCHEMA public TO ${role.user}`)
  }
})

afterAll(async () => {
  await role?.[Symbol.asyncDispose]()
  await db1?.[Symbol.asyncDispose]()
  await db2?.[Symbol.asyncDispose]()
})

interface Otel {
  reader: TestReader
  spans: InMemorySpanExporter
  registry: Registry<'core'>
}

function setup(options: { max?: number; acquireTimeoutMs?: number; tenantAttribute?: boolean } = {}): Otel {
  const reader = new TestReader()
  const meterProvider = new MeterProvider({ readers: [reader] })
  const spans = new InMemorySpanExporter()
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] })
  // Five tenants on two physical pools: a, b, c on db1; d, e on db2. The password is a marker.
  const secrets: Record<string, Record<string, string>> = {}
  for (const org of ['a', 'b', 'c']) secrets[`ot-${org}`] = { 'core-postgresql': db1.urlFor(role.user, MARKER) }
  for (const org of ['d', 'e']) secrets[`ot-${org}`] = { 'core-postgresql': db2.urlFor(role.user, MARKER) }
  const registry = createRegistry({
    project: 'ot',
    services: { core: { isolation: { rls: 'app.tenant_id' } } },
    secrets: staticSecrets(secrets),
    pool: { max: 4, application_name: 'otel-test' },
    connections: { max: options.max ?? 10, acquireTimeoutMs: options.acquireTimeoutMs ?? 10_000 },
    telemetry: { meterProvider, tracerProvider, tenantAttribute: options.tenantAttribute ?? false },
  })
  return { reader, spans, registry }
}

async function collect(reader: TestReader): Promise<MetricData[]> {
  const { resourceMetrics, errors } = await reader.collect()
  expect(errors).toEqual([])
  return resourceMetrics.scopeMetrics.flatMap((scope) => scope.metrics)
}

function points(metrics: MetricData[], name: string): DataPoint<unknown>[] {
  return (metrics.find((m) => m.descriptor.name === name)?.dataPoints ?? [])
}

function value(metrics: MetricData[], name: string, attributes: Record<string, string>): unknown {
  return points(metrics, name).find((p) => Object.entries(attributes).every(([k, v]) => p.attributes[k] === v))?.value
}

async function backends(db: TestDatabase): Promise<number> {
  await using admin = await connectClient(db.url)
  const { rows } = await admin.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = 'otel-test'",
    [db.name],
  )
  return rows[0]?.n ?? -1
}

describe('connection metrics per physical pool', () => {
  it('idle/used per pool equal pg_stat_activity at collection; max and pending per pool; units and kinds', async () => {
    const { reader, registry } = setup()
    await using _ = registry
    const held = [await registry.tenant('a').acquire(), await registry.tenant('b').acquire(), await registry.tenant('d').acquire()]
    for (const conn of held) await conn.query('SELECT 1')
    const idle = await registry.tenant('c').acquire()
    await idle.query('SELECT 1')
    idle.release()
    const names = registry.stats().pools.list.map((p) => p.name)
    expect(names).toHaveLength(2)
    const [pool1, pool2] = [names.find((n) => n.includes(db1.name)) as string, names.find((n) => n.includes(db2.name)) as string]
    const metrics = await collect(reader)
    const count = metrics.find((m) => m.descriptor.name === 'db.client.connection.count')
    expect(count?.descriptor).toMatchObject({ unit: '{connection}' })
    const used1 = value(metrics, 'db.client.connection.count', { 'db.client.connection.pool.name': pool1, 'db.client.connection.state': 'used' })
    const idle1 = value(metrics, 'db.client.connection.count', { 'db.client.connection.pool.name': pool1, 'db.client.connection.state': 'idle' })
    const used2 = value(metrics, 'db.client.connection.count', { 'db.client.connection.pool.name': pool2, 'db.client.connection.state': 'used' })
    const idle2 = value(metrics, 'db.client.connection.count', { 'db.client.connection.pool.name': pool2, 'db.client.connection.state': 'idle' })
    expect([used1, idle1, used2, idle2]).toEqual([2, 1, 1, 0])
    expect((used1 as number) + (idle1 as number)).toBe(await backends(db1))
    expect((used2 as number) + (idle2 as number)).toBe(await backends(db2))
    expect(value(metrics, 'db.client.connection.max', { 'db.client.connection.pool.name': pool1 })).toBe(4)
    expect(value(metrics, 'db.client.connection.pending_requests', { 'db.client.connection.pool.name': pool1 })).toBe(0)
    for (const conn of held) conn.release()
    const waits = points(metrics, 'db.client.connection.wait_time') as DataPoint<Histogram>[]
    expect(metrics.find((m) => m.descriptor.name === 'db.client.connection.wait_time')?.descriptor.unit).toBe('s')
    expect(waits.reduce((n, p) => n + p.value.count, 0)).toBe(4)
    // No org id unless tenantAttribute: the series stay per pool and service.
    expect(JSON.stringify(metrics)).not.toContain('hyperconn.org_id')
  })

  it('pending > 0 while callers queue on the budget; wait_time and timeouts move when PoolSaturatedError happens', async () => {
    const { reader, registry } = setup({ max: 2, acquireTimeoutMs: 150 })
    await using _ = registry
    const held = [await registry.tenant('a').acquire(), await registry.tenant('b').acquire()]
    const waiting = [registry.tenant('c').query('SELECT 1'), registry.tenant('a').query('SELECT 1'), registry.tenant('b').query('SELECT 1')]
    await expect.poll(() => registry.stats().connections.waiting).toBe(3)
    const pool1 = registry.stats().pools.list[0]?.name as string
    const during = await collect(reader)
    expect(value(during, 'db.client.connection.pending_requests', { 'db.client.connection.pool.name': pool1 })).toBe(3)
    const results = await Promise.allSettled(waiting)
    expect(results.every((r) => r.status === 'rejected' && r.reason instanceof PoolSaturatedError)).toBe(true)
    const after = await collect(reader)
    const timeouts = points(after, 'db.client.connection.timeouts').reduce((n, p) => n + (p.value as number), 0)
    expect(timeouts).toBe(3)
    const waited = (points(after, 'db.client.connection.wait_time') as DataPoint<Histogram>[]).reduce((n, p) => n + p.value.count, 0)
    expect(waited).toBe(5) // two immediate acquires and three that timed out
    const slow = (points(after, 'db.client.connection.wait_time') as DataPoint<Histogram>[]).reduce((n, p) => n + (p.value.sum ?? 0), 0)
    expect(slow).toBeGreaterThanOrEqual(0.4) // three waits of acquireTimeoutMs (150 ms) each
    expect(value(after, 'db.client.connection.pending_requests', { 'db.client.connection.pool.name': pool1 })).toBe(0)
    for (const conn of held) conn.release()
    await registry.tenant('c').query('SELECT 1')
    const uses = points(await collect(reader), 'db.client.connection.use_time') as DataPoint<Histogram>[]
    expect(uses.reduce((n, p) => n + p.value.count, 0)).toBe(3)
  })

  it('leak and eviction counters match the events', async () => {
    const { reader, registry } = setup()
    await using _ = registry
    const leaks: unknown[] = []
    const evictions: unknown[] = []
    registry.on('connection:leak', (e) => leaks.push(e))
    registry.on('pool:evict', (e) => evictions.push(e))
    await registry.scope(async () => {
      await registry.tenant('a').acquire()
      await registry.tenant('d').acquire()
    })
    const before = await collect(reader) // both pools reported
    expect(new Set(points(before, 'db.client.connection.count').map((p) => p.attributes['db.client.connection.pool.name'])).size).toBe(2)
    await registry.evict('core', 'd')
    await registry.evict('core', 'e')
    const metrics = await collect(reader)
    const sum = (name: string): number => points(metrics, name).reduce((n, p) => n + (p.value as number), 0)
    expect(sum('hyperconn.connection.leaks')).toBe(leaks.length)
    expect(leaks).toHaveLength(2)
    expect(sum('hyperconn.pool.evictions')).toBe(evictions.length)
    expect(sum('hyperconn.secret.fetches')).toBe(2)
    // The ended pool's gauges drop to 0 (the SDK would otherwise keep exporting their last values).
    const ended = registry.stats().pools.list.map((p) => p.name)
    const later = await collect(reader)
    const stale = points(later, 'db.client.connection.count').filter((p) => !ended.includes(p.attributes['db.client.connection.pool.name'] as string))
    expect(stale.length).toBeGreaterThan(0)
    expect(stale.every((p) => p.value === 0)).toBe(true)
  })
})

describe('spans', () => {
  it('hyperconn.transaction (service, isolation, propagation, outcome); acquire spans only under a parent; secret fetch spans', async () => {
    const { spans, registry } = setup({ tenantAttribute: true })
    await using _ = registry
    await registry.tenant('a').transaction(() => registry.tenant('a').query('SELECT 1'), { isolationLevel: 'serializable' })
    await registry.tenant('b').transaction(() => Promise.reject(new Error('no'))).catch(() => undefined)
    const finished = spans.getFinishedSpans()
    const transactions = finished.filter((s) => s.name === 'hyperconn.transaction')
    expect(transactions.map((s) => s.attributes)).toEqual([
      { 'hyperconn.service': 'core', 'hyperconn.org_id': 'a', 'hyperconn.propagation': 'required', 'hyperconn.isolation_level': 'serializable', 'hyperconn.outcome': 'committed' },
      { 'hyperconn.service': 'core', 'hyperconn.org_id': 'b', 'hyperconn.propagation': 'required', 'hyperconn.outcome': 'rolled_back', 'error.type': 'Error' },
    ])
    // The acquire of a transaction runs inside its span: a child of it.
    const acquires = finished.filter((s) => s.name === 'hyperconn.connection.acquire')
    expect(acquires).toHaveLength(2)
    expect(acquires[0]?.parentSpanContext?.spanId).toBe(transactions[0]?.spanContext().spanId)
    expect(acquires[0]?.attributes).toMatchObject({ 'hyperconn.queued': false, 'db.client.connection.pool.name': expect.stringContaining(db1.name) as unknown })
    // An autocommit query outside any span makes no span.
    spans.reset()
    await registry.tenant('c').query('SELECT 1')
    expect(spans.getFinishedSpans().map((s) => s.name)).toEqual(['hyperconn.secret.fetch'])
    expect(spans.getFinishedSpans()[0]?.attributes).toMatchObject({ 'hyperconn.outcome': 'ok', 'hyperconn.secret.name': 'ot-c' })
  })
})

describe('no secret in any output', () => {
  it('the marker password appears in no metric, span, event or health output, also after a failure', async () => {
    const { reader, spans, registry } = setup({ tenantAttribute: true })
    await using _ = registry
    const events: unknown[] = []
    for (const name of ['pool:create', 'pool:evict', 'secret:fetch', 'connection:error', 'connection:leak'] as const) registry.on(name, (e) => events.push(e))
    await registry.tenant('a').transaction(() => registry.tenant('a').query('SELECT 1'))
    await registry.scope(async () => void (await registry.tenant('d').acquire()))
    await using admin = await connectClient(db1.url)
    await admin.query(`ALTER ROLE ${role.user} PASSWORD 'changed-elsewhere'`)
    await registry.evict('core', 'a')
    await registry.tenant('a').query('SELECT 1').catch(() => undefined) // refused password: a failure on record
    await admin.query(`ALTER ROLE ${role.user} PASSWORD '${MARKER}'`)
    const health = await registry.health()
    expect(health.servers[0]?.lastError).not.toBeNull()
    const output = JSON.stringify([await collect(reader), spans.getFinishedSpans().map((s) => [s.name, s.attributes, s.events, s.status]), events, health])
    expect(output).not.toContain(MARKER)
    expect(output).not.toContain('postgresql://')
  })
})

describe('registry.health()', () => {
  it('per server: reachable, budget in use, waiting, last error (redacted)', async () => {
    const { registry } = setup()
    await using _ = registry
    expect(await registry.health()).toEqual({ ok: true, closed: false, servers: [] })
    const conn = await registry.tenant('a').acquire()
    const report = await registry.health()
    expect(report.ok).toBe(true)
    expect(report.servers).toEqual([
      {
        server: expect.stringMatching(/:\d+$/) as unknown,
        reachable: true,
        budget: { max: 10, open: 1, inUse: 1 },
        waiting: 0,
        lastConnectedAt: expect.any(String) as unknown,
        lastError: null,
      },
    ])
    conn.release()
  })
})

describe('registry.health() reachability', () => {
  it('a refused login is the tenant\'s problem (server reachable); a server that does not answer is not reachable', async () => {
    const wrong = new URL(db1.urlFor(role.user, 'not-the-password'))
    const dead = new URL(db1.urlFor(role.user, MARKER))
    dead.port = '1' // nothing listens there
    await using registry = createRegistry({
      project: 'hr',
      services: ['core'],
      secrets: staticSecrets({ 'hr-a': { 'core-postgresql': wrong.toString() }, 'hr-b': { 'core-postgresql': dead.toString() } }),
      pool: { connectionTimeoutMillis: 2_000 },
    })
    await registry.tenant('a').query('SELECT 1').catch(() => undefined)
    await registry.tenant('b').query('SELECT 1').catch(() => undefined)
    const report = await registry.health()
    const byPort = new Map(report.servers.map((s) => [s.server.split(':').at(-1), s]))
    expect(byPort.get(wrong.port)).toMatchObject({ reachable: true, lastError: { sqlState: '28P01' } })
    expect(byPort.get('1')).toMatchObject({ reachable: false })
    expect(report.ok).toBe(false)
    expect(JSON.stringify(report)).not.toContain(MARKER)
    expect(JSON.stringify(report)).not.toContain('not-the-password')
  })
})

describe('without @opentelemetry/api', () => {
  it('telemetry explains what to install; the loader is only asked when telemetry is set', () => {
    const missing = (): never => {
      throw new Error("Cannot find module '@opentelemetry/api'")
    }
    expect(() => loadOtelApi(missing)).toThrow(InvalidOptionsError)
    expect(() => loadOtelApi(missing)).toThrow(/npm install @opentelemetry\/api/)
    expect(() => createRegistry({ project: 'x', services: ['core'], secrets: staticSecrets({}), telemetry: { bogus: 1 } as never })).toThrow(/telemetry.bogus/)
  })
})
