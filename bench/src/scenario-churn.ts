import type pg from 'pg'
import { alternate } from './alternate.js'
import { SERVICE } from './bench-env.js'
import type { BenchEnv } from './bench-env.js'
import { monitorConnections } from './connection-monitor.js'
import { createHyperconnPg, quietly } from './hyperconn-pg-manager.js'
import { createOurRegistry, localAwsSecrets } from './ours-registry.js'
import { median, ratios } from './ratio-summary.js'
import type { Scenario } from './scenario-types.js'
import { forEachConcurrently, runForDuration } from './workers.js'

/** Ours' default secret TTL; jitter takes up to 10 % off. */
const SECRET_TTL_MS = 300_000
const TARGET = 5

interface ChurnRound {
  readonly requests: number
  readonly perSecond: number
  readonly secretCalls: number
  readonly peakConnections: number
  readonly errors: number
  readonly firstError: string | undefined
}

/**
 * More tenants than pools: 500 tenants requested round-robin by 40 workers, at most 50 pools, so
 * nearly every request finds its pool evicted. Both sides pay for a new pool and connection each
 * time; hyperconn-pg also fetches the secret again each time, ours serves it from its cache. One
 * untimed pass over all tenants first (steady state: that is where ours fetches each secret once).
 */
export const churn: Scenario = {
  id: 'churn',
  title: '5. Tenant churn',
  async run({ env, smoke }) {
    const tenants = smoke ? 60 : 500
    const maxPools = smoke ? 10 : 50
    const workers = smoke ? 8 : 40
    const durationMs = smoke ? 400 : 2500
    const orgs = env.tenants('churn', tenants)
    const idleTtlMs = 60_000
    const started = performance.now()

    const registry = createOurRegistry(localAwsSecrets(env), { poolMax: 2, eviction: { maxPools, idleTtlMs } })
    const manager = await createHyperconnPg({ poolMax: 2, poolManagement: { maxPools, idleTtlMs } })
    try {
      const ours = (orgId: string) => registry.getPool(SERVICE, orgId)
      const theirs = (orgId: string) => manager.getConnection(orgId)
      env.secretsManager.resetCounters()
      const warm = await forEachConcurrently(orgs, workers, (orgId) => request(ours, orgId))
      if (warm.errors > 0) throw new Error(`churn warm-up: ${warm.errors} of our requests failed: ${warm.firstError}`)
      const oursWarmupCalls = env.secretsManager.getSecretValueCalls()
      await quietly(() => forEachConcurrently(orgs, workers, (orgId) => request(theirs, orgId)))

      let oursRoundCalls = 0
      const result = await alternate(
        smoke ? 1 : 8,
        async () => {
          const round = await churnRound(env, orgs, workers, durationMs, ours)
          oursRoundCalls += round.secretCalls
          return round
        },
        () => quietly(() => churnRound(env, orgs, workers, durationMs, theirs)),
        { warmup: false },
      )
      const failedOurs = result.ours.find((round) => round.errors > 0)
      if (failedOurs) throw new Error(`churn: ${failedOurs.errors} of our requests failed: ${failedOurs.firstError}`)

      const scenarioMs = performance.now() - started
      const oursFetchesPerTenant = (oursWarmupCalls + oursRoundCalls) / tenants
      const ttlPeriods = Math.ceil(scenarioMs / (SECRET_TTL_MS * 0.9))
      const throughput = ratios(
        result.ours.map((r) => r.perSecond),
        result.theirs.map((r) => r.perSecond),
      )
      const perRequest = (rounds: readonly ChurnRound[]) => rounds.map((r) => r.secretCalls / r.requests)
      const theirErrors = result.theirs.reduce((sum, r) => sum + r.errors, 0)
      const theirRequests = result.theirs.reduce((sum, r) => sum + r.requests, 0)
      return {
        id: this.id,
        title: this.title,
        rows: [
          {
            scenario: this.title,
            metric: `${tenants} tenants round-robin, maxPools ${maxPools}, ${workers} workers`,
            unit: 'req/s',
            better: 'higher',
            ours: median(result.ours.map((r) => r.perSecond)),
            baseline: 'hyperconn-pg',
            theirs: median(result.theirs.map((r) => r.perSecond)),
            ratio: throughput,
            target: { text: `ratio ≥ ${TARGET}`, met: throughput.median >= TARGET },
          },
          {
            scenario: this.title,
            metric: 'GetSecretValue calls per request (measured rounds)',
            unit: 'calls',
            better: 'lower',
            ours: median(perRequest(result.ours)),
            baseline: 'hyperconn-pg',
            theirs: median(perRequest(result.theirs)),
            ratio: undefined,
            target: undefined,
          },
          {
            scenario: this.title,
            metric: `GetSecretValue calls per tenant, whole scenario (${(scenarioMs / 1000).toFixed(0)} s < 1 TTL)`,
            unit: 'calls',
            better: 'lower',
            ours: oursFetchesPerTenant,
            baseline: 'hyperconn-pg',
            theirs: undefined,
            ratio: undefined,
            target: { text: '≤ 1 per tenant per TTL', met: oursFetchesPerTenant <= ttlPeriods },
          },
        ],
        notes: [
          `pool max 2, maxPools ${maxPools}, idleTtlMs ${idleTtlMs} on both sides; ${durationMs / 1000} s per round; peak connections: ours ${Math.max(...result.ours.map((r) => r.peakConnections))}, hyperconn-pg ${Math.max(...result.theirs.map((r) => r.peakConnections))} (server max_connections ${env.maxConnections})`,
          `hyperconn-pg failed requests: ${theirErrors} of ${theirRequests + theirErrors}${theirErrors > 0 ? ` (first: ${result.theirs.find((r) => r.errors > 0)?.firstError})` : ''}`,
        ],
        details: { tenants, maxPools, workers, durationMs, oursWarmupCalls, oursRoundCalls, rounds: result, registry: registry.stats().evictions },
      }
    } finally {
      await registry.close()
      await manager.close()
      await env.waitForNoConnections()
    }
  },
}

async function request(getPool: (orgId: string) => Promise<pg.Pool>, orgId: string): Promise<void> {
  const pool = await getPool(orgId)
  await pool.query('SELECT 1')
}

async function churnRound(
  env: BenchEnv,
  orgs: readonly string[],
  workers: number,
  durationMs: number,
  getPool: (orgId: string) => Promise<pg.Pool>,
): Promise<ChurnRound> {
  const callsBefore = env.secretsManager.getSecretValueCalls()
  const monitor = monitorConnections(env)
  const run = await runForDuration(workers, durationMs, (seq) => request(getPool, orgs[seq % orgs.length] as string))
  return {
    requests: run.completed,
    perSecond: (run.completed / run.elapsedMs) * 1000,
    secretCalls: env.secretsManager.getSecretValueCalls() - callsBefore,
    peakConnections: await monitor.stop(),
    errors: run.errors,
    firstError: run.firstError,
  }
}
