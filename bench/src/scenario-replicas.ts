import { randomBytes } from 'node:crypto'
import { eq, sql } from 'drizzle-orm'
import { sql as kyselySql } from 'kysely'
import pg from 'pg'
import { createRegistry, staticSecrets } from '@hyperconn/core'
import type { Registry } from '@hyperconn/core'
import { createDrizzleAdapter } from '@hyperconn/drizzle'
import { createKyselyAdapter } from '@hyperconn/kysely'
import { createTestDatabase, startPostgres, startStandby } from '@hyperconn/testkit'
import type { PostgresServer, StandbyServer } from '@hyperconn/testkit'
import { CREATE_SCHEMA_SQL, drizzleSchema, items, seededId, TABLE } from './bench-schema.js'
import type { KyselyDatabase } from './bench-schema.js'
import { poolOptions } from './ours-registry.js'
import { median, ratios } from './ratio-summary.js'
import type { ResultRow, Scenario } from './scenario-types.js'
import { runForDuration } from './workers.js'
import type { WorkerRun } from './workers.js'

const PROJECT = 'benchrep'
const SERVICE = 'core'
const ORG = 'rep0'
const WORKERS = 8
const POOL_MAX = 8

type Workload = 'drizzle' | 'kysely' | 'raw'
const WORKLOADS: readonly Workload[] = ['drizzle', 'kysely', 'raw']
const LABELS: Record<Workload, string> = {
  drizzle: 'Drizzle: primary-key SELECT via getDb(orgId)',
  kysely: 'Kysely: primary-key SELECT via getDb(orgId)',
  raw: "raw: tenant.replica(() => tenant.query('SELECT … WHERE id = $1'))",
}

