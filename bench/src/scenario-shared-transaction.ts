import pg from 'pg'
import { SERVICE } from './bench-env.js'
import { items, TABLE } from './bench-schema.js'
import { AdapterClients } from './orm-clients.js'
import type { ItemRow } from './orm-clients.js'
import { interleave } from './interleave.js'
import type { InterleavedRound } from './interleave.js'
import { OrmsOnOneClient } from './orms-on-one-client.js'
import { createOurRegistry, localAwsSecrets, poolOptions } from './ours-registry.js'
import { median, ratios } from './ratio-summary.js'
import type { Scenario } from './scenario-types.js'
import { handTransaction } from './hand-transaction.js'

const POOL_MAX = 4
const TARGET = 1.15
const INSERT_SQL = `INSERT INTO ${TABLE} (org, name, n) VALUES ($1, $2, $3)`

/**
 * One transaction, three INSERTs, one per ORM, none of them handed a transaction object: they
 * join `registry.tenant(orgId).transaction(fn)` through the async context. The baseline is what
 * you would write by hand on one pg client: BEGIN, three INSERTs, COMMIT.
 */
export const sharedTransaction: Scenario = {
  id: 'shared-transaction',
  title: '3. Shared transaction',
  async run({ env, smoke }) {
    const orgId = env.tenants('tx', 1)[0] as string
    const registry = createOurRegistry(localAwsSecrets(env), { poolMax: POOL_MAX })
    const ours = new AdapterClients(registry)
    const tenant = registry.tenant(orgId, SERVICE)
    const pool = new pg.Pool({ connectionString: env.tenantUrl, ...poolOptions(POOL_MAX) })
    pool.on('error', () => {})
    const byHand = new OrmsOnOneClient(pool)
    try {
      let n = 0
      const row = (name: string): ItemRow => ({ org: 'tx', name, n: n++ })
      const crossOrm = (rowFor: (name: string) => ItemRow = row, after?: () => void) =>
        tenant.transaction(async () => {
          await ours.drizzle(orgId).insert(items).values(rowFor('drizzle'))
          await ours.kysely(orgId).insertInto(TABLE).values(rowFor('kysely')).execute()
          await ours.knex(orgId)(TABLE).insert(rowFor('knex'))
          after?.()
        })
      const handWritten = async (): Promise<void> => {
        await handTransaction(pool, async (client) => {
          for (const name of ['drizzle', 'kysely', 'knex']) {
            const { org, n: value } = row(name)
            await client.query(INSERT_SQL, [org, name, value])
          }
        })
      }
      await assertOneTransaction(crossOrm, pool)
      await assertThreeRows(byHand, pool)

      // Interleaved transaction by transaction: see interleave.ts.
      const settings = { rounds: smoke ? 1 : 15, pairs: smoke ? 10 : 100, warmupPairs: smoke ? 5 : 200 }
      const result = await interleave(() => crossOrm(), handWritten, settings)
      // Diagnostic: the same ORMs without us, to tell the ORMs' own cost from the shared context's.
      const versusOrms = await interleave(() => crossOrm(), () => byHand.insertThree(row), settings)
      const wall = (rounds: readonly InterleavedRound[], pick: 'ours' | 'theirs') =>
        rounds.map((r) => (pick === 'ours' ? r.oursWallUs : r.theirsWallUs))
      const cpu = (rounds: readonly InterleavedRound[], pick: 'ours' | 'theirs') =>
        rounds.map((r) => (pick === 'ours' ? r.oursCpuUs : r.theirsCpuUs))
      const ratio = ratios(wall(result, 'ours'), wall(result, 'theirs'))
      const oursMicros = median(wall(result, 'ours'))
      const theirsMicros = median(wall(result, 'theirs'))
      const byHandMicros = median(wall(versusOrms, 'theirs'))
      return {
        id: this.id,
        title: this.title,
        rows: [
          {
            scenario: this.title,
            metric: 'BEGIN + Drizzle, Kysely, Knex INSERT + COMMIT',
            unit: 'µs/tx',
            better: 'lower',
            ours: oursMicros,
            baseline: 'hand-written pg client',
            theirs: theirsMicros,
            ratio,
            target: { text: `ratio ≤ ${TARGET}`, met: ratio.median <= TARGET },
          },
          {
            scenario: this.title,
            metric: 'same, Node CPU per transaction',
            unit: 'CPU µs/tx',
            better: 'lower',
            ours: median(cpu(result, 'ours')),
            baseline: 'hand-written pg client',
            theirs: median(cpu(result, 'theirs')),
            ratio: ratios(cpu(result, 'ours'), cpu(result, 'theirs')),
            target: undefined,
          },
          {
            scenario: this.title,
            metric: 'same three ORM inserts, diagnostic',
            unit: 'µs/tx',
            better: 'lower',
            ours: median(wall(versusOrms, 'ours')),
            baseline: 'the 3 ORMs on one pg client, tx by hand',
            theirs: byHandMicros,
            ratio: ratios(wall(versusOrms, 'ours'), wall(versusOrms, 'theirs')),
            target: undefined,
          },
          {
            scenario: this.title,
            metric: 'same, Node CPU per transaction',
            unit: 'CPU µs/tx',
            better: 'lower',
            ours: median(cpu(versusOrms, 'ours')),
            baseline: 'the 3 ORMs on one pg client, tx by hand',
            theirs: median(cpu(versusOrms, 'theirs')),
            ratio: ratios(cpu(versusOrms, 'ours'), cpu(versusOrms, 'theirs')),
            target: undefined,
          },
        ],
        notes: [
          `${tps(oursMicros)} transactions/s across three ORMs vs ${tps(theirsMicros)} hand-written pg and ${tps(byHandMicros)} for the three ORMs sharing one client by hand (one at a time)`,
        ],
        details: { poolMax: POOL_MAX, versusHandWritten: result, versusOrmsByHand: versusOrms },
      }
    } finally {
      await byHand.close()
      await pool.end()
      await registry.close()
      await env.waitForNoConnections()
    }
  },
}

