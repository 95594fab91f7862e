/** The stable `code` of a `HyperconnError`, one per error class. */
export type HyperconnErrorCode =
  | 'HC_INVALID_OPTIONS'
  | 'HC_INVALID_TENANT_ID'
  | 'HC_UNKNOWN_SERVICE'
  | 'HC_SECRET_NOT_FOUND'
  | 'HC_SECRET_FORMAT'
  | 'HC_SECRET_SOURCE'
  | 'HC_AUTH_TOKEN'
  | 'HC_CONNECTION'
  | 'HC_REGISTRY_CLOSED'
  | 'HC_POOL_SATURATED'
  | 'HC_TRANSACTION_CLOSED'
  | 'HC_TRANSACTION_PROPAGATION'
  | 'HC_TRANSACTION_ROLLED_BACK'
  | 'HC_CONTEXT_CONFLICT'
  | 'HC_UNSUPPORTED'
  | 'HC_CONNECTION_LEAK'
  | 'HC_HOOK_FAILED'

const CODES: ReadonlySet<string> = new Set<HyperconnErrorCode>([
  'HC_INVALID_OPTIONS',
  'HC_INVALID_TENANT_ID',
  'HC_UNKNOWN_SERVICE',
  'HC_SECRET_NOT_FOUND',
  'HC_SECRET_FORMAT',
  'HC_SECRET_SOURCE',
  'HC_AUTH_TOKEN',
  'HC_CONNECTION',
  'HC_REGISTRY_CLOSED',
  'HC_POOL_SATURATED',
  'HC_TRANSACTION_CLOSED',
  'HC_TRANSACTION_PROPAGATION',
  'HC_TRANSACTION_ROLLED_BACK',
  'HC_CONTEXT_CONFLICT',
  'HC_UNSUPPORTED',
  'HC_CONNECTION_LEAK',
  'HC_HOOK_FAILED',
])

/** Constructor options of hyperconn errors. */
export interface HyperconnErrorOptions {
  /** The underlying error, kept as `error.cause`. */
  cause?: unknown
}

/**
 * Every error hyperconn throws is a `HyperconnError` with a stable string `code`. Messages say how to
 * fix the problem and never contain a password, a connection string or a secret's JSON.
 */
export class HyperconnError extends Error {
  /** Stable across releases: match on this, not on the message. */
  readonly code: HyperconnErrorCode

  constructor(code: HyperconnErrorCode, message: string, options?: HyperconnErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
  }

  override get name(): string {
    return this.constructor.name
  }
}

/** Options are missing or malformed (`createRegistry`, secret sources, transaction options). */
export class InvalidOptionsError extends HyperconnError {
  constructor(message: string) {
    super('HC_INVALID_OPTIONS', message)
  }
}

/** A tenant id (org id) or service name does not match the allowed pattern. Nothing was fetched. */
export class InvalidTenantIdError extends HyperconnError {
  readonly field: 'orgId' | 'service'
  constructor(field: 'orgId' | 'service', reason: string) {
    super(
      'HC_INVALID_TENANT_ID',
      `Invalid ${field}: ${reason}. Use 1-64 characters from [A-Za-z0-9_-], starting with a letter or digit.`,
    )
    this.field = field
  }
}

/** A service name that is not in the registry's `services` allow-list. */
export class UnknownServiceError extends HyperconnError {
  readonly service: string
  constructor(service: string, known: readonly string[]) {
    super(
      'HC_UNKNOWN_SERVICE',
      `Unknown service "${service}". Configured services: ${known.map((s) => `"${s}"`).join(', ')}. Add it to createRegistry({ services }).`,
    )
    this.service = service
  }
}

/** The secret source has no secret with this name (e.g. `ResourceNotFoundException`). Negative-cached. */
export class SecretNotFoundError extends HyperconnError {
  readonly secretName: string
  constructor(secretName: string, options?: HyperconnErrorOptions) {
    super(
      'HC_SECRET_NOT_FOUND',
      `Secret "${secretName}" was not found. Check the org id, the registry's project/secretName option, and that the secret exists in this region.`,
      options,
    )
    this.secretName = secretName
  }
}

/** The secret exists but is not JSON, lacks the service's key, or the value is not a PostgreSQL URL. */
export class SecretFormatError extends HyperconnError {
  readonly secretName: string
  readonly key: string | undefined
  constructor(secretName: string, key: string | undefined, problem: string) {
    super(
      'HC_SECRET_FORMAT',
      key === undefined
        ? `Secret "${secretName}" ${problem}. Store a JSON object such as {"core-postgresql": "postgresql://user:password@host:5432/db"}.`
        : `Secret "${secretName}", key "${key}": ${problem}. The value must be a postgres:// or postgresql:// URL.`,
    )
    this.secretName = secretName
    this.key = key
  }
}

