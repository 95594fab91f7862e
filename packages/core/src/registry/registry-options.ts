import type { ClientConfig, PoolConfig } from 'pg'
import type { Clock } from '../clock.js'
import { systemClock } from '../clock.js'
import { InvalidOptionsError } from '../hyperconn-error.js'
import type { Logger } from './registry-logger.js'
import { silentLogger } from './registry-logger.js'
import type { SecretSource } from '../secrets/secret-source.js'
import { settingNameProblem } from '../pools/tenant-settings.js'
import type { PoolSizing } from '../pools/target-pool.js'
import type { LeakDetectionOptions, LifecycleHooks } from '../pools/lease-hooks.js'
import type { ConnectionAuth } from '../secrets/rds-iam-auth.js'
import type { TelemetryOptions } from '../telemetry/telemetry-options.js'
import { TENANT_ID_PATTERN } from '../tenant-validation.js'

/** pg pool options; where to connect always comes from the tenant's secret, never from here. */
export type TenantPoolOptions = Omit<
  PoolConfig,
  'connectionString' | 'host' | 'port' | 'user' | 'password' | 'database' | 'Client'
> & {
  /**
   * An idle connection unused for at least this long is validated before it is handed out (an empty
   * query, or the tenant's settings round trip when one is due anyway); a dead one is destroyed and
   * another taken, so the first query after a server restart, failover or a frozen process succeeds.
   * Default 1000; 0 validates every reuse.
   */
  validateAfterIdleMs?: number
}

/** When unused physical pools and cached tenant bindings are dropped (`createRegistry({ eviction })`). */
export interface EvictionOptions {
  /**
   * Most physical pools (one per connection target) kept at once; the least recently used unused pool
   * is ended to make room, and when every pool is in use callers wait their turn. Default 200.
   */
  maxPools?: number
  /** Most cached tenant bindings (a tenant's secret version, target and settings). Default 20 000. */
  maxTenants?: number
  /** A pool with no checked-out connection, or a tenant binding unused, for this long is dropped. Default 300 000 (5 min). */
  idleTtlMs?: number
  /** How often the background sweeper looks for idle pools (the timer is unref'd). Default 30 000. */
  sweepIntervalMs?: number
}

/** How long secrets are cached and served when the source fails (`createRegistry({ secretCache })`). */
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

/**
 * How a service keeps tenants apart on a shared connection:
 * - `'database'` (default): each tenant's URL names its own database (or server); settings come from the URL only;
 * - `{ schema: (orgId) => name }`: `search_path` is set to that schema;
 * - `{ rls: 'app.tenant_id', value?: (orgId) => string }`: that setting is set to the org id (or `value(orgId)`)
 *   for row-level-security policies such as `USING (tenant_id = current_setting('app.tenant_id', true))`.
 */
export type IsolationOption =
  | 'database'
  | {
      /** The org's schema name; `search_path` is set to it. */
      readonly schema: (orgId: string) => string
    }
  | {
      /** The custom setting (with a dot, e.g. `app.tenant_id`) set to the org id. */
      readonly rls: string
      /** What the setting is set to, instead of the org id. */
      readonly value?: (orgId: string) => string
    }

