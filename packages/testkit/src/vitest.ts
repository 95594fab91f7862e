import type pg from 'pg'
import { afterAll, beforeAll, beforeEach, describe, inject } from 'vitest'
// Type-only: brings the ProvidedContext augmentation into every program that uses this module.
import type {} from './global-setup.js'
import { PGBOUNCER_INSTALL_HINT, pgbouncerBinary } from './pgbouncer-server.js'
import { connectClient, createTestDatabase } from './test-database.js'
import type { CreateTestDatabaseOptions, TestDatabase } from './test-database.js'

/** Superuser URL of the run's PostgreSQL server (from global-setup). */
export function adminUrl(): string {
  const url = inject('hyperconnAdminUrl')
  if (typeof url !== 'string' || url === '') {
    throw new Error('hyperconnAdminUrl was not provided: is @hyperconn/testkit/global-setup in vitest globalSetup?')
  }
  return url
}

/** A fresh database on the run's server; `await using db = await testDatabase('pool')` drops it at scope end. */
export function testDatabase(
  prefix?: string,
  options: Omit<CreateTestDatabaseOptions, 'prefix'> = {},
): Promise<TestDatabase> {
  return createTestDatabase(adminUrl(), prefix === undefined ? options : { ...options, prefix })
}

export interface FileDatabases {
  /** The i-th database (valid from the first beforeAll on). */
  database(index: number): TestDatabase
  /** A plain pg client on the i-th database, outside any registry: sees only committed rows. */
  admin(index: number): pg.Client & AsyncDisposable
}

/**
 * `count` databases for one test file: created with `schema` before all tests, `reset` run on each before
 * every test, dropped after all. Registers the vitest hooks itself; call it at the top of the file.
 */
export function useTestDatabases(prefix: string, count: number, sql: { schema: string; reset?: string }): FileDatabases {
  const databases: TestDatabase[] = []
  const admins: (pg.Client & AsyncDisposable)[] = []
  beforeAll(async () => {
    for (let i = 0; i < count; i++) {
      const database = await testDatabase(prefix)
      databases.push(database)
      const admin = await connectClient(database.url)
      admins.push(admin)
      await admin.query(sql.schema)
    }
  })
  afterAll(async () => {
    for (const admin of admins) await admin[Symbol.asyncDispose]()
    for (const database of databases) await database[Symbol.asyncDispose]()
  })
  if (sql.reset !== undefined) {
    const reset = sql.reset
    beforeEach(async () => {
      for (const admin of admins) await admin.query(reset)
    })
  }
  const at = <T>(list: T[], index: number): T => {
    const item = list[index]
    if (item === undefined) throw new Error(`useTestDatabases: no database ${index} (created ${list.length})`)
    return item
  }
  return { database: (index) => at(databases, index), admin: (index) => at(admins, index) }
}

let warnedNoPgBouncer = false

/**
 * Whether the `pgbouncer` binary is there, for `describe.skipIf(!pgbouncerAvailable())`. Without it: throws
 * under CI=true (CI must run the PgBouncer tests), and elsewhere returns false after a warning on stderr
 * (once per test file) that those tests were not run.
 */
export function pgbouncerAvailable(): boolean {
  if (pgbouncerBinary() !== undefined) return true
  if (process.env.CI === 'true') {
    throw new Error(`PgBouncer tests cannot run: pgbouncer is not installed, and CI=true requires them: ${PGBOUNCER_INSTALL_HINT}.`)
  }
  if (!warnedNoPgBouncer) {
    warnedNoPgBouncer = true
    process.emitWarning(
      `pgbouncer not found on PATH nor in /usr/sbin: the PgBouncer tests of this file were NOT run (skipped). To run them, ${PGBOUNCER_INSTALL_HINT}.`,
      { code: 'HYPERCONN_NO_PGBOUNCER' },
    )
  }
  return false
}

/** `describe(name, fn)` when PgBouncer is installed; see pgbouncerAvailable() for when it is not. */
export function describeWithPgBouncer(name: string, fn: () => void): void {
  describe.skipIf(!pgbouncerAvailable())(name, fn)
}
