import type { PoolConfig } from 'pg'
import type { Clock } from '../clock.js'
import { systemClock } from '../clock.js'
import { InvalidOptionsError } from '../hyperconn-error.js'
import type { Logger } from './registry-logger.js'
import { silentLogger } from './registry-logger.js'
import type { SecretSource } from '../secrets/secret-source.js'
import { TENANT_ID_PATTERN } from '../tenant-validation.js'

/** pg pool options; where to connect always comes from the tenant's secret, never from here. */
export type TenantPoolOptions = Omit<
  PoolConfig,
  'connectionString' | 'host' | 'port' | 'user' | 'password' | 'database' | 'Client'
>

export interface EvictionOptions {
  /** Most pools kept at once; the least recently used idle pool is evicted to make room. Default 200. */
  maxPools?: number
  /** A pool with no checked-out client for this long is ended. Default 300 000 (5 min). */
  idleTtlMs?: number
  /** How often the background sweeper looks for idle pools (the timer is unref'd). Default 30 000. */
  sweepIntervalMs?: number
}

export interface SecretCacheOptions {
  /** How long a fetched secret is used before it is fetched again. Default 300 000 (5 min). */
  ttlMs?: number
  /** Fraction of the TTL taken off at random, so secrets fetched together don't expire together. Default 0.1. */
  jitter?: number
  /** How long past its TTL a secret keeps being served while the source fails transiently. Default 3 600 000 (1 h). */
  staleIfErrorMs?: number
  /** How long "not found" is remembered, so unknown tenants don't hit the source on every request. Default 30 000. */
  notFoundTtlMs?: number
  /** Most secrets (found and not found) kept. Default 10 000. */
  maxEntries?: number
  /** After a transient failure, how long the source is left alone (stale secrets or the error are served). Default 1 000. */
  errorBackoffMs?: number
}

export interface RegistryOptions {
  /** Prefix of the default secret name `${project}-${orgId}`. Required unless `secretName` is given. */
  project?: string
  /** Allow-list of service names; any other service is rejected with `UnknownServiceError`. */
  services: readonly string[]
  /** Where secrets come from: `awsSecretsManager()`, `staticSecrets()`, `fileSecrets()` or your own. */
  secrets: SecretSource
  /** Secret name for an org. Default `${project}-${orgId}`. */
  secretName?: (orgId: string) => string
  /** Key inside the secret JSON for a service. Default `${service}-postgresql`. */
  secretKey?: (service: string) => string
  /** Passed to every `pg.Pool`. Connection target and credentials come from the secret only. */
  pool?: TenantPoolOptions
  eviction?: EvictionOptions
  secretCache?: SecretCacheOptions
  /** Anything with debug/info/warn/error (pino, console). Silent by default; never one line per query. */
  logger?: Logger
  /** Injectable time source for tests. */
  clock?: Clock
}

export interface ResolvedOptions {
  readonly project: string | undefined
  readonly services: readonly string[]
  readonly serviceSet: ReadonlySet<string>
  readonly secrets: SecretSource
  readonly secretName: (orgId: string) => string
  readonly secretKey: (service: string) => string
  readonly pool: Readonly<TenantPoolOptions>
  readonly eviction: Readonly<Required<EvictionOptions>>
  readonly secretCache: Readonly<Required<SecretCacheOptions>>
  readonly logger: Logger
  readonly clock: Clock
}

const POOL_DEFAULTS: TenantPoolOptions = Object.freeze({
  max: 10,
  idleTimeoutMillis: 30_000,
  // pg waits forever by default; a dead host must fail a request, not hang it.
  connectionTimeoutMillis: 10_000,
  keepAlive: true,
})

const KNOWN_KEYS = new Set([
  'project', 'services', 'secrets', 'secretName', 'secretKey', 'pool', 'eviction', 'secretCache', 'logger', 'clock',
])
const FORBIDDEN_POOL_KEYS = ['connectionString', 'host', 'port', 'user', 'password', 'database', 'Client']

function fail(message: string): never {
  throw new InvalidOptionsError(`createRegistry: ${message}`)
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function number(
  section: string,
  input: Record<string, unknown>,
  key: string,
  fallback: number,
  min: number,
  integer = true,
  max = Number.MAX_SAFE_INTEGER,
): number {
  const value = input[key]
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max || (integer && !Number.isInteger(value)))
    fail(`${section}.${key} must be ${integer ? 'an integer' : 'a number'} between ${min} and ${max}`)
  return value
}