/** One service in the object form of `services`: how its tenants are kept apart and their session settings. */
export interface ServiceOptions {
  /** Default `'database'`. */
  isolation?: IsolationOption
  /** Session settings per tenant (e.g. `{ statement_timeout: '5s' }`), applied like the isolation's. */
  tenantSettings?: (orgId: string) => Readonly<Record<string, string | number | boolean>>
  /** Lifecycle hooks of this service; they replace the registry-wide `hooks` for it. */
  hooks?: LifecycleHooks
  /**
   * `'transaction'`: the service's URLs point at a transaction pooler (PgBouncer in transaction mode, RDS
   * Proxy, Supavisor). No startup parameters are sent; tenant settings are transaction-local; an
   * autocommit query of a tenant with settings or hooks runs in its own short transaction; named
   * prepared statements are sent unnamed; session features (`tenant.connection`) are refused.
   */
  pooler?: 'transaction'
  /**
   * Read replicas: the secret's `${service}-postgresql-ro` key holds one URL or a list. Reads adapters know
   * are reads go to a healthy replica (round-robin) outside transactions; everything else to the primary.
   * `true`, or `{ retryAfterMs, maxLagMs }`: a replica that fails is skipped for `retryAfterMs` (default
   * 30 000); with `maxLagMs`, one whose replay lag exceeds it is skipped too.
   */
  replicas?: boolean | { retryAfterMs?: number; maxLagMs?: number }
  /**
   * How new connections get their password instead of the URL's: `rdsIamAuth({ region })` makes an RDS
   * IAM token per connection (the secret's URL then needs no password).
   */
  auth?: ConnectionAuth
}

/** The connection budget per server and the fair queue (`createRegistry({ connections })`). */
export interface ConnectionOptions {
  /**
   * The most connections this registry opens to one server (host:port), across all pools and services,
   * connections of draining pools included. `'auto'` (default) = floor(0.8 × (max_connections −
   * superuser_reserved_connections − reserved_connections) / instances), read on first contact.
   */
  max?: number | 'auto'
  /** How many app instances share each server's connections (divides 'auto'). Default 1. */
  instances?: number
  /** The most connections one tenant holds at once. Default 10. */
  perTenant?: number
  /** How long a caller waits in the fair queue before `PoolSaturatedError`. Default 10 000. */
  acquireTimeoutMs?: number
}

export type ResolvedIsolation =
  | { readonly kind: 'database' }
  | { readonly kind: 'schema'; readonly schema: (orgId: string) => string }
  | { readonly kind: 'rls'; readonly setting: string; readonly value: ((orgId: string) => string) | undefined }

export interface ResolvedService {
  readonly name: string
  readonly isolation: ResolvedIsolation
  readonly tenantSettings: ((orgId: string) => Readonly<Record<string, unknown>>) | undefined
  /** The service's hooks, or the registry-wide ones. */
  readonly hooks: LifecycleHooks | undefined
  /** Behind a transaction pooler. */
  readonly pooler: boolean
  readonly auth: ConnectionAuth | undefined
  /** Read replicas enabled, and their health rules. */
  readonly replicas: { readonly retryAfterMs: number; readonly maxLagMs: number | undefined } | undefined
}

/**
 * Options of `createRegistry`. `TService` is the union of the service names; `createRegistry` infers it
 * from a literal `services` list or object, so a misspelt service name elsewhere is a type error.
 */
