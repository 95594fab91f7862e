import pg from 'pg'
import type { BenchEnv } from './bench-env.js'

/** Rows per tenant table; every row's `org` names its tenant, so a read from the wrong schema is visible. */
export const ROWS_PER_TENANT = 3
/** Schemas per transaction and sessions creating them in parallel: ~12 s for 10,000 (one session: ~80 s). */
const SCHEMAS_PER_TRANSACTION = 200
const SESSIONS = 6

export const schemaOf = (index: number): string => `org_${index}`

/** How many `org_<i>` schemas each bench database already has (they are only ever added). */
const created = new WeakMap<BenchEnv, number>()

/**
 * Makes sure schemas org_0 … org_<count-1> exist in the bench database, each with
 * `items(id int primary key, org varchar(64))` holding ROWS_PER_TENANT rows whose `org` is the
 * schema's name. Created by the tenant role (it owns the database, so it owns them). `varchar(64)`
 * rather than `text`: no TOAST table per tenant, which halves the relations (and locks) to create.
 * Each transaction is one simple-protocol round trip of 200 × (CREATE SCHEMA, CREATE TABLE, INSERT).
 */
export async function ensureScaleSchemas(env: BenchEnv, count: number): Promise<{ created: number; ms: number }> {
  const started = performance.now()
  const from = created.get(env) ?? 0
  if (count <= from) return { created: 0, ms: 0 }
  const batches: Array<[number, number]> = []
  for (let start = from; start < count; start += SCHEMAS_PER_TRANSACTION) {
    batches.push([start, Math.min(count, start + SCHEMAS_PER_TRANSACTION)])
  }
  let next = 0
  const session = async (): Promise<void> => {
    const client = new pg.Client({ connectionString: env.tenantUrl })
    await client.connect()
    try {
      for (let batch = batches[next++]; batch !== undefined; batch = batches[next++]) {
        await client.query(batchSql(batch[0], batch[1]))
      }
    } finally {
      await client.end()
    }
  }
  await Promise.all(Array.from({ length: Math.min(SESSIONS, batches.length) }, session))
  created.set(env, count)
  return { created: count - from, ms: performance.now() - started }
}

function batchSql(from: number, to: number): string {
  const statements = ['BEGIN']
  for (let i = from; i < to; i++) {
    const schema = schemaOf(i)
    const rows = Array.from({ length: ROWS_PER_TENANT }, (_, row) => `(${row + 1}, '${schema}')`).join(', ')
    statements.push(
      `CREATE SCHEMA ${schema}`,
      `CREATE TABLE ${schema}.items (id int PRIMARY KEY, org varchar(64) NOT NULL)`,
      `INSERT INTO ${schema}.items (id, org) VALUES ${rows}`,
    )
  }
  statements.push('COMMIT')
  return `${statements.join(';\n')};`
}
