/**
 * Child process of scenario-telemetry.ts: the workloads of one kind (see telemetry-modes.ts), each on a
 * registry without telemetry and on one with it, in a process of their own.
 *
 * Usage: BENCH_TENANT_URL=… telemetry-probe.ts <plain|traced> <tenants> <workers> <poolMax> <batch> <warmupMs> [control]
 * (`control`: the `on` registry has no telemetry either, an A/A test of the method). Prints `ready` once warm, then answers each stdin line with one JSON line:
 * - `<workload> <sliceMs> <slices>`: run that load `slices` times with telemetry off and as often on, `sliceMs`
 *   each, alternating (off, on, on, off, off, on, …), and return the sums of each side (`TelemetryPair`);
 * - `counts`: collect the metrics once and return what the no-op exporters saw (`OtelCounts`);
 * - `exit`: close the registries and exit.
 *
 * Load: `workers` workers each run requests back to back, round-robin over `tenants` tenants (one
 * database, so one physical pool of `poolMax`): a batch of `batch` sequential queries, or one transaction.
 */
import { createInterface } from 'node:readline'
import { staticSecrets } from '@hyperconn/core'
import type { Registry } from '@hyperconn/core'
import { PROJECT, SERVICE } from './bench-env.js'
import { seededId } from './bench-schema.js'
import { AdapterClients } from './orm-clients.js'
import type { OrmName, OrmQueries } from './orm-clients.js'
import { createOurRegistry } from './ours-registry.js'
import { TELEMETRY_WORKLOADS } from './telemetry-modes.js'
import type { TelemetryPair, TelemetryProbeKind, TelemetryRound, TelemetrySwitch, TelemetryWorkload } from './telemetry-modes.js'
import { createNoopOtel, registerContextManager } from './telemetry-otel.js'
import { runForDuration } from './workers.js'

const [kindArg, tenantsArg, workersArg, poolMaxArg, batchArg, warmupArg, controlArg] = process.argv.slice(2)
const tenantUrl = process.env.BENCH_TENANT_URL
const kind = (Object.keys(TELEMETRY_WORKLOADS) as TelemetryProbeKind[]).find((k) => k === kindArg)
const [tenants, workers, poolMax, batch, warmupMs] = [tenantsArg, workersArg, poolMaxArg, batchArg, warmupArg].map(Number) as [number, number, number, number, number]
if (
  kind === undefined ||
  tenantUrl === undefined ||
  !(tenants > 0 && workers > 0 && poolMax > 0 && batch > 0 && warmupMs >= 0) ||
  (controlArg !== undefined && controlArg !== 'control')
) {
  throw new Error('usage: BENCH_TENANT_URL=… telemetry-probe.ts <plain|traced> <tenants> <workers> <poolMax> <batch> <warmupMs> [control]')
}

// As an application with the OpenTelemetry SDK has it, in both processes (on and off alike).
registerContextManager()
const otel = createNoopOtel()
const orgs = Array.from({ length: tenants }, (_, i) => `tel${i}`)
const secrets = staticSecrets(Object.fromEntries(orgs.map((orgId) => [`${PROJECT}-${orgId}`, { [`${SERVICE}-postgresql`]: tenantUrl }])))
const registries: Record<TelemetrySwitch, Registry> = {
  off: createOurRegistry(secrets, { poolMax }),
  on: createOurRegistry(secrets, {
    poolMax,
    ...(controlArg === undefined ? { telemetry: { meterProvider: otel.meterProvider, tracerProvider: otel.tracerProvider } } : {}),
  }),
}
// The request span of `parent`, the same in both configurations.
const requestTracer = otel.tracerProvider.getTracer('bench')

interface Load {
  /** One request: a batch of queries or one transaction. */
  readonly request: (orgId: string) => Promise<void>
  readonly unitsPerRequest: number
  readonly checkoutsPerRequest: number
}

const queryBatch = (registry: Registry) => async (orgId: string) => {
  const tenant = registry.tenant(orgId)
  for (let i = 0; i < batch; i++) await tenant.query('SELECT 1')
}

