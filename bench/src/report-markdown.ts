import type { MachineInfo } from './machine-info.js'
import type { ResultRow, ScenarioResult } from './scenario-types.js'

export interface FailedScenario {
  readonly id: string
  readonly title: string
  readonly error: string
}

/** Significant digits for figures, fixed decimals for ratios: the table is read in a terminal and in Markdown. */
export function formatNumber(value: number): string {
  if (!Number.isFinite(value)) return String(value)
  if (value === 0) return '0'
  const abs = Math.abs(value)
  if (abs >= 1000) return Math.round(value).toLocaleString('en-US')
  if (abs >= 100) return value.toFixed(0)
  if (abs >= 10) return value.toFixed(1)
  if (abs >= 1) return value.toFixed(2)
  return value.toPrecision(2)
}

function formatRatio(value: number): string {
  return value >= 10 ? value.toFixed(1) : value.toFixed(3)
}

function row(r: ResultRow): string {
  const theirs = r.theirs === undefined ? '—' : formatNumber(r.theirs)
  const ratio =
    r.ratio === undefined
      ? '—'
      : `${formatRatio(r.ratio.min)} · **${formatRatio(r.ratio.median)}** · ${formatRatio(r.ratio.max)}`
  const better = r.better === 'lower' ? '↓' : '↑'
  const target = r.target === undefined ? '—' : `${r.target.text} ${r.target.met ? '✅' : '❌'}`
  const metric = r.note === undefined ? r.metric : `${r.metric} (${r.note})`
  return `| ${r.scenario} | ${metric} | ${r.unit} ${better} | ${formatNumber(r.ours)} | ${r.baseline} | ${theirs} | ${ratio} | ${target} |`
}

export function markdownTable(results: readonly ScenarioResult[], failed: readonly FailedScenario[]): string {
  const lines = [
    '| Scenario | Measure | Unit | @hyperconn | Baseline | Baseline figure | Ratio ours/baseline: min · **median** · max | Target |',
    '|---|---|---|--:|---|--:|---|---|',
    ...results.flatMap((result) => result.rows.map(row)),
    ...failed.map((f) => `| ${f.title} | **failed**: ${f.error.replace(/\|/g, '\\|').split('\n')[0] ?? ''} | | | | | | |`),
  ]
  return lines.join('\n')
}

export function markdownMachine(machine: MachineInfo, totalSeconds: number, rounds: string): string {
  const load = machine.loadAverage
  return [
    `- Machine: ${machine.cpuModel}, ${machine.cores} cores, ${machine.memoryGiB} GiB RAM, ${machine.platform}`,
    `- Node ${machine.node}; run ${machine.date}; total ${totalSeconds.toFixed(0)} s`,
    `- 1-min load average: ${load.start.toFixed(2)} at start, ${load.end?.toFixed(2) ?? '?'} at end (shared machine)`,
    `- ${rounds}`,
  ].join('\n')
}
