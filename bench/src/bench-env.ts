import { randomBytes } from 'node:crypto'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { createTestDatabase, startFakeSecretsManager, startPostgres } from '@hyperconn/testkit'
import type { FakeSecretsManager, PostgresServer, TestDatabase } from '@hyperconn/testkit'
import { CREATE_SCHEMA_SQL } from './bench-schema.js'

export const PROJECT = 'bench'
export const SERVICE = 'core'
export const REGION = 'us-east-1'
/** The fake endpoint does not verify signatures; hyperconn-pg insists on static keys anyway. */
export const FAKE_CREDENTIALS = Object.freeze({ accessKeyId: 'AKIDBENCHFAKE', secretAccessKey: 'bench-fake-secret' })

export interface BenchEnv {
  /** Tenant-role URL of the bench database: what every tenant secret points at. */
  readonly tenantUrl: string
  readonly secretsManager: FakeSecretsManager
  /** The embedded server's max_connections (testkit: 100, PostgreSQL's default). */
  readonly maxConnections: number
  /** Creates `bench-${prefix}${i}` secrets once per prefix; returns the org ids. */
  tenants(prefix: string, count: number): string[]
  /** Client backends connected to the bench database right now. */
  connectionCount(): Promise<number>
  /**
   * Waits until every contender connection is gone. pg's `pool.end()` resolves once it has *asked*
   * its clients to end; the next run (or teardown) must not start while backends still exit.
   */
  waitForNoConnections(timeoutMs?: number): Promise<void>
  close(): Promise<void>
}

/**
 * Embedded PostgreSQL in a temp dir of our own (so teardown can prove it is gone), one database
 * owned by a tenant role, the local Secrets Manager endpoint, and the env var that points
 * hyperconn-pg's AWS client at it (it has no endpoint option; SDK v3 reads
 * AWS_ENDPOINT_URL_SECRETS_MANAGER when the client resolves its endpoint). Our registry gets the
 * endpoint explicitly, as its users would, and explicit config wins over the env var.
 */
export async function startBenchEnv(): Promise<BenchEnv> {
  // Empty dirs are accepted; testkit hands it to the `postgres` user when we run as root, and removes it on stop.
  const dataDir = await mkdtemp(join(tmpdir(), 'hyperconn-bench-'))
  const cleanup: Array<() => Promise<void>> = [() => rm(dataDir, { recursive: true, force: true, maxRetries: 3 })]
  try {
    const server: PostgresServer = await startPostgres({ dataDir })
    cleanup.unshift(() => server.stop())
    const password = randomBytes(12).toString('hex')
    const database: TestDatabase = await createTestDatabase(server.adminUrl, {
      prefix: 'bench',
      owner: { user: 'bench_tenant', password },
    })
    const tenantUrl = database.urlFor('bench_tenant', password)
    const admin = new pg.Pool({ connectionString: database.url, max: 1 })
    admin.on('error', () => {}) // teardown terminates it; nothing to report
    cleanup.unshift(() => admin.end())
    const maxConnections = Number((await admin.query<{ max_connections: string }>('SHOW max_connections')).rows[0]?.max_connections)
    await withClient(tenantUrl, (client) => client.query(CREATE_SCHEMA_SQL))

    const secretsManager = await startFakeSecretsManager({ region: REGION })
    cleanup.unshift(() => secretsManager.close())
    process.env.AWS_ENDPOINT_URL_SECRETS_MANAGER = secretsManager.endpoint

    const connectionCount = async (): Promise<number> => {
      const result = await admin.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'",
      )
      // The monitor's own connection is not one of the contenders'.
      return (result.rows[0]?.n ?? 1) - 1
    }
    const seeded = new Map<string, string[]>()
    const secretValue = { [`${SERVICE}-postgresql`]: tenantUrl }
    return {
      tenantUrl,
      secretsManager,
      maxConnections,
      tenants(prefix, count) {
        const known = seeded.get(prefix) ?? []
        for (let i = known.length; i < count; i++) {
          const orgId = `${prefix}${i}`
          secretsManager.setSecret(`${PROJECT}-${orgId}`, secretValue)
          known.push(orgId)
        }
        seeded.set(prefix, known)
        return known.slice(0, count)
      },
      connectionCount,
      async waitForNoConnections(timeoutMs = 10_000) {
        const deadline = performance.now() + timeoutMs
        let count = await connectionCount()
        while (count > 0) {
          if (performance.now() > deadline) throw new Error(`${count} connections still open ${timeoutMs} ms after the contender closed`)
          await new Promise((resolve) => setTimeout(resolve, 20))
          count = await connectionCount()
        }
      },
      close: () => runCleanup(cleanup, dataDir),
    }
  } catch (error) {
    await runCleanup(cleanup, dataDir).catch(() => {})
    throw error
  }
}

async function runCleanup(steps: Array<() => Promise<void>>, dataDir: string): Promise<void> {
  delete process.env.AWS_ENDPOINT_URL_SECRETS_MANAGER
  const errors: unknown[] = []
  for (const step of steps.splice(0)) {
    try {
      await step()
    } catch (error) {
      errors.push(error)
    }
  }
  const leftovers = postgresProcessesUsing(dataDir)
  if (leftovers.length > 0) errors.push(new Error(`postgres processes still running after teardown: ${leftovers.join(', ')}`))
  if (existsSync(dataDir)) errors.push(new Error(`temp dir left behind: ${dataDir}`))
  if (errors.length > 0) throw new AggregateError(errors, 'bench teardown failed')
}

/** Linux: any process whose command line names our data dir (the postmaster is started with -D <dir>). */
function postgresProcessesUsing(dataDir: string): number[] {
  if (process.platform !== 'linux') return []
  const pids: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(dataDir)) pids.push(Number(entry))
    } catch {
      // exited while we looked
    }
  }
  return pids
}

async function withClient<T>(url: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return await work(client)
  } finally {
    await client.end()
  }
}
