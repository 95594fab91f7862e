import type pg from 'pg'
import { alternate } from './alternate.js'
import { SERVICE } from './bench-env.js'
import type { BenchEnv } from './bench-env.js'
import { monitorConnections } from './connection-monitor.js'
import { createHyperconnPg, quietly } from './hyperconn-pg-manager.js'
import { createOurRegistry, localAwsSecrets } from './ours-registry.js'
import { median, ratios } from './ratio-summary.js'
import type { Scenario } from './scenario-types.js'
import { forEachConcurrently } from './workers.js'

/** Both sides keep at most this many pools (ours' default), so 1,000 idle connections never pile up. */
const MAX_POOLS = 200

interface ColdRun {
  readonly wallMs: number
  readonly secretCalls: number
  readonly peakConnections: number
  readonly errors: number
  readonly firstError: string | undefined
}

interface Contender {
  getPool(orgId: string): Promise<pg.Pool>
  close(): Promise<void>
}

/**
 * The first request (pool lookup + `SELECT 1`) for each of N tenants never seen before, 50 at a
 * time: secret fetch, pool creation, one new connection each. A fresh registry / manager per round
 * makes every tenant new again. Wall time and GetSecretValue calls per contender.
 */
export const coldStart: Scenario = {
  id: 'cold-start',
  title: '4. Cold start',
  async run({ env, smoke }) {
    const tenants = smoke ? 40 : 1000
    const concurrency = smoke ? 10 : 50
    const orgs = env.tenants('cold', tenants)
    const ours = (): Contender => {
      const registry = createOurRegistry(localAwsSecrets(env), { poolMax: 2, eviction: { maxPools: MAX_POOLS } })
      return { getPool: (orgId) => registry.getPool(SERVICE, orgId), close: () => registry.close() }
    }
    const theirs = async (): Promise<Contender> => {
      const manager = await createHyperconnPg({ poolMax: 2, poolManagement: { maxPools: MAX_POOLS, idleTtlMs: 300_000 } })
      return { getPool: (orgId) => manager.getConnection(orgId), close: () => manager.close() }
    }
    // Warm-up for the JIT only, on other tenants: a full extra round each would double the run time.
    const warmOrgs = env.tenants('coldwarm', smoke ? 10 : 100)
    await coldRun(env, ours(), warmOrgs, concurrency)
    await quietly(async () => coldRun(env, await theirs(), warmOrgs, concurrency))

    const result = await alternate(
      smoke ? 1 : 3,
      () => coldRun(env, ours(), orgs, concurrency),
      () => quietly(async () => coldRun(env, await theirs(), orgs, concurrency)),
      { warmup: false },
    )
    const failedOurs = result.ours.find((run) => run.errors > 0)
    if (failedOurs) throw new Error(`cold start: ${failedOurs.errors} of our requests failed: ${failedOurs.firstError}`)

    const perTenant = (runs: readonly ColdRun[]) => runs.map((run) => run.secretCalls / tenants)
    const oursCalls = perTenant(result.ours)
    const theirErrors = result.theirs.reduce((sum, run) => sum + run.errors, 0)
    return {
      id: this.id,
      title: this.title,
      rows: [
        {
          scenario: this.title,
          metric: `first request of ${tenants} new tenants, concurrency ${concurrency}`,
          unit: 'ms wall',
          better: 'lower',
          ours: median(result.ours.map((run) => run.wallMs)),
          baseline: 'hyperconn-pg',
          theirs: median(result.theirs.map((run) => run.wallMs)),
          ratio: ratios(
            result.ours.map((run) => run.wallMs),
            result.theirs.map((run) => run.wallMs),
          ),
          target: undefined,
        },
        {
          scenario: this.title,
          metric: 'GetSecretValue calls per tenant',
          unit: 'calls',
          better: 'lower',
          ours: median(oursCalls),
          baseline: 'hyperconn-pg',
          theirs: median(perTenant(result.theirs)),
          ratio: undefined,
          target: { text: '≤ 1 per tenant per TTL', met: Math.max(...oursCalls) <= 1 },
        },
      ],
      notes: [
        `pool max 2 and maxPools ${MAX_POOLS} on both sides; peak connections to the database: ours ${Math.max(...result.ours.map((r) => r.peakConnections))}, hyperconn-pg ${Math.max(...result.theirs.map((r) => r.peakConnections))} (server max_connections ${env.maxConnections})`,
        `hyperconn-pg failed requests: ${theirErrors}${theirErrors > 0 ? ` (first: ${result.theirs.find((r) => r.errors > 0)?.firstError})` : ''}`,
      ],
      details: { tenants, concurrency, maxPools: MAX_POOLS, poolMax: 2, runs: result },
    }
  },
}

async function coldRun(env: BenchEnv, contender: Contender | Promise<Contender>, orgs: readonly string[], concurrency: number): Promise<ColdRun> {
  const resolved = await contender
  env.secretsManager.resetCounters()
  const monitor = monitorConnections(env)
  try {
    const run = await forEachConcurrently(orgs, concurrency, async (orgId) => {
      const pool = await resolved.getPool(orgId)
      await pool.query('SELECT 1')
    })
    return {
      wallMs: run.elapsedMs,
      secretCalls: env.secretsManager.getSecretValueCalls(),
      peakConnections: await monitor.stop(),
      errors: run.errors,
      firstError: run.firstError,
    }
  } finally {
    await monitor.stop()
    await resolved.close()
    await env.waitForNoConnections()
  }
}
