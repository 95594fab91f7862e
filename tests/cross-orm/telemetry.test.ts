import { context } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { PgInstrumentation } from '@opentelemetry/instrumentation-pg'
import { MeterProvider } from '@opentelemetry/sdk-metrics'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { crossOrmDatabases, ENTRY_POINTS, VIAS } from './support/fixture.js'
import type { EntryPoint, TenantOrms } from './support/fixture.js'

// Issue #11: a cross-ORM transaction is one `hyperconn.transaction` span, and the pg query spans of
// @opentelemetry/instrumentation-pg for its statements (BEGIN, every ORM's INSERT, COMMIT) are its children.
//
// instrumentation-pg hooks CommonJS require(), which never sees pg here (vitest imports it as ESM, and it
// is loaded before any test code runs). So its own patch for the `pg` module is applied to the pg module
// object itself: the one every importer shares (core's pools, Knex, the fixture's admin client). It wraps
// pg.Client.prototype.query/connect, which pg.Pool's clients inherit.

const databases = crossOrmDatabases(1, 'xotel')
const spans = new InMemorySpanExporter()
const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] })
const meterProvider = new MeterProvider()
const instrumentation = new PgInstrumentation({ enabled: false })
instrumentation.setTracerProvider(tracerProvider)
const pgModule = instrumentation.getModuleDefinitions().find((definition) => definition.name === 'pg')

beforeAll(() => {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  if (pgModule?.patch === undefined) throw new Error('instrumentation-pg has no module definition for pg')
  pgModule.patch(pg)
})

afterAll(() => {
  pgModule?.unpatch?.(pg)
  context.disable()
})

/** One transaction opened by `entry`, with an insert through its own transaction object and through each of Drizzle, Kysely, Knex and tenant.query. */
async function crossOrmTransaction(org: TenantOrms, entry: EntryPoint): Promise<ReadableSpan[]> {
  spans.reset()
  await org.transaction(entry, async (native) => {
    await native.insert('native')
    for (const via of VIAS) await org.insert(via, `via-${via}`)
  })
  const finished = [...spans.getFinishedSpans()]
  expect(await org.labels()).toEqual(['native', ...VIAS.map((via) => `via-${via}`)])
  return finished
}

function queries(finished: readonly ReadableSpan[]): ReadableSpan[] {
  return finished.filter((span) => span.name.startsWith('pg.query')).sort((a, b) => compareTime(a.startTime, b.startTime))
}

function compareTime(a: readonly [number, number], b: readonly [number, number]): number {
  return a[0] - b[0] || a[1] - b[1]
}

/** The statement kinds of a cross-ORM transaction, in order: BEGIN, the five INSERTs, COMMIT. */
const STATEMENTS = ['BEGIN', ...Array.from({ length: 1 + VIAS.length }, () => 'INSERT'), 'COMMIT']

describe.each(ENTRY_POINTS)('telemetry: a cross-ORM transaction opened by %s', (entry) => {
  it('yields one hyperconn.transaction span with the pg query spans as children', async () => {
    await using fx = await databases.open({ telemetry: { tracerProvider, meterProvider } })
    const finished = await crossOrmTransaction(fx.org, entry)

    const transactions = finished.filter((span) => span.name === 'hyperconn.transaction')
    expect(transactions).toHaveLength(1)
    const transaction = transactions[0] as ReadableSpan
    expect(transaction.parentSpanContext).toBeUndefined()
    expect(transaction.attributes).toMatchObject({ 'hyperconn.service': 'core', 'hyperconn.outcome': 'committed' })
    const { traceId, spanId } = transaction.spanContext()

    // Every statement, BEGIN and COMMIT included, is a direct child of the transaction span.
    const statements = queries(finished)
    expect(statements.map((span) => span.attributes['db.query.text'])).toEqual(STATEMENTS.map((kind) => expect.stringMatching(new RegExp(`^${kind}\\b`, 'i'))))
    for (const span of statements) {
      expect({ name: span.name, traceId: span.spanContext().traceId, parent: span.parentSpanContext?.spanId }).toEqual({ name: span.name, traceId, parent: spanId })
    }
    // Nothing else ran outside it: the acquire (with its pg.connect and secret fetch) is in the same trace.
    expect(finished.filter((span) => span.spanContext().traceId !== traceId).map((span) => span.name)).toEqual([])
    const acquire = finished.find((span) => span.name === 'hyperconn.connection.acquire')
    expect(acquire?.parentSpanContext?.spanId).toBe(spanId)
  })
})

describe('telemetry off', () => {
  it('the same pg query spans have no parent: the parent above is hyperconn.transaction, not an ambient span', async () => {
    await using fx = await databases.open()
    const finished = await crossOrmTransaction(fx.org, 'drizzle')
    expect(finished.filter((span) => span.name.startsWith('hyperconn.'))).toEqual([])
    const statements = queries(finished)
    expect(statements).toHaveLength(STATEMENTS.length)
    expect(statements.map((span) => span.parentSpanContext)).toEqual(STATEMENTS.map(() => undefined))
    expect(new Set(statements.map((span) => span.spanContext().traceId)).size).toBe(STATEMENTS.length)
  })
})
