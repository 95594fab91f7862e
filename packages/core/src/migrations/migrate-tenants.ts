import { HyperconnError, InvalidOptionsError } from '../hyperconn-error.js'
import { redactText } from '../secrets/secret-redaction.js'
import type { Tenant } from '../tenant-types.js'

/** What `migrateTenants` needs of a registry. */
export interface MigrationRegistry<TService extends string> {
  /** The tenant handle a migration runs with (`registry.tenant`). */
  tenant(orgId: string, service?: TService): Tenant<TService>
  /** For `tenants: 'all'` (`registry.listTenants`). */
  listTenants?(service?: TService): AsyncIterable<string>
}

/** Options of `migrateTenants`. */
export interface MigrateTenantsOptions<TService extends string = string> {
  /** The service whose databases or schemas are migrated. */
  service: TService
  /** Org ids, an (async) iterable of them, or `'all'` = `registry.listTenants(service)`. Read in full first (for the total). */
  tenants: readonly string[] | Iterable<string> | AsyncIterable<string> | 'all'
  /** Tenants migrated at once (each holds one connection of its own while it runs). Default 4. */
  concurrency?: number
  /**
   * Migrates one tenant: e.g. Drizzle `migrate(getDb(orgId), ...)`, a Kysely `Migrator`, `getDb(orgId).migrate.latest()`.
   * It runs inside `tenant.connection()`: every query of this tenant inside uses the connection holding the lock.
   */
  migrate: (orgId: string, context: { readonly tenant: Tenant<TService> }) => Promise<unknown>
  /** After each tenant. */
  onProgress?: (progress: MigrationProgress) => void
  /** Aborting stops starting tenants; running ones finish. The rest are reported as not started. */
  signal?: AbortSignal
  /**
   * When another runner holds a tenant's migration lock: `'skip'` it (reported in `locked`; the other runner
   * migrates it) or `'wait'` for the lock and then run (the migrator then finds nothing left to do). Default 'skip'.
   */
  whenLocked?: 'skip' | 'wait'
}

/** One tenant finished (or was skipped). */
export interface MigrationProgress {
  readonly orgId: string
  readonly outcome: 'succeeded' | 'failed' | 'locked'
  readonly durationMs: number
  readonly done: number
  readonly failed: number
  readonly skipped: number
  readonly total: number
}

/** A tenant whose migration failed, with the error's name, code and redacted message. */
export interface FailedMigration {
  readonly orgId: string
  readonly error: { readonly name: string; readonly code: string | undefined; readonly message: string }
}

/** What `migrateTenants` resolves with (plain JSON). */
export interface MigrationReport {
  readonly service: string
  readonly total: number
  readonly succeeded: string[]
  readonly failed: FailedMigration[]
  /** Not migrated by this run: `locked` ∪ `notStarted`. */
  readonly skipped: string[]
  /** Another runner held the tenant's lock (`whenLocked: 'skip'`). */
  readonly locked: string[]
  /** Not started because the run was aborted. */
  readonly notStarted: string[]
  readonly aborted: boolean
  readonly durationMs: number
}

const LOCK_PREFIX = 'hyperconn.migrate'

/**
 * Migrates many tenants with bounded concurrency. Each tenant runs inside `tenant.connection()` holding a
 * PostgreSQL advisory lock keyed by (service, org) for the whole migration, so two runners (two deploys)
 * never migrate one tenant at once; the migrator's own bookkeeping (Drizzle's, Kysely's, Knex's migration
 * table) makes a tenant done by the other runner a no-op. One tenant's failure never stops the others.
 * Needs a direct connection (not `pooler: 'transaction'`): the lock is a session lock.
 */
