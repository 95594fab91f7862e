import { fileURLToPath } from 'node:url'
import { ProbeProcess } from './probe-process.js'
import { median, ratios } from './ratio-summary.js'
import type { ResultRow, Scenario } from './scenario-types.js'
import { TELEMETRY_WORKLOADS } from './telemetry-modes.js'
import type { TelemetryPair, TelemetryProbeKind, TelemetryRound, TelemetrySwitch, TelemetryWorkload } from './telemetry-modes.js'
import type { OtelCounts } from './telemetry-otel.js'

const PROBE = fileURLToPath(new URL('./telemetry-probe.ts', import.meta.url))

const TENANTS = 4
const WORKERS = 8
const POOL_MAX = 8
const BATCH = 10
const TARGET = 1.03

const WHAT: Record<TelemetryWorkload, { readonly what: string; readonly unit: 'query' | 'tx'; readonly target: boolean }> = {
  query: { what: "hot path: tenant.query('SELECT 1')", unit: 'query', target: true },
  drizzle: { what: 'Drizzle: primary-key SELECT via getDb(orgId)', unit: 'query', target: true },
  kysely: { what: 'Kysely: primary-key SELECT via getDb(orgId)', unit: 'query', target: true },
  knex: { what: 'Knex: primary-key SELECT via getDb(orgId)', unit: 'query', target: true },
  transaction: { what: 'transaction: BEGIN, 2 × SELECT 1, COMMIT (hyperconn.transaction span)', unit: 'tx', target: true },
  parent: { what: "tenant.query('SELECT 1') under an active request span (hyperconn.connection.acquire span per checkout)", unit: 'query', target: false },
}

/** One telemetry-probe.ts child. */
class Probe {
  readonly kind: TelemetryProbeKind
  readonly #process: ProbeProcess

  constructor(kind: TelemetryProbeKind, tenantUrl: string, warmupMs: number, control: boolean) {
    this.kind = kind
    const args = [kind, TENANTS, WORKERS, POOL_MAX, BATCH, warmupMs, ...(control ? ['control'] : [])]
    this.#process = new ProbeProcess(`telemetry probe (${kind})`, PROBE, args, tenantUrl)
  }

  ready(): Promise<void> {
    return this.#process.ready()
  }

  /** One round: `slices` slices of `sliceMs` with telemetry off and as many on, alternating. */
  async run(workload: TelemetryWorkload, sliceMs: number, slices: number): Promise<TelemetryPair> {
    const pair = await this.#process.ask<TelemetryPair>(`${workload} ${sliceMs} ${slices}`)
    const errors = pair.off.errors + pair.on.errors
    if (errors > 0) throw new Error(`telemetry probe (${this.kind}, ${workload}): ${errors} failed requests (${pair.off.firstError ?? pair.on.firstError})`)
    return pair
  }

  counts(): Promise<OtelCounts> {
    return this.#process.ask<OtelCounts>('counts')
  }

  exit(): Promise<void> {
    return this.#process.exit()
  }
}

const perSecond = (r: TelemetryRound) => (r.units / r.elapsedMs) * 1000
const cpuPerUnit = (r: TelemetryRound) => r.cpuUs / r.units

/**
 * `createRegistry({ telemetry: { meterProvider, tracerProvider } })` (real OpenTelemetry SDK providers whose
 * exporters do nothing, telemetry-otel.ts) against the same registry without telemetry, in the same
 * process and round. Two child processes (telemetry-probe.ts, see telemetry-modes.ts): `plain` (hot path
 * and the three adapters, never an AsyncLocalStorage) and `traced` (transactions, and queries under an
 * active span). A round runs every workload with telemetry off and on in short alternating slices (see
 * telemetry-probe.ts), the workloads rotated by one every round.
 */
