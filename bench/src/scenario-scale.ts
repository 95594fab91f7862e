import pg from 'pg'
import { createRegistry, staticSecrets } from '@hyperconn/core'
import type { SecretSource } from '@hyperconn/core'
import { alternateEach } from './alternate.js'
import { PROJECT } from './bench-env.js'
import type { BenchEnv } from './bench-env.js'
import { monitorConnections } from './connection-monitor.js'
import { createHyperconnPg, quietly } from './hyperconn-pg-manager.js'
import { poolOptions } from './ours-registry.js'
import { median, ratios } from './ratio-summary.js'
import type { RatioSummary } from './ratio-summary.js'
import { ensureScaleSchemas, ROWS_PER_TENANT, schemaOf } from './scale-schemas.js'
import type { ResultRow, Scenario, ScenarioResult } from './scenario-types.js'
import { lineChartSvg } from './svg-chart.js'
import { forRangeWithin, runForDuration } from './workers.js'
import type { WorkerRun } from './workers.js'
import { topShare, zipfSequence } from './zipf.js'

/** The service of the schema-per-tenant secrets (key `app-postgresql`). */
export const SCALE_SERVICE = 'app'
const WORKERS = 40
const RAW_POOL_MAX = 20
const ZIPF_S = 1.1
const ZIPF_SEED = 0x5ca1e
/** Draws precomputed per size; workers index them by request number (a 1.2 s window issues far fewer). */
const ZIPF_DRAWS = 1 << 17
/** Tenants of the JIT / connection warm-up, cached before the heap baseline. */
const WARM_TENANTS = WORKERS
/** No request may hold a worker longer than this (hyperconn-pg's pools wait for a connection forever by default). */
const REQUEST_DEADLINE_MS = 5_000
const SELECT = 'SELECT org FROM items WHERE id = $1'
const GC_PASSES = 8
const TARGET_RAW_ROUND_ROBIN = 0.9
const TARGET_RAW_ZIPF = 1.0
const TARGET_HEAP_BYTES = 2048
const TARGET_HEAP_AT = 10_000

const CONTENDERS = ['ours', 'raw', 'hyperconn-pg'] as const
type ContenderId = (typeof CONTENDERS)[number]
const DISTRIBUTIONS = ['round-robin', 'zipf'] as const
type Distribution = (typeof DISTRIBUTIONS)[number]

interface Plan {
  readonly sizes: readonly number[]
  readonly rounds: number
  /** Measured window per contender per round. */
  readonly windowMs: number
  /** Untimed warm-up of each contender, every round: JIT and the first connections. */
  readonly jitWarmMs: number
  /** Untimed pass over every tenant before the window: ours (which must cache them all: heap figure) and hyperconn-pg (bounded). */
  readonly oursPassLimitMs: number
  readonly theirPassLimitMs: number
}

const FULL: Plan = { sizes: [100, 1_000, 10_000], rounds: 3, windowMs: 1_200, jitWarmMs: 250, oursPassLimitMs: 10_000, theirPassLimitMs: 1_000 }
const SMOKE: Plan = { sizes: [100], rounds: 1, windowMs: 250, jitWarmMs: 80, oursPassLimitMs: 5_000, theirPassLimitMs: 300 }

/** What one contender does for one request: the tenant's `org` column of row `id`, through its own path. */
interface Contender {
  read(tenant: number, id: number): Promise<string | undefined>
  close(): Promise<void>
}

export interface ScaleRound {
  readonly requests: number
  readonly perSecond: number
  /** Failed requests, cross-tenant rows and deadline overruns included. */
  readonly errors: number
  /**
   * Rows whose `org` is not the asking tenant's (the request read another tenant's schema), over the
   * whole round: warm-up and pass included, so no wrong row goes unreported. The other counts are the window's.
   */
  readonly crossTenant: number
  readonly timeouts: number
  readonly firstError: string | undefined
  readonly peakConnections: number
  /** The untimed pass over every tenant (ours, hyperconn-pg): requests that made it before its limit. */
  readonly pass: { readonly completed: number; readonly errors: number; readonly ms: number } | undefined
  /** Ours: (heap after the pass − heap before) / tenants first cached by the pass, both after global.gc(). */
  readonly heapPerTenant: number | undefined
}