function section(options: Record<string, unknown>, key: string): Record<string, unknown> {
  const value = options[key]
  if (value === undefined) return {}
  if (!isObject(value)) fail(`${key} must be an object`)
  return value
}

/** Validates everything up front so a misconfigured service fails at start, not on the first request. */
export function resolveOptions(input: RegistryOptions): ResolvedOptions {
  if (!isObject(input)) fail('options must be an object')
  const options = input as unknown as Record<string, unknown>
  for (const key of Object.keys(options)) {
    if (!KNOWN_KEYS.has(key)) fail(`unknown option "${key}"`)
  }

  const services = options.services
  if (!Array.isArray(services) || services.length === 0) fail('services must be a non-empty array of service names')
  for (const service of services) {
    if (typeof service !== 'string' || !TENANT_ID_PATTERN.test(service))
      fail('every service name must be 1-64 characters of [A-Za-z0-9_-], starting with a letter or digit')
  }
  if (new Set(services).size !== services.length) fail('services contains duplicates')

  const secrets = options.secrets
  if (!isObject(secrets) || typeof secrets.get !== 'function')
    fail('secrets must be a secret source such as awsSecretsManager(), staticSecrets() or fileSecrets()')

  const project = options.project
  if (project !== undefined && (typeof project !== 'string' || project.length === 0 || project.length > 128 || !/^[A-Za-z0-9/_+=.@-]+$/.test(project)))
    fail('project must be a non-empty string of characters allowed in secret names ([A-Za-z0-9/_+=.@-])')
  if (options.secretName !== undefined && typeof options.secretName !== 'function') fail('secretName must be a function (orgId) => string')
  if (options.secretKey !== undefined && typeof options.secretKey !== 'function') fail('secretKey must be a function (service) => string')
  if (project === undefined && options.secretName === undefined) fail('give either project (secret names are `${project}-${orgId}`) or a secretName function')

  const pool = section(options, 'pool')
  for (const key of FORBIDDEN_POOL_KEYS) {
    if (key in pool) fail(`pool.${key} is not allowed: each tenant's connection target and credentials come from its secret`)
  }
  if (pool.max !== undefined) number('pool', pool, 'max', 10, 1)

  const eviction = section(options, 'eviction')
  const secretCache = section(options, 'secretCache')
  const logger = options.logger
  if (logger !== undefined && (!isObject(logger) || ['debug', 'info', 'warn', 'error'].some((m) => typeof logger[m] !== 'function')))
    fail('logger must have debug, info, warn and error methods')

  const resolvedEviction = {
    maxPools: number('eviction', eviction, 'maxPools', 200, 1),
    idleTtlMs: number('eviction', eviction, 'idleTtlMs', 300_000, 0),
    sweepIntervalMs: number('eviction', eviction, 'sweepIntervalMs', 30_000, 10),
  }
  const resolvedSecretCache = {
    ttlMs: number('secretCache', secretCache, 'ttlMs', 300_000, 0),
    jitter: number('secretCache', secretCache, 'jitter', 0.1, 0, false, 1),
    staleIfErrorMs: number('secretCache', secretCache, 'staleIfErrorMs', 3_600_000, 0),
    notFoundTtlMs: number('secretCache', secretCache, 'notFoundTtlMs', 30_000, 0),
    maxEntries: number('secretCache', secretCache, 'maxEntries', 10_000, 1),
    errorBackoffMs: number('secretCache', secretCache, 'errorBackoffMs', 1_000, 0),
  }

  const userSecretName = options.secretName as ((orgId: string) => string) | undefined
  const secretName = userSecretName ?? ((orgId: string) => `${project as string}-${orgId}`)
  const secretKey = (options.secretKey as ((service: string) => string) | undefined) ?? ((service: string) => `${service}-postgresql`)

  return Object.freeze({
    project: project,
    services: Object.freeze([...(services as string[])]),
    serviceSet: new Set(services as string[]),
    secrets: secrets as unknown as SecretSource,
    secretName,
    secretKey,
    pool: Object.freeze({ ...POOL_DEFAULTS, ...(pool as TenantPoolOptions) }),
    eviction: Object.freeze(resolvedEviction),
    secretCache: Object.freeze(resolvedSecretCache),
    logger: (logger as Logger | undefined) ?? silentLogger,
    clock: (options.clock as Clock | undefined) ?? systemClock,
  })
}
