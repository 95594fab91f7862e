import { awsSecretsManager, createRegistry } from '@hyperconn/core'
import type { Clock, EvictionOptions, LeakDetectionOptions, LifecycleHooks, Registry, SecretSource, TelemetryOptions, TenantPoolOptions } from '@hyperconn/core'
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
  readonly secretCacheTtlMs?: number
  /** Added to `poolOptions(poolMax)` (scenario 8: validateAfterIdleMs, maxLifetimeSeconds). */
  readonly pool?: Pick<TenantPoolOptions, 'validateAfterIdleMs' | 'maxLifetimeSeconds'>
  readonly leakDetection?: LeakDetectionOptions
  readonly hooks?: LifecycleHooks
  readonly clock?: Clock
  /** Scenario 9: OpenTelemetry with the bench's no-op exporters (telemetry-otel.ts). */
  readonly telemetry?: TelemetryOptions
}

/** AWS Secrets Manager at the local endpoint, configured as a user would (explicit endpoint and keys). */
export function localAwsSecrets(env: Pick<BenchEnv, 'secretsManager'>): SecretSource {
  return awsSecretsManager({ region: REGION, endpoint: env.secretsManager.endpoint, credentials: FAKE_CREDENTIALS })
}

/** @hyperconn/core with its defaults (secret TTL 5 min, eviction) except where a scenario sets them. */
export function createOurRegistry(secrets: SecretSource, options: OurRegistryOptions): Registry {
  const secretCache = {
    ...(options.secretCacheMaxEntries === undefined ? {} : { maxEntries: options.secretCacheMaxEntries }),
    ...(options.secretCacheTtlMs === undefined ? {} : { ttlMs: options.secretCacheTtlMs }),
  }
  return createRegistry({
    project: PROJECT,
    services: [SERVICE],
    secrets,
    pool: { ...poolOptions(options.poolMax), ...options.pool },
    ...(options.eviction === undefined ? {} : { eviction: options.eviction }),
    ...(Object.keys(secretCache).length === 0 ? {} : { secretCache }),
    ...(options.leakDetection === undefined ? {} : { leakDetection: options.leakDetection }),
    ...(options.hooks === undefined ? {} : { hooks: options.hooks }),
    ...(options.clock === undefined ? {} : { clock: options.clock }),
    ...(options.telemetry === undefined ? {} : { telemetry: options.telemetry }),
  })
}