class RollbackProbe extends Error {}

/**
 * Guards what is measured: an error after the three INSERTs must roll all three back and a normal
 * end must commit all three, which only happens if every ORM really ran inside the one transaction.
 */
async function assertOneTransaction(
  crossOrm: (rowFor: (name: string) => ItemRow, after?: () => void) => Promise<void>,
  pool: pg.Pool,
): Promise<void> {
  const count = async (org: string) =>
    (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${TABLE} WHERE org = $1`, [org])).rows[0]?.n
  const rolledBack = `tx-rollback-${process.pid}`
  await crossOrm(
    (name) => ({ org: rolledBack, name, n: 0 }),
    () => {
      throw new RollbackProbe()
    },
  ).catch((error: unknown) => {
    if (!(error instanceof RollbackProbe)) throw error
  })
  const committed = `tx-commit-${process.pid}`
  await crossOrm((name) => ({ org: committed, name, n: 0 }))
  const [left, kept] = [await count(rolledBack), await count(committed)]
  if (left !== 0 || kept !== 3) {
    throw new Error(`shared transaction: ${left} of 3 rows survived a rollback, ${kept} of 3 were committed: not every ORM joined the transaction`)
  }
}

async function assertThreeRows(byHand: OrmsOnOneClient, pool: pg.Pool): Promise<void> {
  const org = `tx-byhand-${process.pid}`
  await byHand.insertThree((name) => ({ org, name, n: 0 }))
  const rows = (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${TABLE} WHERE org = $1`, [org])).rows[0]?.n
  if (rows !== 3) throw new Error(`shared transaction: the by-hand ORM baseline wrote ${rows} of 3 rows`)
}

function tps(microsPerTransaction: number): string {
  return Math.round(1e6 / microsPerTransaction).toLocaleString('en-US')
}