export interface ScaleCell {
  readonly tenants: number
  readonly distribution: Distribution
  readonly rounds: Readonly<Record<ContenderId, readonly ScaleRound[]>>
}

/** Figures of the chart, in results.json too: medians over rounds (peak connections: the highest). */
export interface ScaleChartData {
  readonly sizes: readonly number[]
  readonly maxConnections: number
  readonly points: ReadonlyArray<{
    readonly tenants: number
    readonly distribution: Distribution
    readonly contender: ContenderId
    readonly perSecond: number
    readonly peakConnections: number
  }>
}

/**
 * Schema-per-tenant at scale: N tenants (100, 1,000, 10,000) in one database, each a schema
 * `org_<i>` with a small `items` table, and secrets in hyperconn-pg's layout that differ only in
 * `options=-c search_path=org_<i>`. 40 workers send one primary-key SELECT per request, round-robin
 * over all tenants or Zipf-skewed (s = 1.1), and check that the row names the asking tenant.
 *
 * - ours: createRegistry() with default options, `registry.tenant(orgId, 'app').query()`;
 * - raw: ONE pg.Pool (max 20) that runs `SET search_path TO org_<i>` and then the SELECT per checkout;
 * - hyperconn-pg with its defaults: a pool per tenant (pg's max 10, idle clients kept 10 s), no cap on
 *   pools or connections; at 1,000+ tenants it runs into max_connections and its requests fail.
 *
 * Every round builds each contender afresh, warms it, measures it and closes it before the next one
 * starts, so no contender's idle connections eat into another's share of max_connections (100).
 */
