import type pg from 'pg'
import { PostgresManagerService } from 'hyperconn-pg'
import { FAKE_CREDENTIALS, PROJECT, REGION, SERVICE } from './bench-env.js'
import { poolOptions } from './ours-registry.js'

/**
 * hyperconn-pg@1.0.1, the package we replace. Its API: `initialize({ projectName, secretManager:
 * { accessKeyId, secretAccessKey, region }, services, pgOptions, poolManagement: { maxPools,
 * idleTtlMs } })` and `getConnection(service, orgId): Promise<pg.Pool>`. It has no endpoint option
 * (bench-env sets AWS_ENDPOINT_URL_SECRETS_MANAGER) and no shutdown method (see `close` below).
 */
export interface HyperconnPg {
  getConnection(orgId: string): Promise<pg.Pool>
  /** Ends every pool it still holds and its AWS client. */
  close(): Promise<void>
}

export interface HyperconnPgOptions {
  /** pg.Pool `max` (with ours' other pool settings, see poolOptions); omitted = its defaults (no pgOptions: pg's own). */
  readonly poolMax?: number
  /** Default SERVICE ('core'). */
  readonly service?: string
  readonly poolManagement?: { maxPools?: number; idleTtlMs?: number }
  /**
   * Memory scenario only: answer its secret lookups from memory instead of the SDK, as ours does
   * there (see scenario-memory.ts). What it keeps per tenant does not depend on the transport.
   */
  readonly secretsFromMemory?: (name: string) => unknown
  /**
   * Give each pool it creates a no-op 'error' listener the first time it is returned. It registers
   * none, so an idle client whose backend goes away (the server at its connection limit, a restart)
   * would crash the bench with an unhandled 'error' event. Costs one WeakSet lookup per call.
   */
  readonly guardPoolErrors?: boolean
}

/** The private fields we touch, read from dist/postgresManager/postgresManager.service.js. */
interface Internals {
  pools: Record<string, { pool: pg.Pool }>
  secretsManagerService: { client?: { destroy(): void }; fetchSecretValue(name: string): Promise<unknown> }
}

export async function createHyperconnPg(options: HyperconnPgOptions): Promise<HyperconnPg> {
  const manager = new PostgresManagerService()
  const service = options.service ?? SERVICE
  await manager.initialize({
    projectName: PROJECT,
    secretManager: { ...FAKE_CREDENTIALS, region: REGION },
    services: [{ serviceName: service }],
    ...(options.poolMax === undefined ? {} : { pgOptions: poolOptions(options.poolMax) }),
    ...(options.poolManagement === undefined ? {} : { poolManagement: options.poolManagement }),
  })
  const internals = manager as unknown as Internals
  const fromMemory = options.secretsFromMemory
  if (fromMemory !== undefined) {
    internals.secretsManagerService = { fetchSecretValue: (name) => Promise.resolve(fromMemory(name)) }
  }
  const guarded = new WeakSet<pg.Pool>()
  const guard = (pool: pg.Pool): pg.Pool => {
    if (!guarded.has(pool)) {
      guarded.add(pool)
      pool.on('error', () => {})
    }
    return pool
  }
  return {
    getConnection: options.guardPoolErrors === true
      ? async (orgId) => guard(await manager.getConnection(service, orgId))
      : (orgId) => manager.getConnection(service, orgId),
    async close() {
      const pools = Object.values(internals.pools).map((entry) => entry.pool)
      internals.pools = {}
      // It registers no 'error' listener on its pools: a backend terminated while its client is
      // still ending (teardown) would crash the bench process.
      for (const pool of pools) pool.on('error', () => {})
      await Promise.all(pools.map((pool) => pool.end().catch(() => {})))
      internals.secretsManagerService.client?.destroy()
    },
  }
}

let quietDepth = 0
let realLog: typeof console.log | undefined
const noop = (): void => {}

/**
 * hyperconn-pg calls console.log on every getConnection ("Reusing pool for core_t1"). With a
 * terminal or a pipe attached that write dominates its cost, and it is not what we want to
 * compare, so while its calls run console.log is a no-op (it still builds the message string).
 * Nothing of ours logs, and the bench itself does not print while this is active.
 */
export async function quietly<T>(work: () => Promise<T>): Promise<T> {
  if (quietDepth++ === 0) {
    realLog = console.log
    console.log = noop
  }
  try {
    return await work()
  } finally {
    if (--quietDepth === 0 && realLog !== undefined) console.log = realLog
  }
}