export interface RegistryOptions<TService extends string = string> {
  /** Prefix of the default secret name `${project}-${orgId}`. Required unless `secretName` is given. */
  project?: string
  /**
   * The services: a list of names (each with `isolation: 'database'`), or an object of per-service options.
   * Any other service name is rejected with `UnknownServiceError`.
   */
  services: readonly TService[] | { readonly [S in TService]: ServiceOptions }
  /** Where secrets come from: `awsSecretsManager()`, `staticSecrets()`, `fileSecrets()` or your own. */
  secrets: SecretSource
  /** Secret name for an org. Default `${project}-${orgId}`. With a custom one, give `orgIdOf` for `listTenants()`. */
  secretName?: (orgId: string) => string
  /**
   * The inverse of `secretName`, for `registry.listTenants()`: the org id of a secret name, or undefined
   * for a secret that is not a tenant's. Required by `listTenants()` with a custom `secretName`; by default
   * the name minus `${project}-`.
   */
  orgIdOf?: (secretName: string) => string | undefined
  /**
   * Only secrets whose name starts with this are listed by `registry.listTenants()` (a Secrets Manager
   * `ListSecrets` name filter). Default `${project}-`; with a custom `secretName` and no `secretPrefix`,
   * every secret is listed and `orgIdOf` picks the tenants'.
   */
  secretPrefix?: string
  /** Key inside the secret JSON for a service. Default `${service}-postgresql`. */
  secretKey?: (service: string) => string
  /**
   * Each physical pool: `max` connections (default 10), `idleTimeoutMillis`, `maxLifetimeSeconds`,
   * `maxUses`, and pg client options (timeouts, keepAlive, ssl, ...). The target and credentials come
   * from the tenant's secret only.
   */
  pool?: TenantPoolOptions
  /** The connection budget per server and the fair queue. */
  connections?: ConnectionOptions
  /** When unused pools and tenant bindings are dropped. */
  eviction?: EvictionOptions
  /** Secret caching and serving stale secrets while the source fails. */
  secretCache?: SecretCacheOptions
  /** `onClaim` / `onRelease` on every checkout (per service: `services.<name>.hooks`). */
  hooks?: LifecycleHooks
  /** Report (and optionally destroy) checkouts held longer than `thresholdMs`. Off unless given. */
  leakDetection?: LeakDetectionOptions
  /**
   * OpenTelemetry metrics and spans (`true`, or options); needs `@opentelemetry/api` and an SDK registered
   * by the application. Off unless given.
   */
  telemetry?: boolean | TelemetryOptions
  /** Anything with debug/info/warn/error (pino, console). Silent by default; never one line per query. */
  logger?: Logger
  /** Injectable time source for tests. */
  clock?: Clock
}

/** Secret names starting with `prefix` are listed; `orgIdOf` turns one into an org id (or undefined). */
export interface TenantListing {
  readonly prefix: string
  readonly orgIdOf: (secretName: string) => string | undefined
}

export interface ResolvedOptions {
  readonly project: string | undefined
  readonly services: readonly string[]
  readonly serviceConfig: ReadonlyMap<string, ResolvedService>
  readonly secrets: SecretSource
  readonly secretName: (orgId: string) => string
  readonly secretKey: (service: string) => string
  /** How `listTenants()` finds org ids; undefined when `secretName` is custom and `orgIdOf` was not given. */
  readonly tenantListing: TenantListing | undefined
  /** pg client options shared by every connection (startup parameters, timeouts, TLS defaults). */
  readonly client: Readonly<ClientConfig>
  readonly sizing: PoolSizing
  readonly validateAfterIdleMs: number
  readonly leakDetection: { readonly thresholdMs: number; readonly destroy: boolean } | undefined
  readonly telemetry: Readonly<TelemetryOptions> | undefined
  readonly connections: Readonly<Required<ConnectionOptions>>
  readonly eviction: Readonly<Required<EvictionOptions>>
  readonly secretCache: Readonly<Required<SecretCacheOptions>>
  readonly logger: Logger
  readonly clock: Clock
}

const CLIENT_DEFAULTS: ClientConfig = Object.freeze({
  // pg waits forever by default; a dead host must fail a request, not hang it.
  connectionTimeoutMillis: 10_000,
  keepAlive: true,
  application_name: 'hyperconn',
})

