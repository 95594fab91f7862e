import type { BenchEnv } from './bench-env.js'
import type { RatioSummary } from './ratio-summary.js'

/** Whether a smaller or a bigger figure is the better one (ns per call vs requests per second). */
export type Better = 'lower' | 'higher'

export interface Target {
  /** e.g. "ratio ≤ 0.333 (≥ 3× faster)" */
  readonly text: string
  readonly met: boolean
}

/** One line of the results table: our figure, the baseline's figure and their per-round ratio. */
export interface ResultRow {
  readonly scenario: string
  readonly metric: string
  readonly unit: string
  readonly better: Better
  /** Median over rounds. */
  readonly ours: number
  /** What we are compared with: "hyperconn-pg", "bare Drizzle", "hand-written pg". */
  readonly baseline: string
  /** Median over rounds; undefined when the baseline has no such figure. */
  readonly theirs: number | undefined
  /** ours/theirs of each round (same-run, alternating), summarised. */
  readonly ratio: RatioSummary | undefined
  readonly target: Target | undefined
  readonly note?: string
}

export interface ScenarioResult {
  readonly id: string
  readonly title: string
  readonly rows: readonly ResultRow[]
  /** Supporting facts printed under the table: secret calls, peak connections, errors. */
  readonly notes: readonly string[]
  /** Raw per-round figures and settings, for results.json. */
  readonly details: Record<string, unknown>
  readonly durationMs: number
}

export interface ScenarioOptions {
  readonly env: BenchEnv
  /** Few iterations, small sizes: proves the scenario still runs, measures nothing meaningful. */
  readonly smoke: boolean
}

export interface Scenario {
  readonly id: string
  readonly title: string
  run(options: ScenarioOptions): Promise<Omit<ScenarioResult, 'durationMs'>>
}