/**
 * The secret source failed. `transient` is true for throttling, 5xx, timeouts and network errors
 * (retry later; cached secrets keep being served) and false for access denied, decryption failure
 * and other permanent problems.
 */
export class SecretSourceError extends HyperconnError {
  readonly secretName: string
  readonly transient: boolean
  readonly sourceCode: string | undefined
  constructor(
    secretName: string,
    transient: boolean,
    sourceCode: string | undefined,
    options?: HyperconnErrorOptions & { message?: string },
  ) {
    super(
      'HC_SECRET_SOURCE',
      // sources with a more specific fix (missing SDK, unreadable file) say it themselves
      options?.message ??
        `Could not read secret "${secretName}"${sourceCode ? ` (${sourceCode})` : ''}: ${
          transient
            ? 'the secret source is throttling or unavailable; retry later.'
            : 'the request was refused; check the IAM permissions and KMS key for this secret.'
        }`,
      options,
    )
    this.secretName = secretName
    this.transient = transient
    this.sourceCode = sourceCode
  }
}

/**
 * A connection's password could not be made (e.g. an RDS IAM token: no AWS credentials, the optional
 * `@aws-sdk/rds-signer` not installed). `transient` is true for throttling, timeouts and network errors
 * of the credential provider (retry later). The message and `cause` never contain a token or a key.
 */
export class AuthTokenError extends HyperconnError {
  /** `user@host:port` the token was for (no secret). */
  readonly target: string
  readonly transient: boolean
  /** The provider's error name or errno (`CredentialsProviderError`, `ECONNREFUSED`…), or ours (`SdkNotInstalled`). */
  readonly sourceCode: string | undefined
  constructor(
    target: string,
    transient: boolean,
    sourceCode: string | undefined,
    options?: HyperconnErrorOptions & { message?: string },
  ) {
    super(
      'HC_AUTH_TOKEN',
      options?.message ??
        `Could not create an auth token for ${target}${sourceCode ? ` (${sourceCode})` : ''}: ${
          transient
            ? 'the AWS credential provider is throttling or unreachable; retry later.'
            : 'check that AWS credentials are available (the credentials option, or the default chain: environment, profile, container or instance role) and that the region is right.'
        }`,
      options,
    )
    this.target = target
    this.transient = transient
    this.sourceCode = sourceCode
  }
}

/** A PostgreSQL connection failed; the message is redacted and `sqlState` carries pg's code. */
export class ConnectionError extends HyperconnError {
  readonly sqlState: string | undefined
  constructor(message: string, sqlState: string | undefined, options?: HyperconnErrorOptions) {
    super('HC_CONNECTION', message, options)
    this.sqlState = sqlState
  }
}

/** The registry was closed; create a new one. */
export class RegistryClosedError extends HyperconnError {
  constructor(detail?: string, options?: HyperconnErrorOptions) {
    super(
      'HC_REGISTRY_CLOSED',
      detail ?? 'The registry is closed; no new pools, queries or transactions can start. Create a new registry.',
      options,
    )
  }
}

/** Which limit kept a caller waiting: see `PoolSaturatedError`. */
export type SaturatedLimit = 'connections.max' | 'connections.perTenant' | 'pool.max' | 'eviction.maxPools'

const SATURATION_FIX: Readonly<Record<SaturatedLimit, string>> = {
  'connections.max':
    'every connection this registry may open to the server is in use. Raise connections.max (or connections.instances if fewer app instances share the server), lower pool.max, or hold connections for less time',
  'connections.perTenant':
    "this tenant already holds connections.perTenant connections. Raise connections.perTenant, or look for transactions or acquired connections this tenant holds too long (a transaction that opens another one with propagation 'requires_new' needs two)",
  'pool.max':
    'its pool has pool.max connections, all in use. Raise pool.max (within connections.max) or hold connections for less time',
  'eviction.maxPools':
    'eviction.maxPools pools exist and every one has connections in use. Raise eviction.maxPools',
}

/**
 * A caller waited `acquireTimeoutMs` for a connection and none became free: the connection budget, the
 * tenant's `perTenant` share, the pool's `max` or `maxPools` was exhausted. Retry later or raise the limit.
 */
export class PoolSaturatedError extends HyperconnError {
  readonly service: string
  readonly orgId: string
  readonly waitedMs: number
  readonly limit: SaturatedLimit
  /** The limit's value, where it has one (undefined while `connections.max: 'auto'` is being read). */
  readonly limitValue: number | undefined
  constructor(service: string, orgId: string, waitedMs: number, limit: SaturatedLimit, limitValue: number | undefined, server: string) {
    super(
      'HC_POOL_SATURATED',
      `Waited ${waitedMs} ms (connections.acquireTimeoutMs) for a connection for service "${service}", org "${orgId}" on ${server}: ` +
        `${limit}${limitValue === undefined ? '' : ` (${limitValue})`} was reached — ${SATURATION_FIX[limit]}.`,
    )
    this.service = service
    this.orgId = orgId
    this.waitedMs = waitedMs
    this.limit = limit
    this.limitValue = limitValue
  }
}

