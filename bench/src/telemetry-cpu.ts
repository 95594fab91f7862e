/**
 * Diagnostic, not part of `pnpm bench`: the client-side CPU that `telemetry` adds per query or transaction,
 * with pg's network stubbed out (pg-network-stub.ts), so kernel socket time on a shared VM cannot hide a
 * µs. Two registries, telemetry off and on (the no-op OpenTelemetry providers of telemetry-otel.ts),
 * calls interleaved one by one (interleave.ts). Also times the SDK's `Histogram.record` on its own, with
 * the attributes object core passes. With --profile, writes V8 CPU profiles of both sides
 * (bench/profiles/telemetry-*.cpuprofile) and prints the self time per call by function, on minus off.
 *
 *   pnpm --filter @hyperconn/bench bench:telemetry-cpu [--profile]
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { Session } from 'node:inspector/promises'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { createRegistry, staticSecrets } from '@hyperconn/core'
import type { Registry } from '@hyperconn/core'
import { PROJECT, SERVICE } from './bench-env.js'
import { selfTimesByFunction } from './cpu-profile-summary.js'
import { interleave } from './interleave.js'
import type { InterleavedRound } from './interleave.js'
import { measureCpuBound } from './measure-cpu.js'
import { AdapterClients } from './orm-clients.js'
import { poolOptions } from './ours-registry.js'
import { stubPgNetwork } from './pg-network-stub.js'
import { median } from './ratio-summary.js'
import { createNoopOtel, registerContextManager } from './telemetry-otel.js'

const { values: flags } = parseArgs({ options: { profile: { type: 'boolean', default: false } } })
stubPgNetwork()
registerContextManager()

const ORG = 'cpu1'
const TENANT_URL = 'postgresql://bench:bench@127.0.0.1:5432/bench'
const otel = createNoopOtel()
const registry = (telemetry: boolean): Registry =>
  createRegistry({
    project: PROJECT,
    services: [SERVICE],
    secrets: staticSecrets({ [`${PROJECT}-${ORG}`]: { [`${SERVICE}-postgresql`]: TENANT_URL } }),
    pool: poolOptions(4),
    ...(telemetry ? { telemetry: { meterProvider: otel.meterProvider, tracerProvider: otel.tracerProvider } } : {}),
  })
const registries = { off: registry(false), on: registry(true) }
const requestTracer = otel.tracerProvider.getTracer('bench')

type Call = () => Promise<unknown>
const calls = (on: Registry): Record<'query' | 'kysely' | 'transaction' | 'parent', Call> => {
  const tenant = on.tenant(ORG, SERVICE)
  const kysely = new AdapterClients(on).queries('Kysely', ORG)
  return {
    query: () => tenant.query('SELECT 1'),
    kysely: async () => kysely.selectById(1),
    transaction: () =>
      tenant.transaction(async () => {
        await tenant.query('SELECT 1')
        await tenant.query('SELECT 1')
      }),
    parent: () =>
      requestTracer.startActiveSpan('bench.request', async (span) => {
        try {
          return await tenant.query('SELECT 1')
        } finally {
          span.end()
        }
      }),
  }
}
const off = calls(registries.off)
const on = calls(registries.on)

const lines = ['| Operation | off CPU µs | on CPU µs | Added µs | Ratio |', '|---|--:|--:|--:|--:|']
const report = (operation: string, rounds: readonly InterleavedRound[]): void => {
  const [oursCpu, theirsCpu] = [median(rounds.map((r) => r.oursCpuUs)), median(rounds.map((r) => r.theirsCpuUs))]
  lines.push(`| ${operation} | ${theirsCpu.toFixed(2)} | ${oursCpu.toFixed(2)} | ${(oursCpu - theirsCpu).toFixed(2)} | ${(oursCpu / theirsCpu).toFixed(3)} |`)
}
// `parent` last: the first active span (or transaction) turns on AsyncLocalStorage's promise hook for the
// whole process, which would also slow the plain queries measured after it.
const perCall = { rounds: 10, pairs: 3000, warmupPairs: 3000 }
report("tenant.query('SELECT 1')", await interleave(on.query, off.query, perCall))
report('Kysely PK SELECT via getDb', await interleave(on.kysely, off.kysely, perCall))
report('transaction: BEGIN, 2 × SELECT 1, COMMIT', await interleave(on.transaction, off.transaction, { ...perCall, pairs: 1000 }))
report("tenant.query('SELECT 1') under an active span", await interleave(on.parent, off.parent, perCall))
console.log(lines.join('\n'))

// What one record costs in the SDK, with a frozen attributes object like the one core caches.
const meter = otel.meterProvider.getMeter('bench')
const histogram = meter.createHistogram('bench.record', { unit: 's', advice: { explicitBucketBoundaries: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] } })
const attributes = Object.freeze({ 'db.client.connection.pool.name': '127.0.0.1:5432/bench@bench', 'hyperconn.service': SERVICE })
const record = async () => histogram.record(0.0001, attributes)
const floor = async () => attributes
const recordNs = median([await measureCpuBound(record, 200), await measureCpuBound(record, 200), await measureCpuBound(record, 200)])
const floorNs = median([await measureCpuBound(floor, 200), await measureCpuBound(floor, 200), await measureCpuBound(floor, 200)])
console.log(`\nHistogram.record (sdk-metrics, 2 attributes): ${(recordNs - floorNs).toFixed(0)} ns per call net of the loop (${recordNs.toFixed(0)} − ${floorNs.toFixed(0)})`)

if (flags.profile) {
  const dir = fileURLToPath(new URL('../profiles/', import.meta.url))
  await mkdir(dir, { recursive: true })
  for (const name of ['query', 'transaction', 'parent'] as const) {
    const count = name === 'transaction' ? 20_000 : 60_000
    const [offCost, onCost] = [await profile(dir, `telemetry-${name}-off`, off[name], count), await profile(dir, `telemetry-${name}-on`, on[name], count)]
    const frames = new Set([...offCost.frames.keys(), ...onCost.frames.keys()])
    const diff = [...frames]
      .map((frame) => ({ frame, on: onCost.frames.get(frame) ?? 0, delta: (onCost.frames.get(frame) ?? 0) - (offCost.frames.get(frame) ?? 0) }))
      .sort((a, b) => b.delta - a.delta)
    console.log(`\n${name}: ${offCost.total.toFixed(2)} µs sampled per call off, ${onCost.total.toFixed(2)} on; self time per call, largest increases (on − off, on):`)
    for (const { frame, on: onMicros, delta } of diff.slice(0, 25)) console.log(`  ${delta.toFixed(3).padStart(7)}  ${onMicros.toFixed(3).padStart(7)} µs  ${frame}`)
  }
}
for (const r of Object.values(registries)) await r.close()
await otel.shutdown()

async function profile(dir: string, name: string, call: Call, count: number): Promise<{ total: number; frames: Map<string, number> }> {
  const session = new Session()
  session.connect()
  await session.post('Profiler.enable')
  await session.post('Profiler.setSamplingInterval', { interval: 20 })
  await session.post('Profiler.start')
  for (let i = 0; i < count; i++) await call()
  const { profile: result } = await session.post('Profiler.stop')
  session.disconnect()
  await writeFile(`${dir}${name}.cpuprofile`, JSON.stringify(result))
  return selfTimesByFunction(result, count)
}