const KNOWN_KEYS = new Set([
  'project', 'services', 'secrets', 'secretName', 'secretKey', 'orgIdOf', 'secretPrefix', 'pool', 'connections', 'eviction', 'secretCache', 'hooks',
  'leakDetection', 'telemetry', 'logger', 'clock',
])
const FORBIDDEN_POOL_KEYS = ['connectionString', 'host', 'port', 'user', 'password', 'database', 'Client']
// pg.Pool options the shared pools do not implement, each with what to use instead.
const UNSUPPORTED_POOL_KEYS: Readonly<Record<string, string>> = {
  min: 'connections are opened on demand; use registry.warm(orgIds, { connections }) to open some ahead of traffic',
  allowExitOnIdle: 'idle timers are unref\'d already; call registry.close() to end connections',
  verify: 'not supported',
  onConnect: 'not supported; per-tenant settings belong in services.<name>.tenantSettings',
  log: 'use the registry logger option',
  Promise: 'native promises are used',
  options: 'startup options are per tenant: put -c settings in the tenant URL or in services.<name>.tenantSettings',
}
const POOL_SIZING_KEYS = ['max', 'idleTimeoutMillis', 'maxLifetimeSeconds', 'maxUses', 'validateAfterIdleMs']
const SERVICE_KEYS = new Set(['isolation', 'tenantSettings', 'hooks', 'pooler', 'auth', 'replicas'])
const HOOK_KEYS = ['onClaim', 'onRelease']

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
export function resolveOptions(input: RegistryOptions<string>): ResolvedOptions {
  if (!isObject(input)) fail('options must be an object')
  const options = input as unknown as Record<string, unknown>
  for (const key of Object.keys(options)) {
    if (!KNOWN_KEYS.has(key)) fail(`unknown option "${key}"`)
  }

  const serviceConfig = resolveServices(options.services, resolveHooks('hooks', options.hooks))
  const services = [...serviceConfig.keys()]

  const secrets = options.secrets
  if (!isObject(secrets) || typeof secrets.get !== 'function')
    fail('secrets must be a secret source such as awsSecretsManager(), staticSecrets() or fileSecrets()')

  const project = options.project
  if (project !== undefined && (typeof project !== 'string' || project.length === 0 || project.length > 128 || !/^[A-Za-z0-9/_+=.@-]+$/.test(project)))
    fail('project must be a non-empty string of characters allowed in secret names ([A-Za-z0-9/_+=.@-])')
  if (options.secretName !== undefined && typeof options.secretName !== 'function') fail('secretName must be a function (orgId) => string')
  if (options.secretKey !== undefined && typeof options.secretKey !== 'function') fail('secretKey must be a function (service) => string')
  if (project === undefined && options.secretName === undefined) fail('give either project (secret names are `${project}-${orgId}`) or a secretName function')
  if (options.orgIdOf !== undefined && typeof options.orgIdOf !== 'function')
    fail('orgIdOf must be a function (secretName) => orgId | undefined, the inverse of secretName')
  const secretPrefix = options.secretPrefix
  if (secretPrefix !== undefined && (typeof secretPrefix !== 'string' || secretPrefix.length === 0 || secretPrefix.length > 512 || !/^[A-Za-z0-9/_+=.@-]+$/.test(secretPrefix)))
    fail('secretPrefix must be a non-empty string of characters allowed in secret names ([A-Za-z0-9/_+=.@-])')
  if (secretPrefix !== undefined && options.secretName !== undefined && options.orgIdOf === undefined)
    fail('secretPrefix is used by listTenants() with orgIdOf: with a custom secretName, add orgIdOf: (secretName) => orgId | undefined')

  const pool = section(options, 'pool')
  for (const key of FORBIDDEN_POOL_KEYS) {
    if (key in pool) fail(`pool.${key} is not allowed: each tenant's connection target and credentials come from its secret`)
  }
  for (const [key, fix] of Object.entries(UNSUPPORTED_POOL_KEYS)) {
    if (key in pool) fail(`pool.${key} is not supported: ${fix}`)
  }
  const sizing: PoolSizing = Object.freeze({
    max: number('pool', pool, 'max', 10, 1),
    idleTimeoutMillis: number('pool', pool, 'idleTimeoutMillis', 30_000, 0),
    // The pool guide's advice: recycle connections every ~10 minutes (DNS changes, failovers, rotated
    // passwords, server-side memory); each connection's lifetime is shortened by up to 10% at random.
    maxLifetimeSeconds: number('pool', pool, 'maxLifetimeSeconds', 600, 0),
    maxUses: number('pool', pool, 'maxUses', 0, 0),
  })
  const client: Record<string, unknown> = { ...CLIENT_DEFAULTS }
  for (const [key, value] of Object.entries(pool)) if (!POOL_SIZING_KEYS.includes(key)) client[key] = value

  const validateAfterIdleMs = number('pool', pool, 'validateAfterIdleMs', 1_000, 0)
  const leak = options.leakDetection
  let leakDetection: ResolvedOptions['leakDetection']
  if (leak !== undefined) {
    if (!isObject(leak)) fail('leakDetection must be an object { thresholdMs, destroy? }')
    for (const key of Object.keys(leak)) if (key !== 'thresholdMs' && key !== 'destroy') fail(`unknown option leakDetection.${key}`)
    if (leak.thresholdMs === undefined) fail('leakDetection.thresholdMs is required (e.g. 30000)')
    if (leak.destroy !== undefined && typeof leak.destroy !== 'boolean') fail('leakDetection.destroy must be true or false')
    leakDetection = Object.freeze({ thresholdMs: number('leakDetection', leak, 'thresholdMs', 0, 1), destroy: leak.destroy === true })
  }

  const telemetry = resolveTelemetry(options.telemetry)

  const connections = section(options, 'connections')
  for (const key of Object.keys(connections)) {
    if (!['max', 'instances', 'perTenant', 'acquireTimeoutMs'].includes(key)) fail(`unknown option connections.${key}`)
  }
  const max: number | 'auto' =
    connections.max === undefined || connections.max === 'auto' ? 'auto' : number('connections', connections, 'max', 0, 1)
  const resolvedConnections = {
    max,
    instances: number('connections', connections, 'instances', 1, 1),
    perTenant: number('connections', connections, 'perTenant', 10, 1),
    acquireTimeoutMs: number('connections', connections, 'acquireTimeoutMs', 10_000, 0),
  }

  const eviction = section(options, 'eviction')
  const secretCache = section(options, 'secretCache')
  const logger = options.logger
  if (logger !== undefined && (!isObject(logger) || ['debug', 'info', 'warn', 'error'].some((m) => typeof logger[m] !== 'function')))
    fail('logger must have debug, info, warn and error methods')

  const resolvedEviction = {
    maxPools: number('eviction', eviction, 'maxPools', 200, 1),
    maxTenants: number('eviction', eviction, 'maxTenants', 20_000, 1),
    idleTtlMs: number('eviction', eviction, 'idleTtlMs', 300_000, 0),
    sweepIntervalMs: number('eviction', eviction, 'sweepIntervalMs', 30_000, 10),
  }
  const resolvedSecretCache = {
    ttlMs: number('secretCache', secretCache, 'ttlMs', 300_000, 0),
    jitter: number('secretCache', secretCache, 'jitter', 0.1, 0, false, 1),
    staleIfErrorMs: number('secretCache', secretCache, 'staleIfErrorMs', 3_600_000, 0),
    notFoundTtlMs: number('secretCache', secretCache, 'notFoundTtlMs', 30_000, 0),
    maxEntries: number('secretCache', secretCache, 'maxEntries', 20_000, 1),
    errorBackoffMs: number('secretCache', secretCache, 'errorBackoffMs', 1_000, 0),
  }

  const userSecretName = options.secretName as ((orgId: string) => string) | undefined
  const secretName = userSecretName ?? ((orgId: string) => `${project as string}-${orgId}`)
  const secretKey = (options.secretKey as ((service: string) => string) | undefined) ?? ((service: string) => `${service}-postgresql`)
  const tenantListing = resolveTenantListing(
    project,
    userSecretName !== undefined,
    options.orgIdOf as TenantListing['orgIdOf'] | undefined,
    secretPrefix,
  )

  return Object.freeze({
    project: project,
    services: Object.freeze(services),
    serviceConfig,
    secrets: secrets as unknown as SecretSource,
    secretName,
    secretKey,
    tenantListing,
    client: Object.freeze(client as ClientConfig),
    sizing,
    validateAfterIdleMs,
    leakDetection,
    telemetry,
    connections: Object.freeze(resolvedConnections),
    eviction: Object.freeze(resolvedEviction),
    secretCache: Object.freeze(resolvedSecretCache),
    logger: (logger as Logger | undefined) ?? silentLogger,
    clock: (options.clock as Clock | undefined) ?? systemClock,
  })
}

