import { writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { startBenchEnv } from './bench-env.js'
import type { BenchEnv } from './bench-env.js'
import { machineInfo, withEndLoad } from './machine-info.js'
import { markdownMachine, markdownTable } from './report-markdown.js'
import type { FailedScenario } from './report-markdown.js'
import { resultsMarkdownFile, scenarioNotes } from './results-file.js'
import { adapterOverhead } from './scenario-adapter-overhead.js'
import { churn } from './scenario-churn.js'
import { coldStart } from './scenario-cold-start.js'
import { hotPath } from './scenario-hot-path.js'
import { lifecycle } from './scenario-lifecycle.js'
import { memory } from './scenario-memory.js'
import { replicas } from './scenario-replicas.js'
import { scale, scaleChartSvg } from './scenario-scale.js'
import { sharedTransaction } from './scenario-shared-transaction.js'
import { telemetry } from './scenario-telemetry.js'
import type { Scenario, ScenarioResult } from './scenario-types.js'

const SCENARIOS: readonly Scenario[] = [hotPath, adapterOverhead, sharedTransaction, coldStart, churn, memory, scale, lifecycle, telemetry, replicas]

const ROUNDS_NOTE =
  'Each ratio is ours/baseline per round; contenders alternate (ABAB…) within one run, so both see the same machine state. ' +
  'min · median · max are over rounds.'

const { values: flags } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    only: { type: 'string' },
    record: { type: 'boolean', default: false },
  },
})

const selected = flags.only === undefined ? SCENARIOS : SCENARIOS.filter((s) => flags.only?.split(',').includes(s.id))
if (selected.length === 0) {
  console.error(`--only matched no scenario; known: ${SCENARIOS.map((s) => s.id).join(', ')}`)
  process.exit(2)
}
if (flags.record && (flags.smoke || flags.only !== undefined)) {
  console.error('--record writes RESULTS.md and needs a full run (no --smoke, no --only)')
  process.exit(2)
}

const started = performance.now()
const machine = machineInfo()
const results: ScenarioResult[] = []
const failed: FailedScenario[] = []
const log = (message: string): void => void process.stderr.write(`[bench] ${message}\n`)

log(`${flags.smoke ? 'smoke' : 'full'} run: ${selected.map((s) => s.id).join(', ')}`)
let env: BenchEnv | undefined
try {
  env = await startBenchEnv()
  log(`environment ready in ${((performance.now() - started) / 1000).toFixed(1)} s`)
  for (const scenario of selected) {
    const t0 = performance.now()
    try {
      const result = await scenario.run({ env, smoke: flags.smoke })
      results.push({ ...result, durationMs: performance.now() - t0 })
      log(`${scenario.title}: ${((performance.now() - t0) / 1000).toFixed(1)} s`)
    } catch (error) {
      // Keep going: one broken scenario must not hide the others' figures; the exit code reports it.
      failed.push({ id: scenario.id, title: scenario.title, error: error instanceof Error ? (error.stack ?? error.message) : String(error) })
      log(`${scenario.title} FAILED: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`)
    }
  }
} catch (error) {
  failed.push({ id: 'env', title: 'environment', error: error instanceof Error ? (error.stack ?? error.message) : String(error) })
  log(`setup FAILED: ${String(error)}`)
} finally {
  try {
    await env?.close()
  } catch (error) {
    failed.push({ id: 'teardown', title: 'teardown', error: String(error) })
    log(`teardown FAILED: ${String(error)}`)
  }
}

const totalSeconds = (performance.now() - started) / 1000
const finalMachine = withEndLoad(machine)
console.log(markdownTable(results, failed))
console.log()
console.log(markdownMachine(finalMachine, totalSeconds, ROUNDS_NOTE))
console.log()
console.log(scenarioNotes(results))

// The scale chart is drawn in smoke runs too (so CI exercises the generator) but only a full run writes it.
const scaleResult = results.find((result) => result.id === scale.id)
const chart = scaleResult === undefined ? undefined : scaleChartSvg(scaleResult)
if (chart !== undefined && !flags.smoke) {
  await writeFile(fileURLToPath(new URL('../scale-chart.svg', import.meta.url)), chart)
  log('wrote bench/scale-chart.svg')
}

const report = { mode: flags.smoke ? 'smoke' : 'full', machine: finalMachine, totalSeconds, results, failed }
await writeFile(fileURLToPath(new URL('../results.json', import.meta.url)), `${JSON.stringify(report, null, 2)}\n`)
if (flags.record) {
  await writeFile(
    fileURLToPath(new URL('../RESULTS.md', import.meta.url)),
    resultsMarkdownFile(markdownTable(results, failed), markdownMachine(finalMachine, totalSeconds, ROUNDS_NOTE), results),
  )
}
log(`done in ${totalSeconds.toFixed(1)} s${failed.length > 0 ? `; ${failed.length} failed` : ''}`)
process.exitCode = failed.length > 0 ? 1 : 0
