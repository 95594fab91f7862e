import { awsSecretsManager, createRegistry } from '@hyperconn/core'
import type { EvictionOptions, Registry, SecretSource, TenantPoolOptions } from '@hyperconn/core'
import { FAKE_CREDENTIALS, PROJECT, REGION, SERVICE } from './bench-env.js'
import type { BenchEnv } from './bench-env.js'

/** Identical pg.Pool settings for both contenders (these are @hyperconn/core's defaults, max aside). */
export function poolOptions(max: number): TenantPoolOptions {
  return { max, idleTimeoutMillis: 30_000, connectionTimeoutMillis: 10_000, keepAlive: true }
}

export interface OurRegistryOptions {
  readonly poolMax: number
  readonly eviction?: EvictionOptions
  readonly secretCacheMaxEntries?: number
}

/** AWS Secrets Manager at the local endpoint, configured as a user would (explicit endpoint and keys). */
export function localAwsSecrets(env: Pick<BenchEnv, 'secretsManager'>): SecretSource {
  return awsSecretsManager({ region: REGION, endpoint: env.secretsManager.endpoint, credentials: FAKE_CREDENTIALS })
}

/** @hyperconn/core with its defaults (secret TTL 5 min, eviction) except where a scenario sets them. */
export function createOurRegistry(secrets: SecretSource, options: OurRegistryOptions): Registry {
  return createRegistry({
    project: PROJECT,
    services: [SERVICE],
    secrets,
    pool: poolOptions(options.poolMax),
    ...(options.eviction === undefined ? {} : { eviction: options.eviction }),
    ...(options.secretCacheMaxEntries === undefined ? {} : { secretCache: { maxEntries: options.secretCacheMaxEntries } }),
  })
}