function resolveTelemetry(input: unknown): Readonly<TelemetryOptions> | undefined {
  if (input === undefined || input === false) return undefined
  if (input === true) return Object.freeze({})
  if (!isObject(input)) fail('telemetry must be true, false or an object { tenantAttribute?, meterProvider?, tracerProvider? }')
  for (const key of Object.keys(input)) {
    if (!['tenantAttribute', 'meterProvider', 'tracerProvider'].includes(key)) fail(`unknown option telemetry.${key}`)
  }
  if (input.tenantAttribute !== undefined && typeof input.tenantAttribute !== 'boolean') fail('telemetry.tenantAttribute must be true or false')
  if (input.meterProvider !== undefined && (!isObject(input.meterProvider) || typeof input.meterProvider.getMeter !== 'function'))
    fail('telemetry.meterProvider must be an OpenTelemetry MeterProvider (with getMeter)')
  if (input.tracerProvider !== undefined && (!isObject(input.tracerProvider) || typeof input.tracerProvider.getTracer !== 'function'))
    fail('telemetry.tracerProvider must be an OpenTelemetry TracerProvider (with getTracer)')
  return Object.freeze({ ...input })
}

function resolveTenantListing(
  project: string | undefined,
  customSecretName: boolean,
  orgIdOf: TenantListing['orgIdOf'] | undefined,
  secretPrefix: string | undefined,
): TenantListing | undefined {
  if (customSecretName) return orgIdOf === undefined ? undefined : Object.freeze({ prefix: secretPrefix ?? '', orgIdOf })
  // The default names are `${project}-${orgId}`: the dash keeps project "mar" from listing "martech-org1".
  const projectPrefix = `${project as string}-`
  return Object.freeze({
    prefix: secretPrefix ?? projectPrefix,
    orgIdOf: orgIdOf ?? ((name: string) => (name.startsWith(projectPrefix) ? name.slice(projectPrefix.length) : undefined)),
  })
}

