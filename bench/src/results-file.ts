import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { ScenarioResult } from './scenario-types.js'

const RESULTS_MD = fileURLToPath(new URL('../RESULTS.md', import.meta.url))
/** Everything below this line in RESULTS.md is hand-written analysis and survives a re-record. */
export const ANALYSIS_MARKER = '<!-- hand-written analysis below: kept by `pnpm bench --record` -->'

export function scenarioNotes(results: readonly ScenarioResult[]): string {
  return results
    .filter((result) => result.notes.length > 0)
    .map((result) => [`**${result.title}**`, ...result.notes.map((note) => `- ${note}`)].join('\n'))
    .join('\n\n')
}

/** bench/RESULTS.md: the figures of one full run, the machine it ran on, and the kept analysis. */
export function resultsMarkdownFile(table: string, machine: string, results: readonly ScenarioResult[]): string {
  let analysis = ''
  try {
    const existing = readFileSync(RESULTS_MD, 'utf8')
    const at = existing.indexOf(ANALYSIS_MARKER)
    if (at >= 0) analysis = existing.slice(at + ANALYSIS_MARKER.length).trim()
  } catch {
    // first recording
  }
  return [
    '# Benchmark results',
    '',
    'Recorded with `pnpm bench --record` (see README.md for what each scenario measures). ↓ = lower is better, ↑ = higher is better.',
    '',
    machine,
    '',
    table,
    '',
    scenarioNotes(results),
    '',
    ANALYSIS_MARKER,
    '',
    analysis,
    '',
  ].join('\n')
}
