import { awsSecretsManager } from '@hyperconn/core'
import type { Logger, Registry, SecretSource } from '@hyperconn/core'
import { startFakeSecretsManager, startPostgres } from '@hyperconn/testkit'
import type { FakeSecretsManager } from '@hyperconn/testkit'
import { CleanupStack } from './cleanup-stack.js'
import { provisionLocalTenants } from './local-tenants.js'
import type { LocalTenantDatabase } from './local-tenants.js'
import type { ShopConfig } from './shop-config.js'
import { createShopRegistry } from './shop-registry.js'
import { prepareTenantDatabases } from './tenant-databases.js'

export interface ShopEnvironment {
  readonly config: ShopConfig
  readonly registry: Registry
  /** Only in local mode: the fake Secrets Manager and the tenant databases behind it. */
  readonly local: { secretsManager: FakeSecretsManager; databases: readonly LocalTenantDatabase[] } | undefined
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
}

const LOCAL_REGION = 'eu-west-1'
/** The fake endpoint does not verify signatures, but the SDK insists on signing with something. */
const LOCAL_CREDENTIALS = { accessKeyId: 'AKIALOCALEXAMPLE', secretAccessKey: 'local-secret-access-key' }

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
    let local: ShopEnvironment['local']
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
      const databases = await provisionLocalTenants({ adminUrl, secretsManager, project: config.project, orgIds: config.tenants })
      // An embedded server is deleted with all its databases; someone else's server (tests) is tidied up.
      if (config.adminUrl !== undefined) {
        for (const database of databases) cleanup.defer(`database of ${database.orgId}`, () => database.dispose())
      }
      step(`created ${databases.length} tenant databases, each owned by its own login role`)
      // The real AWS SDK path: SigV4-signed GetSecretValue over HTTP, only the endpoint is local.
      secrets = awsSecretsManager({ region: LOCAL_REGION, endpoint: secretsManager.endpoint, credentials: LOCAL_CREDENTIALS })
      local = { secretsManager, databases }
    } else {
      // Region and credentials from the default chains (env, profile, SSO, container/instance role).
      secrets = awsSecretsManager(config.region === undefined ? {} : { region: config.region })
      local = undefined
    }
    const registry = createShopRegistry({
      project: config.project,
      secrets,
      ...(options.logger === undefined ? {} : { logger: options.logger }),
    })
    cleanup.defer('registry', () => registry.close({ timeoutMs: 5_000 }))
    await prepareTenantDatabases(registry, config.tenants, { seed: config.seed })
    step(`migrated${config.seed ? ' and seeded' : ''} ${config.tenants.join(', ')} through their secrets`)
    return {
      config,
      registry,
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