/** Work was issued on a transaction after it committed or rolled back. */
export class TransactionClosedError extends HyperconnError {
  constructor(detail = 'the transaction has already ended') {
    super(
      'HC_TRANSACTION_CLOSED',
      `Cannot use this transaction: ${detail}. Await every query inside the transaction callback; run later work in its own transaction.`,
    )
  }
}

/** The requested propagation cannot be honoured (e.g. `mandatory` with no transaction, or joining with other options). */
export class TransactionPropagationError extends HyperconnError {
  constructor(message: string) {
    super('HC_TRANSACTION_PROPAGATION', message)
  }
}

/** PostgreSQL answered COMMIT with ROLLBACK: an earlier statement failed and the transaction was aborted. */
export class TransactionRolledBackError extends HyperconnError {
  constructor(options?: HyperconnErrorOptions) {
    super(
      'HC_TRANSACTION_ROLLED_BACK',
      'The transaction was rolled back by PostgreSQL instead of committed, because a statement inside it failed (an error was caught and swallowed). Use propagation "nested" to recover from inner errors.',
      options,
    )
  }
}

/** Two incompatible copies of @hyperconn/core are loaded in one process. */
export class ContextConflictError extends HyperconnError {
  constructor(message: string) {
    super('HC_CONTEXT_CONFLICT', message)
  }
}

/** A feature of an ORM that hyperconn cannot support (yet), e.g. streaming through a tenant connection. */
export class UnsupportedError extends HyperconnError {
  constructor(message: string) {
    super('HC_UNSUPPORTED', message)
  }
}

/** Why a checked-out connection was taken from its holder: see `ConnectionLeakError`. */
export type LeakReason = 'threshold' | 'scope'

/**
 * The connection was taken back from its holder: it was held longer than `leakDetection.thresholdMs`
 * (with `destroy: true`), or it was still held when its `registry.scope(fn)` settled. Release connections
 * in a `finally` (or with `await using`) inside the scope that acquired them.
 */
export class ConnectionLeakError extends HyperconnError {
  readonly service: string
  readonly orgId: string
  readonly reason: LeakReason
  constructor(service: string, orgId: string, reason: LeakReason) {
    super(
      'HC_CONNECTION_LEAK',
      reason === 'threshold'
        ? `This connection of service "${service}", org "${orgId}" was held longer than leakDetection.thresholdMs and was destroyed (leakDetection.destroy). ` +
            'Release it in a finally block (or with await using) as soon as the work is done, or raise thresholdMs for long jobs.'
        : `This connection of service "${service}", org "${orgId}" was still held when its registry.scope() settled and was destroyed. ` +
            'Await all work and release connections (finally / await using) before the scope callback returns.',
    )
    this.service = service
    this.orgId = orgId
    this.reason = reason
  }
}

/** A lifecycle hook (`onClaim`) threw: the connection was destroyed and the acquire rejected. `cause` is the hook's error. */
export class LifecycleHookError extends HyperconnError {
  readonly hook: 'onClaim' | 'onRelease'
  readonly service: string
  readonly orgId: string
  constructor(hook: 'onClaim' | 'onRelease', service: string, orgId: string, message: string, options?: HyperconnErrorOptions) {
    super(
      'HC_HOOK_FAILED',
      `The ${hook} hook of service "${service}", org "${orgId}" failed: ${message}. The connection was destroyed; ` +
        `fix the hook (it runs on every checkout${hook === 'onClaim' ? ', after the tenant\'s settings' : ', before the connection goes back'}).`,
      options,
    )
    this.hook = hook
    this.service = service
    this.orgId = orgId
  }
}

/** Recognises hyperconn errors by shape, so it also works across duplicate copies of the package. */
export function isHyperconnError(error: unknown): error is HyperconnError {
  if (error instanceof HyperconnError) return true
  if (typeof error !== 'object' || error === null) return false
  const code = (error as { code?: unknown }).code
  return error instanceof Error && typeof code === 'string' && CODES.has(code)
}

/**
 * The hyperconn error behind `error`, looking through `cause` chains: ORMs wrap driver errors (Drizzle
 * throws `DrizzleQueryError` with the original as `cause`), so map errors with this rather than `instanceof`.
 */
export function hyperconnErrorOf(error: unknown): HyperconnError | undefined {
  let current: unknown = error
  for (let depth = 0; depth < 8 && current !== undefined && current !== null; depth++) {
    if (isHyperconnError(current)) return current
    current = (current as { cause?: unknown }).cause
  }
  return undefined
}