function resolveReplicas(service: string, input: unknown): ResolvedService['replicas'] {
  if (input === undefined || input === false) return undefined
  if (input === true) return Object.freeze({ retryAfterMs: 30_000, maxLagMs: undefined })
  if (!isObject(input)) fail(`services.${service}.replicas must be true or { retryAfterMs?, maxLagMs? }`)
  for (const key of Object.keys(input)) if (key !== 'retryAfterMs' && key !== 'maxLagMs') fail(`unknown option services.${service}.replicas.${key}`)
  return Object.freeze({
    retryAfterMs: number(`services.${service}.replicas`, input, 'retryAfterMs', 30_000, 0),
    maxLagMs: input.maxLagMs === undefined ? undefined : number(`services.${service}.replicas`, input, 'maxLagMs', 0, 0),
  })
}

function resolveAuth(service: string, auth: unknown): ConnectionAuth | undefined {
  if (auth === undefined) return undefined
  if (!isObject(auth) || typeof auth.password !== 'function' || typeof auth.kind !== 'string')
    fail(`services.${service}.auth must be a connection auth such as rdsIamAuth({ region }) (an object with kind and password(endpoint))`)
  return auth as unknown as ConnectionAuth
}

function resolvePooler(service: string, pooler: unknown): boolean {
  if (pooler === undefined) return false
  if (pooler !== 'transaction')
    fail(`services.${service}.pooler must be 'transaction' (PgBouncer in transaction mode, RDS Proxy, Supavisor) or left out for a direct connection`)
  return true
}

