import type { Logger, Registry, SecretSource } from '@hyperconn/core'
import { startFakeSecretsManager, startPostgres } from '@hyperconn/testkit'
import type { FakeSecretsManager } from '@hyperconn/testkit'
import { CleanupStack } from './cleanup-stack.js'
import { provisionSharedTenants } from './local-shared-tenants.js'
import type { LocalSharedTenants } from './local-shared-tenants.js'
import { provisionLocalTenants } from './local-tenants.js'
import type { LocalTenantDatabase } from './local-tenants.js'
import type { ShopConfig } from './shop-config.js'
import { migrateStores } from './pricing-migrations.js'
import { createShopRegistry, PRICING_SERVICE, REVIEWS_SERVICE } from './shop-registry.js'
import { awsSecrets, LOCAL_REGION, localSecrets } from './shop-secrets.js'
import { createShopTelemetry } from './shop-telemetry.js'
import type { ShopTelemetry } from './shop-telemetry.js'
import { prepareTenantDatabases } from './tenant-databases.js'

export interface ShopEnvironment {
  readonly config: ShopConfig
  readonly registry: Registry
  /** The registry's OpenTelemetry metrics, for `GET /metrics`. */
  readonly telemetry: ShopTelemetry
  /**
   * Only in local mode: the fake Secrets Manager, the shop tenants' databases behind it, and the stores
   * database (undefined when the config names no store).
   */
  readonly local:
    | {
        secretsManager: FakeSecretsManager
        databases: readonly LocalTenantDatabase[]
        shared: LocalSharedTenants | undefined
      }
    | undefined
  /** Closes the registry, then everything this environment started. Rejects with an AggregateError of what failed. */
  close(): Promise<void>
}

export interface StartShopEnvironmentOptions {
  logger?: Logger
  /** Progress lines for humans (the demo narrates start-up). */
  onStep?: (message: string) => void
  /** Aborts start-up between steps (Ctrl-C); what was started by then is stopped before the rejection. */
  signal?: AbortSignal
  /**
   * Passed to testkit's `startPostgres` for the embedded server (default true: stopped at once on
   * SIGINT/SIGTERM/SIGHUP). False when the caller handles those signals and calls `close()` itself, which
   * stops PostgreSQL last, after the requests it serves.
   */
  handleSignals?: boolean
  /**
   * Migrate the stores' pricing schemas (`migrations/pricing`) in this process once they are provisioned
   * (default true). The demo passes false and runs the `hyperconn migrate` CLI before its traffic instead.
   */
  migrateStores?: boolean
}

/**
 * Everything outside the app: secret source, databases, registry; tenant databases migrated (and seeded).
 * Local mode starts what it needs; on any failure, whatever was started is stopped again before rethrowing.
 */
