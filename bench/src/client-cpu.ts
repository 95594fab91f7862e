/**
 * Diagnostic, not part of `pnpm bench`: the client-side CPU each of our layers adds, with pg's
 * network stubbed out (pg-network-stub.ts), so kernel socket time on a shared VM cannot hide a
 * few µs. Same interleaving as scenarios 2 and 3. With --profile it also writes V8 CPU profiles of
 * our side (bench/profiles/*.cpuprofile, open in Chrome DevTools) and prints the self time per
 * call of each @hyperconn function.
 *
 *   pnpm --filter @hyperconn/bench bench:client-cpu [--profile]
 *
 * Note: from source, tsx compiles our packages with esbuild's keepNames, which adds a `__name()`
 * call per closure created at runtime (~1–4 µs per query here); `pnpm build` and run
 * `tsx src/client-cpu.ts` without the @hyperconn/source condition to measure the published build.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { Session } from 'node:inspector/promises'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { createRegistry, staticSecrets } from '@hyperconn/core'
import { PROJECT, SERVICE } from './bench-env.js'
import { items, TABLE } from './bench-schema.js'
import { ourFrames } from './cpu-profile-summary.js'
import { interleave } from './interleave.js'
import type { InterleavedRound } from './interleave.js'
import { AdapterClients, BareClients, ORMS } from './orm-clients.js'
import type { ItemRow } from './orm-clients.js'
import { OrmsOnOneClient } from './orms-on-one-client.js'
import { poolOptions } from './ours-registry.js'
import { stubPgNetwork } from './pg-network-stub.js'
import { median } from './ratio-summary.js'

const { values: flags } = parseArgs({ options: { profile: { type: 'boolean', default: false } } })
stubPgNetwork()

const ORG = 'cpu1'
const TENANT_URL = 'postgresql://bench:bench@127.0.0.1:5432/bench'
const registry = createRegistry({
  project: PROJECT,
  services: [SERVICE],
  secrets: staticSecrets({ [`${PROJECT}-${ORG}`]: { [`${SERVICE}-postgresql`]: TENANT_URL } }),
  pool: poolOptions(4),
})
const ours = new AdapterClients(registry)
const bare = new BareClients(TENANT_URL, 4)
const byHand = new OrmsOnOneClient(bare.pool)
const tenant = registry.tenant(ORG, SERVICE)
const row = (name: string): ItemRow => ({ org: 'cpu', name, n: 1 })
const crossOrm = () =>
  tenant.transaction(async () => {
    await ours.drizzle(ORG).insert(items).values(row('drizzle'))
    await ours.kysely(ORG).insertInto(TABLE).values(row('kysely')).execute()
    await ours.knex(ORG)(TABLE).insert(row('knex'))
  })
const handWritten = async (): Promise<void> => {
  const client = await bare.pool.connect()
  try {
    await client.query('BEGIN')
    for (const name of ['drizzle', 'kysely', 'knex']) await client.query(`INSERT INTO ${TABLE} (org, name, n) VALUES ($1, $2, $3)`, ['cpu', name, 1])
    await client.query('COMMIT')
  } finally {
    client.release()
  }
}

const lines = [
  '| Operation | @hyperconn CPU µs | Baseline | Baseline CPU µs | Added µs | Ratio |',
  '|---|--:|---|--:|--:|--:|',
]
const report = (operation: string, baseline: string, rounds: readonly InterleavedRound[]): void => {
  const oursCpu = median(rounds.map((r) => r.oursCpuUs))
  const theirsCpu = median(rounds.map((r) => r.theirsCpuUs))
  lines.push(
    `| ${operation} | ${oursCpu.toFixed(1)} | ${baseline} | ${theirsCpu.toFixed(1)} | ${(oursCpu - theirsCpu).toFixed(1)} | ${(oursCpu / theirsCpu).toFixed(2)} |`,
  )
}

const perQuery = { rounds: 10, pairs: 2000, warmupPairs: 3000 }
for (const orm of ORMS) {
  const mine = ours.queries(orm, ORG)
  const theirs = bare.queries(orm)
  report(`${orm} PK SELECT`, `bare ${orm}`, await interleave(() => mine.selectById(1), () => theirs.selectById(1), perQuery))
  report(`${orm} INSERT`, `bare ${orm}`, await interleave(() => mine.insert(row('x')), () => theirs.insert(row('x')), perQuery))
}
const perTransaction = { rounds: 10, pairs: 500, warmupPairs: 1000 }
report('cross-ORM transaction', 'hand-written pg', await interleave(crossOrm, handWritten, perTransaction))
report('cross-ORM transaction', 'the 3 ORMs on one client by hand', await interleave(crossOrm, () => byHand.insertThree(row), perTransaction))
console.log(lines.join('\n'))

if (flags.profile) {
  const dir = fileURLToPath(new URL('../profiles/', import.meta.url))
  await mkdir(dir, { recursive: true })
  const kysely = ours.queries('Kysely', ORG)
  await profile(dir, 'kysely-select', () => kysely.selectById(1), 50_000)
  await profile(dir, 'cross-orm-transaction', crossOrm, 10_000)
}
await byHand.close()
await bare.close()
await registry.close()

async function profile(dir: string, name: string, call: () => PromiseLike<unknown>, calls: number): Promise<void> {
  const session = new Session()
  session.connect()
  await session.post('Profiler.enable')
  await session.post('Profiler.setSamplingInterval', { interval: 20 })
  await session.post('Profiler.start')
  for (let i = 0; i < calls; i++) await call()
  const { profile: result } = await session.post('Profiler.stop')
  session.disconnect()
  const file = `${dir}${name}.cpuprofile`
  await writeFile(file, JSON.stringify(result))
  const { total, frames } = ourFrames(result, calls)
  console.log(`\n${name}: ${total.toFixed(1)} µs CPU per call sampled (${file}); self time per call of our frames:`)
  for (const { frame, microsPerCall } of frames.slice(0, 15)) console.log(`  ${microsPerCall.toFixed(2).padStart(6)} µs  ${frame}`)
}