function load(workload: TelemetryWorkload, registry: Registry): Load {
  const batched = (request: (orgId: string) => Promise<void>): Load => ({ request, unitsPerRequest: batch, checkoutsPerRequest: batch })
  switch (workload) {
    case 'query':
      return batched(queryBatch(registry))
    case 'drizzle':
    case 'kysely':
    case 'knex': {
      const orm = (workload === 'drizzle' ? 'Drizzle' : workload === 'kysely' ? 'Kysely' : 'Knex') satisfies OrmName
      const adapters = new AdapterClients(registry)
      const byOrg = new Map<string, OrmQueries>(orgs.map((orgId) => [orgId, adapters.queries(orm, orgId)]))
      let id = 0
      return batched(async (orgId) => {
        const queries = byOrg.get(orgId) as OrmQueries
        for (let i = 0; i < batch; i++) await queries.selectById(seededId(id++))
      })
    }
    case 'transaction':
      return {
        request: (orgId) => {
          const tenant = registry.tenant(orgId)
          return tenant.transaction(async () => {
            await tenant.query('SELECT 1')
            await tenant.query('SELECT 1')
          })
        },
        unitsPerRequest: 1,
        checkoutsPerRequest: 1,
      }
    case 'parent': {
      const queries = queryBatch(registry)
      return batched((orgId) =>
        requestTracer.startActiveSpan('bench.request', async (span) => {
          try {
            await queries(orgId)
          } finally {
            span.end()
          }
        }),
      )
    }
  }
}

const loads = new Map<string, Load>()
for (const workload of TELEMETRY_WORKLOADS[kind]) for (const on of ['off', 'on'] as const) loads.set(`${workload} ${on}`, load(workload, registries[on]))

/** Slices of off and on alternating (ABBA…), so both sides see the same moments of a shared machine. */
async function pair(workload: string, sliceMs: number, slices: number): Promise<TelemetryPair> {
  const sides: Record<TelemetrySwitch, TelemetryRound[]> = { off: [], on: [] }
  for (let i = 0; i < slices; i++) {
    const order = i % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const)
    for (const on of order) sides[on].push(await round(`${workload} ${on}`, sliceMs))
  }
  const total = (runs: readonly TelemetryRound[]): TelemetryRound => ({
    units: runs.reduce((sum, r) => sum + r.units, 0),
    checkouts: runs.reduce((sum, r) => sum + r.checkouts, 0),
    elapsedMs: runs.reduce((sum, r) => sum + r.elapsedMs, 0),
    cpuUs: runs.reduce((sum, r) => sum + r.cpuUs, 0),
    errors: runs.reduce((sum, r) => sum + r.errors, 0),
    firstError: runs.find((r) => r.firstError !== undefined)?.firstError,
  })
  return { off: total(sides.off), on: total(sides.on) }
}

async function round(name: string, ms: number): Promise<TelemetryRound> {
  const config = loads.get(name)
  if (config === undefined) throw new Error(`telemetry probe (${kind}): unknown workload "${name}"`)
  const cpu = process.cpuUsage()
  const run = await runForDuration(workers, ms, (seq) => config.request(orgs[seq % orgs.length] as string))
  const used = process.cpuUsage(cpu)
  return {
    units: run.completed * config.unitsPerRequest,
    checkouts: run.completed * config.checkoutsPerRequest,
    elapsedMs: run.elapsedMs,
    cpuUs: used.user + used.system,
    errors: run.errors,
    firstError: run.firstError,
  }
}

// Pools, connections and the JIT; the parent still runs an untimed round of each before measuring.
for (const registry of Object.values(registries)) await registry.warm(orgs, { connections: poolMax })
for (const name of loads.keys()) await round(name, warmupMs)
process.stdout.write('ready\n')

const lines = createInterface({ input: process.stdin })
for await (const line of lines) {
  const words = line.trim().split(' ')
  const answer =
    words[0] === 'exit'
      ? undefined
      : words[0] === 'counts'
        ? await otel.counts()
        : await pair(words[0] as string, Number(words[1]), Number(words[2]))
  if (answer === undefined) break
  process.stdout.write(`${JSON.stringify(answer)}\n`)
}
lines.close()
for (const registry of Object.values(registries)) await registry.close()
await otel.shutdown()