export const scale: Scenario = {
  id: 'scale',
  title: '7. Scale',
  async run({ env, smoke }) {
    const plan = smoke ? SMOKE : FULL
    const largest = Math.max(...plan.sizes)
    const orgIds = Array.from({ length: largest }, (_, i) => schemaOf(i))
    const secretTexts = new Map(orgIds.map((orgId) => [`${PROJECT}-${orgId}`, secretText(env.tenantUrl, orgId)]))
    // One source for every registry of the scenario, built before any heap baseline.
    const secrets = staticSecrets(Object.fromEntries(secretTexts))
    const gc = (globalThis as { gc?: () => void }).gc

    const builders: Record<ContenderId, () => Promise<Contender>> = {
      ours: async () => ours(secrets, orgIds),
      raw: async () => raw(env),
      'hyperconn-pg': () => hyperconnPg(secretTexts, orgIds),
    }
    const cells: ScaleCell[] = []
    const seeding: Array<{ tenants: number; created: number; ms: number }> = []
    for (const tenants of plan.sizes) {
      seeding.push({ tenants, ...(await ensureScaleSchemas(env, tenants)) })
      const zipf = zipfSequence(tenants, ZIPF_S, ZIPF_SEED, ZIPF_DRAWS)
      const traffic: Record<Distribution, (seq: number) => number> = {
        'round-robin': (seq) => seq % tenants,
        zipf: (seq) => zipf[seq % ZIPF_DRAWS] as number,
      }
      for (const distribution of DISTRIBUTIONS) {
        const round = (id: ContenderId) => () =>
          measureRound(env, plan, { id, build: builders[id], tenants, orgIds, pick: traffic[distribution], gc })
        const rounds = await alternateEach(plan.rounds, {
          ours: round('ours'),
          raw: round('raw'),
          'hyperconn-pg': round('hyperconn-pg'),
        })
        cells.push({ tenants, distribution, rounds })
      }
    }

    const oursErrors = sum(cells, 'ours', 'errors')
    const oursCrossTenant = sum(cells, 'ours', 'crossTenant')
    const oursPassErrors = cells.reduce((total, cell) => total + cell.rounds.ours.reduce((s, r) => s + (r.pass?.errors ?? 0), 0), 0)
    // A wrong tenant's row always fails the scenario; any failed request of ours fails the smoke run (CI).
    if (oursCrossTenant > 0 || (smoke && oursErrors + oursPassErrors > 0)) {
      const first = cells.flatMap((cell) => cell.rounds.ours).find((r) => r.errors > 0)?.firstError
      throw new Error(
        `scale: ${oursCrossTenant} of our reads returned another tenant's row; ${oursErrors} measured and ${oursPassErrors} warm-up requests failed (first: ${first})`,
      )
    }

    const rows: ResultRow[] = []
    for (const cell of cells) rows.push(...throughputRows(this.title, cell))
    for (const tenants of plan.sizes) rows.push(heapRow(this.title, tenants, cells))
    rows.push({
      scenario: this.title,
      metric: 'failed requests / cross-tenant rows, all sizes and distributions',
      unit: 'requests',
      better: 'lower',
      ours: oursErrors,
      baseline: 'hyperconn-pg',
      theirs: sum(cells, 'hyperconn-pg', 'errors'),
      ratio: undefined,
      target: { text: `ours 0 / 0 (got ${oursErrors} / ${oursCrossTenant})`, met: oursErrors === 0 && oursCrossTenant === 0 },
    })

    const chart: ScaleChartData = {
      sizes: plan.sizes,
      maxConnections: env.maxConnections,
      points: cells.flatMap((cell) =>
        CONTENDERS.map((contender) => ({
          tenants: cell.tenants,
          distribution: cell.distribution,
          contender,
          perSecond: median(cell.rounds[contender].map((r) => r.perSecond)),
          peakConnections: Math.max(...cell.rounds[contender].map((r) => r.peakConnections)),
        })),
      ),
    }
    return {
      id: this.id,
      title: this.title,
      rows,
      notes: [
        `${WORKERS} workers, one primary-key SELECT per request checked against the asking tenant; ${plan.rounds} round(s) of ${plan.windowMs / 1000} s per contender, in the order ours → raw → hyperconn-pg, each built, warmed (${plan.jitWarmMs} ms on ${WARM_TENANTS} tenants; ours then one pass over all tenants, hyperconn-pg the same pass cut at ${plan.theirPassLimitMs / 1000} s), measured and closed within its round; server max_connections ${env.maxConnections}`,
        'ours: createRegistry({ project, services: [\'app\'], secrets: staticSecrets(…) }) with default options; raw pg: one pg.Pool (max 20), `SET search_path TO org_<i>` + the SELECT per checkout; hyperconn-pg 1.0.1 with its defaults (pg.Pool per tenant, max 10, idle 10 s, no maxPools), secrets answered from memory, a no-op pool \'error\' listener added so it cannot crash the run',
        `Zipf s = ${ZIPF_S}, seeded; hottest 1 % of tenants get ${plan.sizes.map((n) => `${(topShare(zipfSequence(n, ZIPF_S, ZIPF_SEED, ZIPF_DRAWS), Math.max(1, Math.round(n / 100))) * 100).toFixed(0)} %`).join(' / ')} of requests at ${plan.sizes.map((n) => n.toLocaleString('en-US')).join(' / ')} tenants`,
        ...cells.map(cellNote),
        `heap per cached tenant: global.gc() before and after one pass over every tenant (${WARM_TENANTS} already warm), heapUsed delta / tenants first cached; measured in the bench process, so code compiled during the pass is included (it weighs most at 100 tenants)`,
        `schemas: ${seeding.map((s) => `${s.created.toLocaleString('en-US')} created in ${(s.ms / 1000).toFixed(1)} s`).join(', ')} (6 sessions, 200 per transaction)`,
        ...(smoke ? [] : ['![Throughput and peak server connections against tenant count](scale-chart.svg)']),
      ],
      details: { plan, workers: WORKERS, rawPoolMax: RAW_POOL_MAX, zipfS: ZIPF_S, zipfSeed: ZIPF_SEED, seeding, cells, chart },
    }
  },
}

interface RoundInput {
  readonly id: ContenderId
  readonly build: () => Promise<Contender>
  readonly tenants: number
  readonly orgIds: readonly string[]
  readonly pick: (seq: number) => number
  readonly gc: (() => void) | undefined
}