export async function startShopEnvironment(
  config: ShopConfig,
  options: StartShopEnvironmentOptions = {},
): Promise<ShopEnvironment> {
  const step = (message: string): void => {
    options.onStep?.(message)
    options.signal?.throwIfAborted()
  }
  const cleanup = new CleanupStack()
  try {
    let secrets: SecretSource
    let localServices: { adminUrl: string; secretsManager: FakeSecretsManager } | undefined
    if (config.mode === 'local') {
      let adminUrl = config.adminUrl
      if (adminUrl === undefined) {
        step('starting an embedded PostgreSQL')
        const server = await startPostgres({ handleSignals: options.handleSignals !== false })
        cleanup.defer('embedded PostgreSQL', () => server.stop())
        adminUrl = server.adminUrl
      }
      const secretsManager = await startFakeSecretsManager({ region: LOCAL_REGION })
      cleanup.defer('fake Secrets Manager', () => secretsManager.close())
      step(`local Secrets Manager endpoint at ${secretsManager.endpoint}`)
      // The real AWS SDK path: SigV4-signed GetSecretValue over HTTP, only the endpoint is local.
      secrets = localSecrets(secretsManager.endpoint)
      localServices = { adminUrl, secretsManager }
    } else {
      secrets = awsSecrets(config.region)
    }
    // Databases created below are dropped after the registry (closed first) has let go of them. An
    // embedded server is deleted with all its databases; someone else's server (tests) is tidied up.
    const databases = new CleanupStack()
    cleanup.defer('databases', async () => {
      const failures = await databases.run()
      if (failures.length > 0) throw new AggregateError(failures, failures.map((f) => f.message).join('; '))
    })
    const telemetry = createShopTelemetry()
    cleanup.defer('metrics', () => telemetry.shutdown()) // after the registry: it stops reporting first
    const registry = createShopRegistry({
      project: config.project,
      secrets,
      meterProvider: telemetry.meterProvider,
      ...(options.logger === undefined ? {} : { logger: options.logger }),
    })
    cleanup.defer('registry', () => registry.close({ timeoutMs: 5_000 }))

    let local: ShopEnvironment['local']
    if (config.mode === 'local' && localServices !== undefined) {
      const { adminUrl, secretsManager } = localServices
      const stores = config.sharedTenants ?? []
      const clash = stores.find((orgId) => config.tenants.includes(orgId))
      if (clash !== undefined) throw new Error(`"${clash}" is both a shop tenant and a store: one secret cannot be both`)
      const tidy = config.adminUrl !== undefined
      const [own, storesDatabase] = await Promise.allSettled([
        provisionLocalTenants({ adminUrl, secretsManager, project: config.project, orgIds: config.tenants }),
        stores.length === 0
          ? undefined
          : provisionSharedTenants({
              adminUrl,
              secretsManager,
              project: config.project,
              orgIds: stores,
              // Fetches the secrets and binds the tenants while PostgreSQL is busy creating their schemas.
              whileOnboarding: () => warmStores(registry, stores),
            }),
      ])
      if (tidy) {
        for (const database of own.status === 'fulfilled' ? own.value : []) {
          databases.defer(`database of ${database.orgId}`, () => database.dispose())
        }
        const shared = storesDatabase.status === 'fulfilled' ? storesDatabase.value : undefined
        if (shared !== undefined) databases.defer('stores database', () => shared.dispose())
      }
      if (own.status === 'rejected') throw own.reason
      if (storesDatabase.status === 'rejected') throw storesDatabase.reason
      const shared = storesDatabase.value
      step(`created ${own.value.length} tenant databases, each owned by its own login role`)
      if (shared !== undefined) {
        step(`created one database for ${stores.length} stores: pricing in a schema org_<orgId> each (role ${shared.pricingUser}),`)
        step(`  reviews in one table behind row-level security on app.tenant_id (role ${shared.reviewsUser}: not owner, no BYPASSRLS);`)
        step(`  their secrets fetched and bound ahead of traffic (registry.warm) while the schemas were being created`)
        if (options.migrateStores !== false) {
          const report = await migrateStores(registry, stores, options.signal)
          const [failure] = report.failed
          if (failure !== undefined) {
            throw new Error(`migrating the pricing schema of ${report.failed.length} store(s) failed, ${failure.orgId} first: ${failure.error.message}`)
          }
          options.signal?.throwIfAborted()
          step(`migrated the pricing schema of ${report.succeeded.length} stores (migrations/pricing) in ${report.durationMs} ms`)
        }
      }
      local = { secretsManager, databases: own.value, shared }
    }
    await prepareTenantDatabases(registry, config.tenants, { seed: config.seed })
    step(`migrated${config.seed ? ' and seeded' : ''} ${config.tenants.join(', ')} through their secrets`)
    return {
      config,
      registry,
      telemetry,
      local,
      close: async () => {
        const failures = await cleanup.run()
        if (failures.length > 0) throw new AggregateError(failures, failures.map((f) => f.message).join('; '))
      },
    }
  } catch (error) {
    const failures = await cleanup.run()
    if (failures.length === 0) throw error
    const reason = error instanceof Error ? error.message : String(error)
    throw new AggregateError([error, ...failures], `${reason}; cleaning up after it failed too: ${failures.map((f) => f.message).join('; ')}`)
  }
}

/** Secrets and tenant bindings of every store, for both services (the second finds the secrets cached). */
async function warmStores(registry: Registry, orgIds: readonly string[]): Promise<void> {
  await registry.warm(orgIds, PRICING_SERVICE)
  await registry.warm(orgIds, REVIEWS_SERVICE)
}
