import { seededId } from './bench-schema.js'
import { interleave } from './interleave.js'
import type { InterleavedRound } from './interleave.js'
import { AdapterClients, BareClients, ORMS } from './orm-clients.js'
import type { OrmQueries } from './orm-clients.js'
import { createOurRegistry, localAwsSecrets } from './ours-registry.js'
import { median, ratios } from './ratio-summary.js'
import type { ResultRow, Scenario } from './scenario-types.js'

const POOL_MAX = 4
const TARGET = 1.05

type Operation = 'primary-key SELECT' | 'single-row INSERT'
const OPERATIONS: readonly Operation[] = ['primary-key SELECT', 'single-row INSERT']

/**
 * What `getDb(orgId)` costs per query over the same ORM bound straight to a pg.Pool: the same
 * statement, one at a time, on the same database, the two sides interleaved query by query (see
 * interleave.ts). Per round: median wall time per query, and the Node process's CPU time per query,
 * the client-side cost the adapter adds. The wall ratio ours/bare is the overhead (1.05 = 5 % more
 * time per query = 1/1.05 of the queries per second).
 */
export const adapterOverhead: Scenario = {
  id: 'adapter-overhead',
  title: '2. Adapter overhead',
  async run({ env, smoke }) {
    const orgId = env.tenants('adapter', 1)[0] as string
    const registry = createOurRegistry(localAwsSecrets(env), { poolMax: POOL_MAX })
    const ours = new AdapterClients(registry)
    const bare = new BareClients(env.tenantUrl, POOL_MAX)
    const rows: ResultRow[] = []
    const notes: string[] = []
    const details: Record<string, unknown> = { poolMax: POOL_MAX, concurrency: 1 }
    try {
      for (const orm of ORMS) {
        const oursQueries = ours.queries(orm, orgId)
        const bareQueries = bare.queries(orm)
        await assertSameRow(orm, oursQueries, bareQueries)
        for (const operation of OPERATIONS) {
          const call = statement(operation, orm)
          const result = await interleave(call(oursQueries), call(bareQueries), {
            rounds: smoke ? 1 : 15,
            pairs: smoke ? 10 : 200,
            warmupPairs: smoke ? 5 : 300,
          })
          const wall = (pick: 'ours' | 'theirs') => result.map((r) => (pick === 'ours' ? r.oursWallUs : r.theirsWallUs))
          const cpu = (pick: 'ours' | 'theirs') => result.map((r) => (pick === 'ours' ? r.oursCpuUs : r.theirsCpuUs))
          const ratio = ratios(wall('ours'), wall('theirs'))
          const oursMicros = median(wall('ours'))
          const bareMicros = median(wall('theirs'))
          rows.push(
            {
              scenario: this.title,
              metric: `${orm}: ${operation} via getDb(orgId)`,
              unit: 'µs/query',
              better: 'lower',
              ours: oursMicros,
              baseline: `bare ${orm} on pg`,
              theirs: bareMicros,
              ratio,
              target: { text: `ratio ≤ ${TARGET}`, met: ratio.median <= TARGET },
            },
            {
              scenario: this.title,
              metric: `${orm}: ${operation}, Node CPU per query`,
              unit: 'CPU µs/query',
              better: 'lower',
              ours: median(cpu('ours')),
              baseline: `bare ${orm} on pg`,
              theirs: median(cpu('theirs')),
              ratio: ratios(cpu('ours'), cpu('theirs')),
              target: undefined,
            },
          )
          notes.push(`${orm} ${operation}: ${qps(oursMicros)} queries/s via getDb vs ${qps(bareMicros)} bare (one at a time)`)
          details[`${orm} ${operation}`] = { rounds: result satisfies InterleavedRound[] }
        }
      }
      return { id: this.id, title: this.title, rows, notes, details }
    } finally {
      await bare.close()
      await registry.close()
      await env.waitForNoConnections()
    }
  },
}

function statement(operation: Operation, orm: string): (queries: OrmQueries) => () => Promise<void> {
  let i = 0
  return operation === 'primary-key SELECT'
    ? (queries) => async () => {
        await queries.selectById(seededId(i++))
      }
    : (queries) => async () => {
        await queries.insert({ org: 'adapter', name: orm, n: i++ })
      }
}

/** Guards the comparison itself: both sides must run the statement and get the same row back. */
async function assertSameRow(orm: string, ours: OrmQueries, bare: OrmQueries): Promise<void> {
  const [a, b] = [await ours.selectById(seededId(41)), await bare.selectById(seededId(41))]
  if (!Array.isArray(a) || a.length !== 1 || JSON.stringify(a) !== JSON.stringify(b)) {
    throw new Error(`${orm}: getDb and bare ${orm} disagree on SELECT by id: ${JSON.stringify(a)} vs ${JSON.stringify(b)}`)
  }
}

function qps(microsPerQuery: number): string {
  return Math.round(1e6 / microsPerQuery).toLocaleString('en-US')
}