async function measureRound(env: BenchEnv, plan: Plan, input: RoundInput): Promise<ScaleRound> {
  const work = async (): Promise<ScaleRound> => {
    const contender = await input.build()
    try {
      const counters = { crossTenant: 0, timeouts: 0 }
      const request = (tenant: number, seq: number) => checkedRead(contender, input.orgIds, tenant, seq, counters)
      const warmSet = Math.min(WARM_TENANTS, input.tenants)
      await runForDuration(WORKERS, plan.jitWarmMs, (seq) => request(seq % warmSet, seq))

      let pass: ScaleRound['pass']
      let heapPerTenant: number | undefined
      if (input.id !== 'raw') {
        // Raw pg keeps nothing per tenant: a pass would only repeat its warm-up.
        let before: number | undefined
        if (input.id === 'ours' && input.gc !== undefined) {
          // Settle first: right after the warm-up, collections and one more round over the warm tenants
          // still free a few hundred KB (seen when nothing new is cached), which would count against the pass.
          await heapUsed(input.gc)
          await forRangeWithin(warmSet, WORKERS, plan.oursPassLimitMs, (tenant) => request(tenant, tenant))
          before = await heapUsed(input.gc)
        }
        const limit = input.id === 'ours' ? plan.oursPassLimitMs : plan.theirPassLimitMs
        const run = await forRangeWithin(input.tenants, WORKERS, limit, (tenant) => request(tenant, tenant))
        pass = { completed: run.completed, errors: run.errors, ms: run.elapsedMs }
        const after = input.id === 'ours' ? await heapUsed(input.gc) : undefined
        const cached = input.tenants - warmSet
        if (before !== undefined && after !== undefined && cached > 0 && run.completed === input.tenants) {
          heapPerTenant = (after - before) / cached
        }
      }

      counters.timeouts = 0
      const monitor = monitorConnections(env, 50)
      let run: WorkerRun
      try {
        run = await runForDuration(WORKERS, plan.windowMs, (seq) => request(input.pick(seq), seq))
      } finally {
        await monitor.stop()
      }
      return {
        requests: run.completed,
        perSecond: (run.completed / run.elapsedMs) * 1000,
        errors: run.errors,
        crossTenant: counters.crossTenant,
        timeouts: counters.timeouts,
        firstError: run.firstError,
        peakConnections: await monitor.stop(),
        pass,
        heapPerTenant,
      }
    } finally {
      await contender.close()
      await env.waitForNoConnections(30_000)
    }
  }
  // hyperconn-pg logs every getConnection; everything it does runs with console.log muted.
  return input.id === 'hyperconn-pg' ? quietly(work) : work()
}

class CrossTenantError extends Error {
  override readonly name = 'CrossTenantError'
}

class DeadlineError extends Error {
  override readonly name = 'DeadlineError'
}

async function checkedRead(
  contender: Contender,
  orgIds: readonly string[],
  tenant: number,
  seq: number,
  counters: { crossTenant: number; timeouts: number },
): Promise<void> {
  const expected = orgIds[tenant] as string
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      counters.timeouts++
      reject(new DeadlineError(`no answer within ${REQUEST_DEADLINE_MS} ms`))
    }, REQUEST_DEADLINE_MS)
  })
  let org: string | undefined
  try {
    org = await Promise.race([contender.read(tenant, 1 + (seq % ROWS_PER_TENANT)), deadline])
  } finally {
    clearTimeout(timer)
  }
  if (org !== expected) {
    counters.crossTenant++
    throw new CrossTenantError(`tenant ${expected} got a row of ${org ?? '(no row)'}`)
  }
}

async function heapUsed(gc: (() => void) | undefined): Promise<number | undefined> {
  if (gc === undefined) return undefined
  // Several passes: the first may only promote survivors, weak callbacks need another, and V8 flushes
  // the bytecode of functions unused for a few full GCs (the previous contender's, the seeding's): done
  // here, so it is not subtracted from the pass. The event loop turns in between, so close callbacks of
  // the previous contender's sockets and finalizers can run.
  for (let i = 0; i < GC_PASSES; i++) {
    gc()
    await new Promise((resolve) => setImmediate(resolve))
  }
  gc()
  return process.memoryUsage().heapUsed
}

/** The seed layout: secret `${project}-${orgId}` = { "app-postgresql": URL whose options set the tenant's search_path }. */
function secretText(tenantUrl: string, orgId: string): string {
  const url = `${tenantUrl}${tenantUrl.includes('?') ? '&' : '?'}options=-c%20search_path%3D${orgId}`
  return JSON.stringify({ [`${SCALE_SERVICE}-postgresql`]: url })
}

