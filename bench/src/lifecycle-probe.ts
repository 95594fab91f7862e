/**
 * Child process of scenario-lifecycle.ts: the hot-path configurations of one kind (see
 * lifecycle-modes.ts), each with a registry of its own, in a process of their own. Configurations of
 * one process are compared with each other round by round; `plain` and `scoped` are separate
 * processes because entering an AsyncLocalStorage changes every later promise of the process.
 *
 * Usage: BENCH_TENANT_URL=… lifecycle-probe.ts <plain|scoped> <tenants> <workers> <poolMax> <batch> <warmupMs>
 * (the URL goes through the environment so its password stays out of `ps`). Prints `ready` once
 * warm, then answers each stdin line: `<config> <ms>` = run that configuration's load for that many ms
 * and print one JSON line (`LifecycleRound`); `exit` = close the registries and exit.
 *
 * Load: `workers` workers each run batches of `batch` sequential `tenant.query('SELECT 1')` of one of
 * `tenants` tenants (round-robin), back to back; one configuration at a time.
 */
import { createInterface } from 'node:readline'
import { staticSecrets } from '@hyperconn/core'
import type { Registry } from '@hyperconn/core'
import { PROJECT, SERVICE } from './bench-env.js'
import { PROBE_CONFIGS } from './lifecycle-modes.js'
import type { LifecycleRound, ProbeConfig, ProbeKind } from './lifecycle-modes.js'
import { createOurRegistry } from './ours-registry.js'
import type { OurRegistryOptions } from './ours-registry.js'
import { runForDuration } from './workers.js'

interface Config {
  readonly registry: Registry
  readonly request: (orgId: string) => Promise<void>
}

const [kindArg, tenantsArg, workersArg, poolMaxArg, batchArg, warmupArg] = process.argv.slice(2)
const tenantUrl = process.env.BENCH_TENANT_URL
const kind = (Object.keys(PROBE_CONFIGS) as ProbeKind[]).find((k) => k === kindArg)
const [tenants, workers, poolMax, batch, warmupMs] = [tenantsArg, workersArg, poolMaxArg, batchArg, warmupArg].map(Number) as [number, number, number, number, number]
if (kind === undefined || tenantUrl === undefined || !(tenants > 0 && workers > 0 && poolMax > 0 && batch > 0 && warmupMs >= 0)) {
  throw new Error('usage: BENCH_TENANT_URL=… lifecycle-probe.ts <plain|scoped> <tenants> <workers> <poolMax> <batch> <warmupMs>')
}

const orgs = Array.from({ length: tenants }, (_, i) => `life${i}`)
const secrets = staticSecrets(Object.fromEntries(orgs.map((orgId) => [`${PROJECT}-${orgId}`, { [`${SERVICE}-postgresql`]: tenantUrl }])))
const registries: Registry[] = []
const registry = (options: Partial<OurRegistryOptions> = {}): Registry => {
  const created = createOurRegistry(secrets, { poolMax, ...options })
  registries.push(created)
  return created
}
const queries = (on: Registry) => async (orgId: string) => {
  const tenant = on.tenant(orgId)
  for (let i = 0; i < batch; i++) await tenant.query('SELECT 1')
}
const plain = (on: Registry): Config => ({ registry: on, request: queries(on) })

const configs = new Map<ProbeConfig, Config>()
const base = registry()
configs.set('base', plain(base))
if (kind === 'plain') {
  configs.set('leak', plain(registry({ leakDetection: { thresholdMs: 60_000 } })))
  configs.set('hooks', plain(registry({ hooks: { onClaim: async () => {}, onRelease: async () => {} } })))
  configs.set('validate0', plain(registry({ pool: { validateAfterIdleMs: 0 } })))
} else {
  const batchOf = queries(base)
  configs.set('scope', { registry: base, request: (orgId) => base.scope(() => batchOf(orgId)) })
  // One scope now, so `base` runs in a process that has entered one, like `scope`.
  await base.scope(async () => {})
}

async function round(config: Config, ms: number): Promise<LifecycleRound> {
  const cpu = process.cpuUsage()
  const run = await runForDuration(workers, ms, (seq) => config.request(orgs[seq % orgs.length] as string))
  const used = process.cpuUsage(cpu)
  return {
    queries: run.completed * batch,
    elapsedMs: run.elapsedMs,
    cpuUs: used.user + used.system,
    errors: run.errors,
    firstError: run.firstError,
    leaks: config.registry.stats().leaks,
  }
}

// Pools, connections and the JIT; the parent still runs an untimed round of each before measuring.
for (const created of registries) await created.warm(orgs, { connections: poolMax })
for (const config of configs.values()) await round(config, warmupMs)
process.stdout.write('ready\n')

const lines = createInterface({ input: process.stdin })
for await (const line of lines) {
  const [name, ms] = line.trim().split(' ')
  if (name === 'exit') break
  const config = configs.get(name as ProbeConfig)
  if (config === undefined) throw new Error(`lifecycle probe (${kind}): unknown configuration "${name}"`)
  process.stdout.write(`${JSON.stringify(await round(config, Number(ms)))}\n`)
}
lines.close()
for (const created of registries) await created.close()