export async function migrateTenants<TService extends string>(
  registry: MigrationRegistry<TService>,
  options: MigrateTenantsOptions<TService>,
): Promise<MigrationReport> {
  const { service, migrate, onProgress, signal } = options
  const concurrency = options.concurrency ?? 4
  const whenLocked = options.whenLocked ?? 'skip'
  if (typeof migrate !== 'function') throw new InvalidOptionsError('migrateTenants: migrate must be a function (orgId) => Promise.')
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 256) throw new InvalidOptionsError('migrateTenants: concurrency must be an integer from 1 to 256.')
  if (whenLocked !== 'skip' && whenLocked !== 'wait') throw new InvalidOptionsError("migrateTenants: whenLocked must be 'skip' or 'wait'.")
  if (onProgress !== undefined && typeof onProgress !== 'function') throw new InvalidOptionsError('migrateTenants: onProgress must be a function.')
  const started = Date.now()
  const ids = await collect(registry, service, options.tenants)
  const report = {
    service: service as string,
    total: ids.length,
    succeeded: [] as string[],
    failed: [] as FailedMigration[],
    skipped: [] as string[],
    locked: [] as string[],
    notStarted: [] as string[],
    aborted: false,
    durationMs: 0,
  }
  let next = 0
  const finish = (orgId: string, outcome: MigrationProgress['outcome'], since: number): void => {
    if (onProgress === undefined) return
    try {
      onProgress({
        orgId,
        outcome,
        durationMs: Date.now() - since,
        done: report.succeeded.length + report.failed.length + report.locked.length,
        failed: report.failed.length,
        skipped: report.locked.length,
        total: report.total,
      })
    } catch {
      // A progress display that throws must not stop the migration.
    }
  }
  const worker = async (): Promise<void> => {
    while (next < ids.length) {
      if (signal?.aborted === true) return
      const orgId = ids[next++] as string
      const since = Date.now()
      try {
        const tenant = registry.tenant(orgId, service)
        const outcome = await tenant.connection(() => runLocked(tenant, whenLocked, signal, () => migrate(orgId, { tenant })))
        if (outcome === 'aborted') {
          report.notStarted.push(orgId)
          continue
        }
        if (outcome === 'ran') report.succeeded.push(orgId)
        else report.locked.push(orgId)
        finish(orgId, outcome === 'ran' ? 'succeeded' : 'locked', since)
      } catch (error) {
        report.failed.push({ orgId, error: describe(error) })
        finish(orgId, 'failed', since)
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, ids.length) }, worker))
  if (next < ids.length) report.notStarted.push(...ids.slice(next))
  report.aborted = signal?.aborted === true && report.notStarted.length > 0
  report.skipped.push(...report.locked, ...report.notStarted)
  report.durationMs = Date.now() - started
  return report
}

/** How often a runner waiting for another runner's lock (`whenLocked: 'wait'`) tries again. */
const LOCK_RETRY_MS = 250

/**
 * Runs `fn` holding the tenant's migration lock: 'ran', 'locked' (another runner holds it and we skip), or
 * 'aborted' (the run was aborted before the lock was ours: `fn` never started).
 */
async function runLocked(
  tenant: Tenant,
  whenLocked: 'skip' | 'wait',
  signal: AbortSignal | undefined,
  fn: () => Promise<unknown>,
): Promise<'ran' | 'locked' | 'aborted'> {
  const key = `${LOCK_PREFIX}:${tenant.service}:${tenant.orgId}`
  const aborted = (): boolean => signal?.aborted === true
  const tryLock = async (): Promise<boolean> =>
    (await tenant.query<{ locked: boolean }>('SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS locked', [key])).rows[0]?.locked === true
  // Polled rather than pg_advisory_lock: a wait must end when the run is aborted.
  let locked = false
  while (!aborted() && !(locked = await tryLock()) && whenLocked === 'wait') await new Promise((resolve) => setTimeout(resolve, LOCK_RETRY_MS))
  if (!locked) return aborted() ? 'aborted' : 'locked'
  try {
    // Aborted while this worker waited for its connection or the lock: the tenant is not started.
    if (aborted()) return 'aborted'
    await fn()
  } finally {
    // A failed unlock leaves the lock on the pinned connection, which the next checkout resets (unlock all).
    await tenant.query('SELECT pg_advisory_unlock(hashtextextended($1, 0))', [key]).catch(() => undefined)
  }
  return 'ran'
}

async function collect<TService extends string>(
  registry: MigrationRegistry<TService>,
  service: TService,
  tenants: MigrateTenantsOptions<TService>['tenants'],
): Promise<string[]> {
  let source: Iterable<string> | AsyncIterable<string>
  if (tenants === 'all') {
    if (typeof registry.listTenants !== 'function') throw new InvalidOptionsError("migrateTenants: tenants: 'all' needs registry.listTenants().")
    source = registry.listTenants(service)
  } else if (tenants !== null && typeof tenants === 'object' && (Symbol.iterator in tenants || Symbol.asyncIterator in tenants)) {
    source = tenants
  } else {
    throw new InvalidOptionsError("migrateTenants: tenants must be an array of org ids, an (async) iterable of them, or 'all'.")
  }
  const seen = new Set<string>()
  for await (const orgId of source) seen.add(orgId)
  return [...seen]
}

/** Name, code and message only, redacted: a migration error may quote a connection string. */
function describe(error: unknown): FailedMigration['error'] {
  if (!(error instanceof Error)) return { name: 'Error', code: undefined, message: redactText(String(error)) }
  const code = (error as { code?: unknown }).code
  return {
    name: error instanceof HyperconnError ? error.name : error.constructor.name,
    code: typeof code === 'string' ? code : undefined,
    message: redactText(error.message),
  }
}