function ours(secrets: SecretSource, orgIds: readonly string[]): Contender {
  const registry = createRegistry({ project: PROJECT, services: [SCALE_SERVICE], secrets })
  return {
    async read(tenant, id) {
      const result = await registry.tenant(orgIds[tenant] as string, SCALE_SERVICE).query<{ org: string }>(SELECT, [id])
      return result.rows[0]?.org
    },
    close: () => registry.close(),
  }
}

function raw(env: BenchEnv): Contender {
  const pool = new pg.Pool({ ...poolOptions(RAW_POOL_MAX), connectionString: env.tenantUrl })
  pool.on('error', () => {}) // a backend ended while idle; nothing to report
  return {
    async read(tenant, id) {
      const client = await pool.connect()
      try {
        await client.query(`SET search_path TO ${schemaOf(tenant)}`)
        const result = await client.query<{ org: string }>(SELECT, [id])
        client.release()
        return result.rows[0]?.org
      } catch (error) {
        client.release(error instanceof Error ? error : true)
        throw error
      }
    },
    close: () => pool.end(),
  }
}

async function hyperconnPg(secretTexts: ReadonlyMap<string, string>, orgIds: readonly string[]): Promise<Contender> {
  const manager = await createHyperconnPg({
    service: SCALE_SERVICE,
    // Parsed per lookup, as its SDK path does; undefined → its own "Secrets not found" error.
    secretsFromMemory: (name) => {
      const text = secretTexts.get(name)
      return text === undefined ? undefined : (JSON.parse(text) as unknown)
    },
    guardPoolErrors: true,
  })
  return {
    async read(tenant, id) {
      const pool = await manager.getConnection(orgIds[tenant] as string)
      const result = await pool.query<{ org: string }>(SELECT, [id])
      return result.rows[0]?.org
    },
    close: () => manager.close(),
  }
}

function sum(cells: readonly ScaleCell[], contender: ContenderId, field: 'errors' | 'crossTenant'): number {
  return cells.reduce((total, cell) => total + cell.rounds[contender].reduce((s, r) => s + r[field], 0), 0)
}

const count = (value: number) => value.toLocaleString('en-US')

const label = (cell: Pick<ScaleCell, 'tenants' | 'distribution'>) =>
  `${cell.tenants.toLocaleString('en-US')} tenants, ${cell.distribution === 'zipf' ? `Zipf s=${ZIPF_S}` : 'round-robin'}`

function throughputRows(scenario: string, cell: ScaleCell): ResultRow[] {
  const perSecond = (id: ContenderId) => cell.rounds[id].map((r) => r.perSecond)
  const target = cell.distribution === 'zipf' ? TARGET_RAW_ZIPF : TARGET_RAW_ROUND_ROBIN
  const vsRaw: RatioSummary = ratios(perSecond('ours'), perSecond('raw'))
  return [
    {
      scenario,
      metric: `${label(cell)}, ${WORKERS} workers`,
      unit: 'req/s',
      better: 'higher',
      ours: median(perSecond('ours')),
      baseline: `raw pg (1 pool of ${RAW_POOL_MAX}, SET search_path)`,
      theirs: median(perSecond('raw')),
      ratio: vsRaw,
      target: { text: `ratio ≥ ${target.toFixed(1)}`, met: vsRaw.median >= target },
    },
    {
      scenario,
      metric: `${label(cell)}, ${WORKERS} workers`,
      unit: 'req/s',
      better: 'higher',
      ours: median(perSecond('ours')),
      baseline: 'hyperconn-pg (defaults)',
      theirs: median(perSecond('hyperconn-pg')),
      ratio: ratios(perSecond('ours'), perSecond('hyperconn-pg')),
      target: undefined,
    },
  ]
}

function heapRow(scenario: string, tenants: number, cells: readonly ScaleCell[]): ResultRow {
  const samples = cells
    .filter((cell) => cell.tenants === tenants)
    .flatMap((cell) => cell.rounds.ours.map((r) => r.heapPerTenant))
    .filter((value): value is number => value !== undefined)
  const value = samples.length > 0 ? median(samples) : Number.NaN
  return {
    scenario,
    metric: `heap per idle cached tenant, ${tenants.toLocaleString('en-US')} tenants (median of ${samples.length})`,
    unit: 'bytes',
    better: 'lower',
    ours: value,
    baseline: '—',
    theirs: undefined,
    ratio: undefined,
    target: tenants === TARGET_HEAP_AT ? { text: `< ${TARGET_HEAP_BYTES.toLocaleString('en-US')} bytes`, met: value < TARGET_HEAP_BYTES } : undefined,
  }
}

