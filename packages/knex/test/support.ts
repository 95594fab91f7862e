import pg from 'pg'
import { createRegistry, staticSecrets } from '@hyperconn/core'
import type { Registry } from '@hyperconn/core'
import { testDatabase } from '@hyperconn/testkit/vitest'
import type { TestDatabase } from '@hyperconn/testkit'

export interface Fixture extends AsyncDisposable {
  readonly databases: readonly TestDatabase[]
  readonly registry: Registry
  /** A plain pg client on database `index`, outside the registry: sees only committed rows. */
  observe(index?: number): Promise<pg.Client>
}

/** One database per org (org1, org2, ...), a registry over them, and observers; all disposed together. */
export async function createFixture(orgs = 1): Promise<Fixture> {
  const databases: TestDatabase[] = []
  for (let i = 0; i < orgs; i++) databases.push(await testDatabase('knx'))
  const secrets: Record<string, Record<string, string>> = {}
  databases.forEach((db, i) => {
    secrets[`p-org${i + 1}`] = { 'core-postgresql': db.url }
  })
  const registry = createRegistry({ project: 'p', services: ['core'], secrets: staticSecrets(secrets) })
  const observers: pg.Client[] = []
  return {
    databases,
    registry,
    async observe(index = 0) {
      const client = new pg.Client({ connectionString: databases[index]?.url })
      await client.connect()
      observers.push(client)
      return client
    },
    async [Symbol.asyncDispose]() {
      await Promise.all(observers.map((c) => c.end()))
      await registry.close()
      for (const db of databases) await db[Symbol.asyncDispose]()
    },
  }
}

/** Rows of `table` as seen from outside any transaction. */
export async function committedRows(observer: pg.Client, table: string): Promise<unknown[]> {
  const result = await observer.query(`SELECT name FROM ${pg.escapeIdentifier(table)} ORDER BY name`)
  return result.rows.map((r: { name: string }) => r.name)
}

/** Connections to `database` other than the caller's own. */
export async function connectionCount(observer: pg.Client, database: string): Promise<number> {
  const result = await observer.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
    [database],
  )
  return result.rows[0]?.n ?? -1
}
