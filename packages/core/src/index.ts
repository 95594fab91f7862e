export { createRegistry, Registry } from './registry/tenant-registry.js'
export { withRegistryScope } from './registry/scoped-handler.js'
export { migrateTenants } from './migrations/migrate-tenants.js'
export type { FailedMigration, MigrateTenantsOptions, MigrationProgress, MigrationRegistry, MigrationReport } from './migrations/migrate-tenants.js'
export type { ScopeRunner } from './registry/scoped-handler.js'
export type {
  CloseOptions,
  HealthReport,
  PhysicalPoolStats,
  RegistryStats,
  ServerHealth,
  ServerStats,
  ServiceOf,
  TenantPoolStats,
  WarmOptions,
} from './registry/tenant-registry.js'
export type {
  ConnectionOptions,
  EvictionOptions,
  IsolationOption,
  RegistryOptions,
  ServiceOptions,
  SecretCacheOptions,
  TenantPoolOptions,
} from './registry/registry-options.js'
export type { EvictionReason, RegistryEventName, RegistryEvents, RegistryListener } from './registry/registry-events.js'
export type { HookConnection, LeakDetectionOptions, LifecycleHooks } from './pools/lease-hooks.js'
export type { TelemetryOptions } from './telemetry/telemetry-options.js'
export type { Logger } from './registry/registry-logger.js'
export type { Clock, TimerHandle } from './clock.js'
export { TenantPool } from './pools/tenant-pool.js'

export { awsSecretsManager } from './secrets/aws-secret-source.js'
export type {
  AwsCredentials,
  AwsCredentialsProvider,
  AwsSecretsManagerOptions,
  SecretsManagerClientLike,
} from './secrets/aws-secret-source.js'
export { staticSecrets } from './secrets/static-secret-source.js'
export { fileSecrets } from './secrets/file-secret-source.js'
export { rdsIamAuth } from './secrets/rds-iam-auth.js'
export type { ConnectionAuth, ConnectionEndpoint, RdsIamAuthOptions, RdsIamSignerParams } from './secrets/rds-iam-auth.js'
export type { SecretSource, SecretValue } from './secrets/secret-source.js'
export type { SecretCacheStats, SecretFetchOutcome } from './secrets/secret-cache.js'

export { currentTransactionInfo, isInTransaction } from './transactions/transaction-context.js'
export type { TransactionBinding } from './transactions/transaction-context.js'
export type { TransactionInfo, TransactionStatus } from './transactions/transaction-state.js'
export type {
  IsolationLevel,
  TenantKey,
  Propagation,
  QueryOptions,
  Tenant,
  TenantConnection,
  TransactionOptions,
} from './tenant-types.js'

export {
  AuthTokenError,
  ConnectionError,
  ConnectionLeakError,
  ContextConflictError,
  HyperconnError,
  InvalidOptionsError,
  InvalidTenantIdError,
  hyperconnErrorOf,
  LifecycleHookError,
  isHyperconnError,
  PoolSaturatedError,
  RegistryClosedError,
  SecretFormatError,
  SecretNotFoundError,
  SecretSourceError,
  TransactionClosedError,
  TransactionPropagationError,
  TransactionRolledBackError,
  UnknownServiceError,
  UnsupportedError,
} from './hyperconn-error.js'
export type { HyperconnErrorCode, HyperconnErrorOptions, LeakReason, SaturatedLimit } from './hyperconn-error.js'
export { redactConnectionString } from './secrets/secret-redaction.js'
export { TENANT_ID_PATTERN } from './tenant-validation.js'