/** The three reads of one registry, and `pg_is_in_recovery()` as each one sees it (true = it ran on the standby). */
function readsOf(registry: Registry): { run: Record<Workload, (i: number) => Promise<unknown>>; where: Record<Workload, () => Promise<boolean>> } {
  const drizzle = createDrizzleAdapter(registry, { service: SERVICE, schema: drizzleSchema })
  const kysely = createKyselyAdapter<KyselyDatabase>(registry, { service: SERVICE })
  const tenant = registry.tenant(ORG, SERVICE)
  const rawText = `SELECT id, org, name, n FROM ${TABLE} WHERE id = $1`
  return {
    run: {
      drizzle: (i) => drizzle.getDb(ORG).select().from(items).where(eq(items.id, seededId(i))).then(),
      kysely: (i) => kysely.getDb(ORG).selectFrom(TABLE).selectAll().where('id', '=', seededId(i)).execute(),
      raw: (i) => tenant.replica(() => tenant.query(rawText, [seededId(i)])),
    },
    where: {
      drizzle: async () => (await drizzle.getDb(ORG).select({ r: sql<boolean>`pg_is_in_recovery()` }).from(items).limit(1))[0]?.r === true,
      kysely: async () =>
        (await kysely.getDb(ORG).selectFrom(TABLE).select(kyselySql<boolean>`pg_is_in_recovery()`.as('r')).limit(1).execute())[0]?.r === true,
      raw: async () => (await tenant.replica(() => tenant.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r'))).rows[0]?.r === true,
    },
  }
}

const perSecond = (run: WorkerRun) => (run.completed / run.elapsedMs) * 1000

/**
 * Read throughput with one streaming hot standby as a read replica against the same registry without
 * replicas (every read on the primary). Its own primary and standby (the standby is a copy of a whole
 * cluster, so it cannot share the bench environment's server). ABAB rounds per workload, the order flipped
 * every round; ratios replica/primary-only per round.
 */
export const replicas: Scenario = {
  id: 'replicas',
  title: '10. Read replicas',
  async run({ smoke }) {
    const cleanup: Array<() => Promise<unknown>> = []
    try {
      const primary: PostgresServer = await startPostgres()
      cleanup.unshift(() => primary.stop())
      const password = randomBytes(12).toString('hex')
      const database = await createTestDatabase(primary.adminUrl, { prefix: 'benchrep', owner: { user: 'bench_replica', password } })
      const primaryUrl = database.urlFor('bench_replica', password)
      const seed = new pg.Client({ connectionString: primaryUrl })
      await seed.connect()
      try {
        await seed.query(CREATE_SCHEMA_SQL)
      } finally {
        await seed.end()
      }
      const standbyStarted = performance.now()
      const standby: StandbyServer = await startStandby(primary)
      cleanup.unshift(() => standby[Symbol.asyncDispose]())
      await standby.waitForReplay()
      const standbyMs = performance.now() - standbyStarted
      const replicaUrl = new URL(primaryUrl)
      replicaUrl.port = String(standby.port)

      const secrets = staticSecrets({ [`${PROJECT}-${ORG}`]: { [`${SERVICE}-postgresql`]: primaryUrl, [`${SERVICE}-postgresql-ro`]: [replicaUrl.toString()] } })
      const primaryOnlySecrets = staticSecrets({ [`${PROJECT}-${ORG}`]: { [`${SERVICE}-postgresql`]: primaryUrl } })
      const pool = poolOptions(POOL_MAX)
      const withReplica = createRegistry({ project: PROJECT, services: { [SERVICE]: { replicas: true } }, secrets, pool })
      cleanup.unshift(() => withReplica.close())
      const primaryOnly = createRegistry({ project: PROJECT, services: [SERVICE], secrets: primaryOnlySecrets, pool })
      cleanup.unshift(() => primaryOnly.close())
      const downs: string[] = []
      withReplica.on('replica:down', (event) => downs.push(event.reason))

      const ours = readsOf(withReplica)
      const base = readsOf(primaryOnly)
      // Routing check: every read of the replica registry ran on the standby, every one of the other on the primary.
      for (const workload of WORKLOADS) {
        if (!(await ours.where[workload]())) throw new Error(`replicas: ${workload} read with replicas: true did not run on the standby`)
        if (await base.where[workload]()) throw new Error(`replicas: ${workload} read without replicas ran on the standby`)
      }

      const sliceMs = smoke ? 100 : 700
      const roundCount = smoke ? 1 : 6
      const measure = async (reads: ReturnType<typeof readsOf>, workload: Workload, ms: number): Promise<WorkerRun> => {
        const run = await runForDuration(WORKERS, ms, (seq) => reads.run[workload](seq).then(() => undefined))
        if (run.errors > 0) throw new Error(`replicas: ${workload}: ${run.errors} failed reads (${run.firstError})`)
        return run
      }
      for (const workload of WORKLOADS) {
        await measure(ours, workload, smoke ? 50 : 300) // untimed: JIT, pools on both servers
        await measure(base, workload, smoke ? 50 : 300)
      }
      const rounds = Object.fromEntries(WORKLOADS.map((w) => [w, { ours: [] as number[], base: [] as number[] }])) as Record<
        Workload,
        { ours: number[]; base: number[] }
      >
      for (let round = 0; round < roundCount; round++) {
        for (const workload of WORKLOADS) {
          const first = round % 2 === 0
          const a = await measure(first ? ours : base, workload, sliceMs)
          const b = await measure(first ? base : ours, workload, sliceMs)
          rounds[workload].ours.push(perSecond(first ? a : b))
          rounds[workload].base.push(perSecond(first ? b : a))
        }
      }
      const replicaStats = withReplica.stats().replicas
      if (downs.length > 0) throw new Error(`replicas: the standby was skipped during the run (${downs.join('; ')})`)

      const rows: ResultRow[] = WORKLOADS.map((workload) => ({
        scenario: this.title,
        metric: `${LABELS[workload]}, ${WORKERS} workers`,
        unit: 'req/s',
        better: 'higher',
        ours: median(rounds[workload].ours),
        baseline: 'same registry without replicas (primary only)',
        theirs: median(rounds[workload].base),
        ratio: ratios(rounds[workload].ours, rounds[workload].base),
        target: undefined,
      }))
      return {
        id: this.id,
        title: this.title,
        rows,
        notes: [
          `one tenant, ${WORKERS} workers, pool max ${POOL_MAX} per server; ${roundCount} round(s) of ${sliceMs} ms per side and workload, ABAB (order flipped every round); ratio = with one replica / primary only`,
          `own primary + streaming hot standby (testkit startStandby, ready and caught up in ${(standbyMs / 1000).toFixed(1)} s), both on this machine: they share its CPU, so the ratio says little about a real deployment`,
          `every read checked once with pg_is_in_recovery() before the rounds; replica:down events during the run: ${downs.length}`,
        ],
        details: { rounds, replicaStats, workers: WORKERS, poolMax: POOL_MAX, sliceMs },
      }
    } finally {
      const errors: unknown[] = []
      for (const step of cleanup.splice(0)) {
        try {
          await step()
        } catch (error) {
          errors.push(error)
        }
      }
      if (errors.length > 0) throw new AggregateError(errors, 'replicas: teardown failed') // eslint-disable-line no-unsafe-finally
    }
  },
}
