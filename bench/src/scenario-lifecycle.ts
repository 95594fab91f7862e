import { fileURLToPath } from 'node:url'
import type { Clock, Registry, TimerHandle } from '@hyperconn/core'
import { interleaveEach } from './interleave.js'
import { PROBE_CONFIGS } from './lifecycle-modes.js'
import type { LifecycleRound, ProbeConfig, ProbeKind, ProbeSlot } from './lifecycle-modes.js'
import { createOurRegistry, localAwsSecrets } from './ours-registry.js'
import { ProbeProcess } from './probe-process.js'
import { median, ratios } from './ratio-summary.js'
import type { ResultRow, Scenario } from './scenario-types.js'

const PROBE = fileURLToPath(new URL('./lifecycle-probe.ts', import.meta.url))

// Part 1: the load each child process runs.
const TENANTS = 4
const WORKERS = 8
const POOL_MAX = 8
const BATCH = 10

// Part 2: how long a connection "sits idle" before an idle call (the stepped clock jumps that far).
const IDLE_MS = 2_000
const DAY_MS = 86_400_000
const NEVER = Number.MAX_SAFE_INTEGER

/**
 * Real time plus an offset the scenario advances: a connection sits idle for `IDLE_MS` without anyone
 * sleeping. Timers run in real time (only the registry's reading of "now" jumps).
 */
class SteppedClock implements Clock {
  #offsetMs = 0
  advance(ms: number): void {
    this.#offsetMs += ms
  }
  now(): number {
    return Date.now() + this.#offsetMs
  }
  setTimeout(fn: () => void, ms: number): TimerHandle {
    return setTimeout(fn, ms)
  }
  clearTimeout(handle: TimerHandle): void {
    clearTimeout(handle as ReturnType<typeof setTimeout>)
  }
  setInterval(fn: () => void, ms: number): TimerHandle {
    return setInterval(fn, ms)
  }
  clearInterval(handle: TimerHandle): void {
    clearInterval(handle as ReturnType<typeof setInterval>)
  }
  random(): number {
    return Math.random()
  }
}

/** One lifecycle-probe.ts child: started, warm, then one timed round per `run(config, ms)`. */
class Probe {
  readonly kind: ProbeKind
  readonly #process: ProbeProcess

  constructor(kind: ProbeKind, tenantUrl: string, warmupMs: number) {
    this.kind = kind
    this.#process = new ProbeProcess(`lifecycle probe (${kind})`, PROBE, [kind, TENANTS, WORKERS, POOL_MAX, BATCH, warmupMs], tenantUrl)
  }

  ready(): Promise<void> {
    return this.#process.ready()
  }

  async run(config: ProbeConfig, ms: number): Promise<LifecycleRound> {
    const round = await this.#process.ask<LifecycleRound>(`${config} ${ms}`)
    if (round.errors > 0 || round.leaks > 0)
      throw new Error(`lifecycle probe (${this.kind}, ${config}): ${round.errors} failed batches (${round.firstError}), ${round.leaks} leaks`)
    return round
  }

  exit(): Promise<void> {
    return this.#process.exit()
  }
}

const perSecond = (r: LifecycleRound) => (r.queries / r.elapsedMs) * 1000
const cpuPerQuery = (r: LifecycleRound) => r.cpuUs / r.queries

/**
 * The connection lifecycle at the lease point (leak detection, hooks, `registry.scope`, validation of
 * idle connections), each figure a ratio against the same thing without it, in the same run.
 *
 * Part 1, hot path: two child processes (lifecycle-probe.ts, see lifecycle-modes.ts), each configuration on
 * a registry of its own; each round runs every configuration once for `roundMs`, one at a time, the order
 * rotated by one every round; ratios are against the defaults of the same process and round.
 * Part 2, validation (run first): three registries in this process, one tenant each, calls interleaved one
 * by one, idleness simulated with an injected clock.
 */
