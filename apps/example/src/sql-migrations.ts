import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Tenant } from '@hyperconn/core'
import pg from 'pg'

/** One `.sql` file of a migrations folder. */
export interface SqlMigration {
  /** The file name without `.sql`; migrations run in name order and are recorded by it. */
  readonly name: string
  readonly sql: string
}

/** The `.sql` files of `dir`, in name order. */
export async function readSqlMigrations(dir: string): Promise<SqlMigration[]> {
  const files = (await readdir(dir)).filter((file) => file.endsWith('.sql')).sort()
  return Promise.all(files.map(async (file) => ({ name: file.slice(0, -'.sql'.length), sql: await readFile(join(dir, file), 'utf8') })))
}

/**
 * Applies the migrations this tenant has not recorded yet, in order, in one transaction: all of them or,
 * if one fails, none (it rejects, and `migrateTenants` reports the tenant as failed). Each is recorded in
 * `schema_migrations`, in the tenant's schema (`tenant.schema`) when its service isolates by schema, so
 * every store keeps its own record. The SQL runs with the tenant's `search_path`: it names its tables
 * unqualified. Resolves with the names applied (none when the tenant was up to date).
 *
 * Meant to run inside `migrateTenants` (or the `hyperconn` CLI), which holds the tenant's advisory lock:
 * two deploys never apply the same tenant's migrations at once.
 */
export function applySqlMigrations(tenant: Tenant, migrations: readonly SqlMigration[]): Promise<string[]> {
  const table = tenant.schema === undefined ? 'schema_migrations' : `${pg.escapeIdentifier(tenant.schema)}.schema_migrations`
  return tenant.transaction(async () => {
    await tenant.query(`CREATE TABLE IF NOT EXISTS ${table} (name varchar(200) PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`)
    const { rows } = await tenant.query<{ name: string }>(`SELECT name FROM ${table}`)
    const done = new Set(rows.map((row) => row.name))
    const applied: string[] = []
    for (const migration of migrations) {
      if (done.has(migration.name)) continue
      await tenant.query(migration.sql)
      await tenant.query(`INSERT INTO ${table} (name) VALUES ($1)`, [migration.name])
      applied.push(migration.name)
    }
    return applied
  })
}