function cellNote(cell: ScaleCell): string {
  const each = (figure: (id: ContenderId) => string) => CONTENDERS.map((id) => `${id} ${figure(id)}`).join(' · ')
  const rounds = (id: ContenderId) => cell.rounds[id]
  const total = (id: ContenderId, field: 'requests' | 'errors' | 'crossTenant' | 'timeouts') => rounds(id).reduce((s, r) => s + r[field], 0)
  const failures = each((id) => {
    const errors = total(id, 'errors')
    return errors === 0 ? '0' : `${count(errors)} of ${count(errors + total(id, 'requests'))}`
  })
  const firstErrors = CONTENDERS.map((id) => [id, rounds(id).find((r) => r.firstError !== undefined)?.firstError] as const)
    .filter(([, message]) => message !== undefined)
    .map(([id, message]) => `${id}: ${message}`)
  const cutShort = (['ours', 'hyperconn-pg'] as const).filter((id) =>
    rounds(id).some((r) => r.pass !== undefined && r.pass.completed + r.pass.errors < cell.tenants),
  )
  return [
    `${label(cell)}: peak connections ${each((id) => String(Math.max(...rounds(id).map((r) => r.peakConnections))))}`,
    `failed requests ${failures}`,
    `cross-tenant rows (whole rounds) ${each((id) => String(total(id, 'crossTenant')))}`,
    `timeouts ${each((id) => String(total(id, 'timeouts')))}`,
    ...(cutShort.length > 0 ? [`pass over all tenants cut short: ${cutShort.join(', ')}`] : []),
    ...(firstErrors.length > 0 ? [`first errors: ${firstErrors.join('; ')}`] : []),
  ].join('; ')
}

const COLORS: Record<ContenderId, string> = { ours: '#1f6feb', raw: '#6e7781', 'hyperconn-pg': '#cf222e' }
const DASH: Record<Distribution, string | undefined> = { 'round-robin': undefined, zipf: '7 4' }

/** bench/scale-chart.svg: req/s and peak server connections against tenant count, one line per contender and distribution. */
export function scaleChartSvg(result: Pick<ScenarioResult, 'details'>): string | undefined {
  const chart = result.details.chart as ScaleChartData | undefined
  if (chart === undefined || chart.points.length === 0) return undefined
  // Drawn in reverse, so ours lies on top where lines coincide (e.g. at the connection limit).
  const series = (figure: 'perSecond' | 'peakConnections') =>
    [...CONTENDERS].reverse().flatMap((contender) =>
      DISTRIBUTIONS.map((distribution) => ({
        label: `${contender}, ${distribution}`,
        color: COLORS[contender],
        ...(DASH[distribution] === undefined ? {} : { dash: DASH[distribution] }),
        points: chart.sizes.map((tenants) => ({
          x: tenants,
          y: chart.points.find((p) => p.tenants === tenants && p.distribution === distribution && p.contender === contender)?.[figure],
        })),
      })),
    )
  return lineChartSvg({
    title: 'Schema-per-tenant at scale: one primary-key SELECT per request, 40 workers',
    subtitle: `Median req/s and highest server connection count over rounds; tenant count on a log axis. Solid: round-robin, dashed: Zipf s=${ZIPF_S}.`,
    xLabel: 'tenants (schemas, log scale)',
    xTicks: chart.sizes,
    panels: [
      { title: 'Throughput', yLabel: 'requests / s', series: series('perSecond') },
      {
        title: 'Peak server connections',
        yLabel: 'connections to the bench database',
        series: series('peakConnections'),
        guides: [{ y: chart.maxConnections, label: `max_connections ${chart.maxConnections}` }],
      },
    ],
    // One row per distribution, one column per contender.
    legend: DISTRIBUTIONS.flatMap((distribution) =>
      CONTENDERS.map((contender) => ({
        label: `${contender === 'raw' ? 'raw pg' : contender}, ${distribution === 'zipf' ? 'Zipf' : 'round-robin'}`,
        color: COLORS[contender],
        ...(DASH[distribution] === undefined ? {} : { dash: DASH[distribution] }),
      })),
    ),
  })
}