export const lifecycle: Scenario = {
  id: 'lifecycle',
  title: '8. Connection lifecycle',
  async run({ env, smoke }) {
    const [org] = env.tenants('life', 1) as [string]

    // ---- Part 2: validation policy (in this process: no child, no scope entered) ----
    const clocks = { every: new SteppedClock(), default: new SteppedClock(), never: new SteppedClock() }
    const registries: Registry[] = []
    const validating = (clock: SteppedClock, validateAfterIdleMs: number | undefined) => {
      // maxLifetimeSeconds 0, secret TTL and idle TTL of a day: the jumping clock must expire nothing else.
      const registry = createOurRegistry(localAwsSecrets(env), {
        poolMax: 2,
        pool: { maxLifetimeSeconds: 0, ...(validateAfterIdleMs === undefined ? {} : { validateAfterIdleMs }) },
        secretCacheTtlMs: DAY_MS,
        eviction: { idleTtlMs: DAY_MS },
        clock,
      })
      registries.push(registry)
      return registry.tenant(org)
    }
    const probes: Probe[] = []
    try {
      const tenants = { every: validating(clocks.every, 0), default: validating(clocks.default, undefined), never: validating(clocks.never, NEVER) }
      const names = ['every', 'default', 'never'] as const
      type Name = (typeof names)[number]
      const idle = (name: Name) => () => {
        clocks[name].advance(IDLE_MS)
        return tenants[name].query('SELECT 1')
      }
      const busy = (name: Name) => () => tenants[name].query('SELECT 1')
      const calls = Object.fromEntries(names.flatMap((name) => [[`idle-${name}`, idle(name)], [`busy-${name}`, busy(name)]])) as Record<
        `${'idle' | 'busy'}-${Name}`,
        () => Promise<unknown>
      >
      const validation = await interleaveEach(calls, smoke ? { rounds: 1, pairs: 5, warmupPairs: 2 } : { rounds: 8, pairs: 150, warmupPairs: 50 })

      // ---- Part 1: hot path, two child processes (plain, scoped), one configuration at a time ----
      const kinds = Object.keys(PROBE_CONFIGS) as ProbeKind[]
      for (const kind of kinds) probes.push(new Probe(kind, env.tenantUrl, smoke ? 20 : 300))
      await Promise.all(probes.map((probe) => probe.ready()))
      const slots = probes.flatMap((probe) => PROBE_CONFIGS[probe.kind].map((config) => ({ probe, config, slot: `${probe.kind}.${config}` as ProbeSlot })))
      const roundMs = smoke ? 100 : 300
      for (const { probe, config } of slots) await probe.run(config, smoke ? 50 : 300) // untimed: JIT, pools
      const rounds = Object.fromEntries(slots.map(({ slot }) => [slot, [] as LifecycleRound[]])) as Record<ProbeSlot, LifecycleRound[]>
      const roundCount = smoke ? 1 : 12
      for (let round = 0; round < roundCount; round++) {
        for (let j = 0; j < slots.length; j++) {
          const { probe, config, slot } = slots[(round + j) % slots.length] as (typeof slots)[number]
          rounds[slot].push(await probe.run(config, roundMs))
        }
      }
      await Promise.all(probes.splice(0).map((probe) => probe.exit()))

      // ---- Rows ----
      const title = this.title
      const load = `${TENANTS} tenants, ${WORKERS} workers, batches of ${BATCH} × SELECT 1`
      const hotRows = (slot: ProbeSlot, versus: ProbeSlot, what: string, baseline: string): ResultRow[] => [
        {
          scenario: title,
          metric: `${what} (${load})`,
          unit: 'queries/s',
          better: 'higher',
          ours: median(rounds[slot].map(perSecond)),
          baseline,
          theirs: median(rounds[versus].map(perSecond)),
          ratio: ratios(rounds[slot].map(perSecond), rounds[versus].map(perSecond)),
          target: undefined,
        },
        {
          scenario: title,
          metric: `${what}, Node CPU per query (one acquire each)`,
          unit: 'CPU µs/query',
          better: 'lower',
          ours: median(rounds[slot].map(cpuPerQuery)),
          baseline,
          theirs: median(rounds[versus].map(cpuPerQuery)),
          ratio: ratios(rounds[slot].map(cpuPerQuery), rounds[versus].map(cpuPerQuery)),
          target: undefined,
        },
      ]
      const neverLabel = 'validateAfterIdleMs MAX_SAFE_INTEGER (never validated)'
      const validationRows = (kind: 'idle' | 'busy', name: 'every' | 'default', what: string): ResultRow => {
        // Wall time only: the round trip is what a validation adds (per-call CPU is in results.json).
        const ours = validation[`${kind}-${name}`].map((f) => f.wallUs)
        const theirs = validation[`${kind}-never`].map((f) => f.wallUs)
        return {
          scenario: title,
          metric: what,
          unit: 'µs/query',
          better: 'lower',
          ours: median(ours),
          baseline: neverLabel,
          theirs: median(theirs),
          ratio: ratios(ours, theirs),
          target: undefined,
        }
      }
      const idleS = IDLE_MS / 1000
      const rows: ResultRow[] = [
        ...hotRows('plain.leak', 'plain.base', 'leakDetection on (thresholdMs 60000)', 'leakDetection off (no stack captured)'),
        ...hotRows('plain.hooks', 'plain.base', 'no-op async onClaim + onRelease', 'no hooks'),
        ...hotRows('scoped.scope', 'scoped.base', 'registry.scope around each batch', 'no scope, same process'),
        ...hotRows('scoped.base', 'plain.base', 'no scope, in a process that entered one registry.scope (diagnostic, separate processes)', 'a process that never entered one'),
        validationRows('idle', 'default', `reuse after ${idleS} s idle, validateAfterIdleMs 1000 (default): validated`),
        validationRows('idle', 'every', `reuse after ${idleS} s idle, validateAfterIdleMs 0: validated`),
        validationRows('busy', 'default', 'busy reuse (back to back), validateAfterIdleMs 1000 (default): not validated'),
        validationRows('busy', 'every', 'busy reuse (back to back), validateAfterIdleMs 0: validated'),
        ...hotRows('plain.validate0', 'plain.base', 'validateAfterIdleMs 0 (validate every reuse)', 'validateAfterIdleMs 1000 (default)'),
      ]

      const validationCost = median(validation['idle-default'].map((f) => f.wallUs)) - median(validation['idle-never'].map((f) => f.wallUs))
      const medianRatio = (slot: ProbeSlot, versus: ProbeSlot = 'plain.base') => ratios(rounds[slot].map(perSecond), rounds[versus].map(perSecond)).median.toFixed(3)
      // Extra Node CPU per acquire, median over rounds of the same-round difference.
      const extraCpu = (slot: ProbeSlot, versus: ProbeSlot = 'plain.base') =>
        median(rounds[slot].map((r, i) => cpuPerQuery(r) - cpuPerQuery(rounds[versus][i] as LifecycleRound))).toFixed(1)
      return {
        id: this.id,
        title,
        rows,
        notes: [
          '"leakDetection off" captures no stack: it is the same code path as before the feature (LeasePoint.acquire creates its `new Error()` only when `this.#watch !== undefined`, i.e. with leakDetection set); "on" captures one per acquire and tracks the checkout',
          `hot path: two child processes (lifecycle-probe.ts): "plain" runs the defaults, leakDetection, hooks and validateAfterIdleMs 0, each on a registry of its own; "scoped" entered one registry.scope at start and runs its registry with and without a scope per batch. ${TENANTS} tenants on one database, pool max ${POOL_MAX}, ${WORKERS} workers, batches of ${BATCH} sequential \`tenant.query('SELECT 1')\`, one configuration at a time; ${roundCount} round(s) of ${roundMs} ms per configuration, order rotated every round; ratios against the defaults of the same process and round (the diagnostic row compares the two processes)`,
          `throughput × the defaults: leakDetection on ${medianRatio('plain.leak')}, hooks ${medianRatio('plain.hooks')}, scope ${medianRatio('scoped.scope', 'scoped.base')} (same process), validateAfterIdleMs 0 ${medianRatio('plain.validate0')}`,
          `extra Node CPU per acquire: leakDetection on ${extraCpu('plain.leak')} µs; hooks ${extraCpu('plain.hooks')} µs; scope ${extraCpu('scoped.scope', 'scoped.base')} µs (per query, one scope per ${BATCH} queries); having entered any scope (other process) ${extraCpu('scoped.base')} µs; validateAfterIdleMs 0 ${extraCpu('plain.validate0')} µs`,
          'the first scope (or transaction: any AsyncLocalStorage.run()) turns on, in Node 20, a promise hook for the whole process, and registry.scope then costs one AsyncLocalStorage lookup per acquire; hence the two processes',
          `validation: three registries (pool max 2, one tenant, validateAfterIdleMs 0 / 1000 / MAX_SAFE_INTEGER), their calls interleaved one by one; an idle call first advances that registry's injected clock by ${IDLE_MS} ms (no sleep); maxLifetimeSeconds 0 and secret and idle TTLs of a day on all three, so the jumps expire nothing else; one validation (an empty query round trip) cost ${validationCost.toFixed(0)} µs here`,
        ],
        details: { tenants: TENANTS, workers: WORKERS, poolMax: POOL_MAX, batch: BATCH, roundMs, rounds, idleMs: IDLE_MS, validation },
      }
    } finally {
      await Promise.all(probes.map((probe) => probe.exit()))
      for (const registry of registries) await registry.close()
      await env.waitForNoConnections()
    }
  },
}
