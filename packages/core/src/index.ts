export { createRegistry, Registry } from './tenant-registry.js'
export type { CloseOptions, RegistryStats, TenantPoolStats } from './tenant-registry.js'
export type {
  EvictionOptions,
  RegistryOptions,
  SecretCacheOptions,
  TenantPoolOptions,
} from './registry-options.js'
export type { EvictionReason, RegistryEventName, RegistryEvents, RegistryListener } from './registry-events.js'
export type { Logger } from './registry-logger.js'
export type { Clock, TimerHandle } from './clock.js'
export { TenantPool } from './tenant-pool.js'

export { awsSecretsManager } from './aws-secret-source.js'
export type {
  AwsCredentials,
  AwsCredentialsProvider,
  AwsSecretsManagerOptions,
  SecretsManagerClientLike,
} from './aws-secret-source.js'
export { staticSecrets } from './static-secret-source.js'
export { fileSecrets } from './file-secret-source.js'
export type { SecretSource, SecretValue } from './secret-source.js'
export type { SecretCacheStats, SecretFetchOutcome } from './secret-cache.js'

export {
  bindActiveTransaction,
  bindTransaction,
  currentTransactionInfo,
  isInTransaction,
  TransactionBinding,
} from './transaction-context.js'
export type { TransactionInfo, TransactionStatus } from './transaction-state.js'
export type {
  IsolationLevel,
  TenantKey,
  Propagation,
  Tenant,
  TenantConnection,
  TransactionOptions,
} from './tenant-types.js'

export {
  ConnectionError,
  ContextConflictError,
  HyperconnError,
  InvalidOptionsError,
  InvalidTenantIdError,
  hyperconnErrorOf,
  isHyperconnError,
  PoolCapacityError,
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
export type { HyperconnErrorCode } from './hyperconn-error.js'
export { redactConnectionString } from './secret-redaction.js'
export { TENANT_ID_PATTERN } from './tenant-validation.js'
export { InstanceCache } from './instance-cache.js'
export { validateAdapterOptions } from './adapter-options.js'
export type { AdapterOptionRules } from './adapter-options.js'