function resolveHooks(where: string, input: unknown): LifecycleHooks | undefined {
  if (input === undefined) return undefined
  if (!isObject(input)) fail(`${where} must be an object { onClaim?, onRelease? }`)
  for (const key of Object.keys(input)) if (!HOOK_KEYS.includes(key)) fail(`unknown option ${where}.${key} (known: ${HOOK_KEYS.join(', ')})`)
  for (const key of HOOK_KEYS) {
    if (input[key] !== undefined && typeof input[key] !== 'function') fail(`${where}.${key} must be a function (conn, { service, orgId }) => Promise<void>`)
  }
  return Object.freeze({ ...input })
}

function resolveServices(input: unknown, registryHooks: LifecycleHooks | undefined): ReadonlyMap<string, ResolvedService> {
  const entries: [string, unknown][] = Array.isArray(input)
    ? input.map((name) => [name as string, {}])
    : isObject(input)
      ? Object.entries(input)
      : fail('services must be a non-empty array of service names, or an object of per-service options')
  if (entries.length === 0) fail('services must name at least one service')
  const out = new Map<string, ResolvedService>()
  for (const [name, value] of entries) {
    if (typeof name !== 'string' || !TENANT_ID_PATTERN.test(name))
      fail('every service name must be 1-64 characters of [A-Za-z0-9_-], starting with a letter or digit')
    if (out.has(name)) fail('services contains duplicates')
    if (!isObject(value)) fail(`services.${name} must be an object of service options`)
    for (const key of Object.keys(value)) {
      if (!SERVICE_KEYS.has(key)) fail(`unknown option services.${name}.${key} (known: ${[...SERVICE_KEYS].join(', ')})`)
    }
    const tenantSettings = value.tenantSettings
    if (tenantSettings !== undefined && typeof tenantSettings !== 'function')
      fail(`services.${name}.tenantSettings must be a function (orgId) => ({ name: value })`)
    out.set(
      name,
      Object.freeze({
        name,
        isolation: resolveIsolation(name, value.isolation),
        tenantSettings: tenantSettings as ResolvedService['tenantSettings'],
        hooks: value.hooks === undefined ? registryHooks : resolveHooks(`services.${name}.hooks`, value.hooks),
        pooler: resolvePooler(name, value.pooler),
        auth: resolveAuth(name, value.auth),
        replicas: resolveReplicas(name, value.replicas),
      }),
    )
  }
  return out
}

function resolveIsolation(service: string, isolation: unknown): ResolvedIsolation {
  if (isolation === undefined || isolation === 'database') return Object.freeze({ kind: 'database' })
  const where = `services.${service}.isolation`
  if (!isObject(isolation)) fail(`${where} must be 'database', { schema: (orgId) => name } or { rls: 'app.tenant_id' }`)
  if ('schema' in isolation) {
    if (Object.keys(isolation).length !== 1 || typeof isolation.schema !== 'function')
      fail(`${where} must be { schema: (orgId) => schemaName } and nothing else`)
    return Object.freeze({ kind: 'schema', schema: isolation.schema as (orgId: string) => string })
  }
  if ('rls' in isolation) {
    for (const key of Object.keys(isolation)) if (key !== 'rls' && key !== 'value') fail(`unknown option ${where}.${key}`)
    const problem = settingNameProblem(isolation.rls)
    if (problem !== undefined) fail(`${where}.rls: ${problem}`)
    const setting = (isolation.rls as string).toLowerCase()
    if (!setting.includes('.'))
      fail(`${where}.rls must be a custom setting name with a dot, such as "app.tenant_id" (PostgreSQL only accepts unknown settings in that form)`)
    if (isolation.value !== undefined && typeof isolation.value !== 'function') fail(`${where}.value must be a function (orgId) => string`)
    return Object.freeze({ kind: 'rls', setting, value: isolation.value as ((orgId: string) => string) | undefined })
  }
  return fail(`${where} must be 'database', { schema: (orgId) => name } or { rls: 'app.tenant_id' }`)
}