export const telemetry: Scenario = {
  id: 'telemetry',
  title: '9. Telemetry',
  async run({ env, smoke }) {
    // BENCH_TELEMETRY_CONTROL=1: "on" is a second registry without telemetry (A/A): how far from 1 the method reads.
    const control = process.env.BENCH_TELEMETRY_CONTROL === '1'
    const probes: Probe[] = []
    try {
      const kinds = Object.keys(TELEMETRY_WORKLOADS) as TelemetryProbeKind[]
      for (const kind of kinds) probes.push(new Probe(kind, env.tenantUrl, smoke ? 20 : 300, control))
      await Promise.all(probes.map((probe) => probe.ready()))
      const sliceMs = smoke ? 20 : 50
      const slices = smoke ? 2 : 6
      const roundCount = smoke ? 1 : 10
      type Slot = `${TelemetryWorkload} ${TelemetrySwitch}`
      const rounds = {} as Record<Slot, TelemetryRound[]>
      for (const probe of probes) {
        for (const workload of TELEMETRY_WORKLOADS[probe.kind]) {
          await probe.run(workload, sliceMs, 2) // untimed: JIT, after the other process ran
          rounds[`${workload} off`] = []
          rounds[`${workload} on`] = []
        }
      }
      for (let round = 0; round < roundCount; round++) {
        for (const probe of probes) {
          const workloads = TELEMETRY_WORKLOADS[probe.kind]
          for (let j = 0; j < workloads.length; j++) {
            const workload = workloads[(round + j) % workloads.length] as TelemetryWorkload
            const { off, on } = await probe.run(workload, sliceMs, slices)
            rounds[`${workload} off`].push(off)
            rounds[`${workload} on`].push(on)
          }
        }
      }

      // The "on" configurations did record: every measured checkout is in the histograms, spans where due.
      const expect = (condition: boolean, message: string): void => {
        if (!condition && !control) throw new Error(message)
      }
      const sum = (slot: Slot, pick: (r: TelemetryRound) => number) => rounds[slot].reduce((total, r) => total + pick(r), 0)
      const counts = {} as Record<TelemetryProbeKind, OtelCounts>
      for (const probe of probes) {
        const seen = await probe.counts()
        counts[probe.kind] = seen
        const checkouts = TELEMETRY_WORKLOADS[probe.kind].reduce((total, workload) => total + sum(`${workload} on`, (r) => r.checkouts), 0)
        expect(
          seen.useTimeRecords >= checkouts && seen.waitTimeRecords >= checkouts,
          `telemetry probe (${probe.kind}): ${checkouts} checkouts measured with telemetry on, but use_time has ${seen.useTimeRecords} and wait_time ${seen.waitTimeRecords} values`,
        )
      }
      const spans = (kind: TelemetryProbeKind, name: string) => counts[kind].spans[name] ?? 0
      expect(
        spans('plain', 'hyperconn.connection.acquire') === 0 && spans('plain', 'hyperconn.transaction') === 0,
        `telemetry probe (plain) created spans without a parent or transaction: ${JSON.stringify(counts.plain.spans)}`,
      )
      expect(
        spans('traced', 'hyperconn.transaction') >= sum('transaction on', (r) => r.units),
        `telemetry probe (traced): fewer hyperconn.transaction spans than transactions: ${JSON.stringify(counts.traced.spans)}`,
      )
      expect(
        spans('traced', 'hyperconn.connection.acquire') >= sum('parent on', (r) => r.checkouts),
        `telemetry probe (traced): fewer hyperconn.connection.acquire spans than checkouts under a parent: ${JSON.stringify(counts.traced.spans)}`,
      )
      await Promise.all(probes.splice(0).map((probe) => probe.exit()))

      // ---- Rows ----
      const title = this.title
      const off = 'telemetry off'
      const onLabel = control ? 'A/A control, a second registry without telemetry' : 'telemetry on'
      const rows: ResultRow[] = kinds.flatMap((kind) =>
        TELEMETRY_WORKLOADS[kind].flatMap((workload): ResultRow[] => {
          const { what, unit, target } = WHAT[workload]
          const [on, base] = [rounds[`${workload} on`], rounds[`${workload} off`]]
          const cpu = ratios(on.map(cpuPerUnit), base.map(cpuPerUnit))
          const throughput = ratios(on.map(perSecond), base.map(perSecond))
          return [
            {
              scenario: title,
              metric: `${what}, ${onLabel}: Node CPU per ${unit === 'tx' ? 'transaction' : 'query'}`,
              unit: unit === 'tx' ? 'CPU µs/tx' : 'CPU µs/query',
              better: 'lower',
              ours: median(on.map(cpuPerUnit)),
              baseline: off,
              theirs: median(base.map(cpuPerUnit)),
              ratio: cpu,
              target: target ? { text: `ratio ≤ ${TARGET}`, met: cpu.median <= TARGET } : undefined,
            },
            {
              scenario: title,
              metric: `${what}, ${onLabel} (${WORKERS} workers)`,
              unit: unit === 'tx' ? 'tx/s' : 'queries/s',
              better: 'higher',
              ours: median(on.map(perSecond)),
              baseline: off,
              theirs: median(base.map(perSecond)),
              ratio: throughput,
              target: target ? { text: `ratio ≥ ${(1 / TARGET).toFixed(3)}`, met: throughput.median >= 1 / TARGET } : undefined,
            },
          ]
        }),
      )
      // Extra Node CPU per query (transaction), median over rounds of the same-round difference.
      const extraCpu = (workload: TelemetryWorkload) =>
        median(rounds[`${workload} on`].map((r, i) => cpuPerUnit(r) - cpuPerUnit(rounds[`${workload} off`][i] as TelemetryRound))).toFixed(2)
      return {
        id: this.id,
        title,
        rows,
        notes: [
          ...(control ? ['BENCH_TELEMETRY_CONTROL=1: "on" is a second registry without telemetry (A/A test of the method); the recording checks were skipped'] : []),
          `telemetry on = createRegistry({ telemetry: { meterProvider, tracerProvider } }): @opentelemetry/sdk-metrics MeterProvider with a PeriodicExportingMetricReader (no-op exporter, interval 1 h: no collection while measuring), @opentelemetry/sdk-trace-base BasicTracerProvider (default sampler: every span recorded) with a span processor that only counts ended spans; AsyncLocalStorageContextManager registered in both processes, for off and on alike`,
          `two child processes (telemetry-probe.ts): "plain" (hot path, Drizzle, Kysely, Knex; no AsyncLocalStorage entered) and "traced" (transactions; queries under an active span). ${TENANTS} tenants on one database (one physical pool, max ${POOL_MAX}) per registry, ${WORKERS} workers; a request is a batch of ${BATCH} sequential queries, or one transaction. ${roundCount} round(s); a round runs each workload (rotated by one every round) in ${slices} slices of ${sliceMs} ms with telemetry off and ${slices} on, alternating off, on, on, off, …; ratios on/off of the same round (sums of its slices)`,
          `extra Node CPU with telemetry on: hot path ${extraCpu('query')} µs/query; Drizzle ${extraCpu('drizzle')}, Kysely ${extraCpu('kysely')}, Knex ${extraCpu('knex')} µs/query; transaction ${extraCpu('transaction')} µs/tx; under an active span ${extraCpu('parent')} µs/query`,
          `checked after the rounds: use_time / wait_time values recorded ${counts.plain.useTimeRecords.toLocaleString('en-US')} / ${counts.plain.waitTimeRecords.toLocaleString('en-US')} (plain), ${counts.traced.useTimeRecords.toLocaleString('en-US')} / ${counts.traced.waitTimeRecords.toLocaleString('en-US')} (traced), at least one per checkout measured with telemetry on; spans ended: plain ${JSON.stringify(counts.plain.spans)}, traced ${JSON.stringify(counts.traced.spans)}`,
        ],
        details: { control, tenants: TENANTS, workers: WORKERS, poolMax: POOL_MAX, batch: BATCH, sliceMs, slices, rounds, counts },
      }
    } finally {
      await Promise.all(probes.map((probe) => probe.exit()))
      await env.waitForNoConnections()
    }
  },
}
