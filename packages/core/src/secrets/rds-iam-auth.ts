import { inspect } from 'node:util'
import { systemClock } from '../clock.js'
import type { Clock } from '../clock.js'
import { AuthTokenError, InvalidOptionsError } from '../hyperconn-error.js'
import { mapAwsError } from './aws-secret-source.js'
import type { AwsCredentials, AwsCredentialsProvider } from './aws-secret-source.js'
import { safeIdentifier } from './secret-bundle.js'
import { redactText } from './secret-redaction.js'

/** Where a new connection goes: the host, port and user of the service's URL. */
export interface ConnectionEndpoint {
  readonly host: string
  readonly port: number
  readonly user: string
}

/**
 * Makes the password of each NEW connection (an existing connection never asks again). Called once per
 * connection attempt, so an implementation caches what it can. A password is a secret: implementations
 * must never log it, emit it in events, or put it (or the keys it is made from) in an error message.
 */
export interface ConnectionAuth {
  /** What kind of auth this is, e.g. `'rds-iam'`; no secret. */
  readonly kind: string
  /** The password for a new connection to `endpoint`. Rejects with a `HyperconnError`. */
  password(endpoint: ConnectionEndpoint): Promise<string>
}

/** What `rdsIamAuth`'s `signer` is called with: one token for this host, port, user and region. */
export interface RdsIamSignerParams {
  readonly hostname: string
  readonly port: number
  readonly username: string
  readonly region: string
  /** Undefined: the signer's default credential chain. */
  readonly credentials?: AwsCredentials | AwsCredentialsProvider | undefined
}

/** Options of `rdsIamAuth()`. */
export interface RdsIamAuthOptions {
  /** The database's AWS region, e.g. `"eu-west-1"`. */
  region: string
  /**
   * Static credentials or a provider (`fromIni()`, `fromTemporaryCredentials()`…); omit it to use the
   * SDK's default chain (environment, SSO, profiles, container and instance roles).
   */
  credentials?: AwsCredentials | AwsCredentialsProvider | undefined
  /** Measures token age; default the system clock. */
  clock?: Clock | undefined
  /** Makes one token; default `new Signer(params).getAuthToken()` of `@aws-sdk/rds-signer`. For tests. */
  signer?: ((params: RdsIamSignerParams) => Promise<string>) | undefined
}

/** RDS IAM tokens are valid for 15 minutes after signing. */
export const RDS_IAM_TOKEN_LIFETIME_MS = 15 * 60_000
/** A token is replaced this long before it expires: a connection never starts with an almost-dead token. */
export const RDS_IAM_TOKEN_MARGIN_MS = 60_000
/** Tokens kept at most (one per host, port and user); the oldest goes first. */
export const RDS_IAM_TOKEN_CACHE_SIZE = 1_000

const SDK_PACKAGE = '@aws-sdk/rds-signer'
const OPTION_KEYS: ReadonlySet<string> = new Set(['region', 'credentials', 'clock', 'signer'])

/** The part of `@aws-sdk/rds-signer` we use. */
export interface RdsSignerModule {
  Signer: new (config: {
    hostname: string
    port: number
    username: string
    region: string
    credentials?: AwsCredentials | ((...args: any[]) => Promise<AwsCredentials>) | undefined
  }) => { getAuthToken(): Promise<string> }
}

/** Internal seam (not exported from the package): how the SDK is loaded. */
export interface RdsIamAuthInternals {
  loadSdk?: (() => Promise<unknown>) | undefined
}

/**
 * RDS IAM authentication: the password of every new connection is an IAM auth token made with
 * `@aws-sdk/rds-signer` (an optional peer dependency, loaded on first use) for the connection's host,
 * port and user. A token is reused until one minute before its 15-minute expiry (sooner when the
 * credentials that signed it expire first). Tokens and credentials appear in no output.
 */
export function rdsIamAuth(options: RdsIamAuthOptions): ConnectionAuth {
  return new RdsIamAuth(options, {})
}

/** `rdsIamAuth` with an injectable SDK loader; for this package's tests only. */
export function createRdsIamAuth(options: RdsIamAuthOptions, internals: RdsIamAuthInternals): ConnectionAuth {
  return new RdsIamAuth(options, internals)
}

interface Config {
  readonly region: string
  readonly credentials: AwsCredentials | AwsCredentialsProvider | undefined
  readonly clock: Clock
  readonly signer: ((params: RdsIamSignerParams) => Promise<string>) | undefined
}

interface CachedToken {
  readonly token: string
  /** Clock time from which the token is not handed out any more. */
  readonly renewAt: number
}

interface Signed {
  readonly token: string
  /** Earliest credential expiration seen while signing (epoch ms), if any. */
  readonly credentialsExpireAt: number | undefined
}

class RdsIamAuth implements ConnectionAuth {
  readonly kind = 'rds-iam'
  readonly #config: Config
  readonly #loadSdk: () => Promise<unknown>
  /** Insertion order = age: the first entry is dropped when the cache is full. */
  readonly #tokens = new Map<string, CachedToken>()
  readonly #inFlight = new Map<string, Promise<string>>()
  /** In-flight or settled SDK import; cleared on failure so a later call retries. */
  #sdk: Promise<RdsSignerModule> | undefined

  constructor(options: RdsIamAuthOptions, internals: RdsIamAuthInternals) {
    this.#config = validate(options)
    this.#loadSdk = internals.loadSdk ?? (() => import('@aws-sdk/rds-signer'))
    Object.freeze(this)
  }

  password(endpoint: ConnectionEndpoint): Promise<string> {
    let key: string
    try {
      key = endpointKey(endpoint)
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)))
    }
    const cached = this.#tokens.get(key)
    if (cached !== undefined) {
      if (this.#config.clock.now() < cached.renewAt) return Promise.resolve(cached.token)
      this.#tokens.delete(key)
    }
    let pending = this.#inFlight.get(key)
    if (pending === undefined) {
      const signing = this.#sign(endpoint, key)
      pending = signing
      this.#inFlight.set(key, signing)
      // Success or failure, the next call after this one settles looks at the cache (or signs again).
      const settle = (): void => {
        if (this.#inFlight.get(key) === signing) this.#inFlight.delete(key)
      }
      signing.then(settle, settle)
    }
    return pending
  }

  async #sign(endpoint: ConnectionEndpoint, key: string): Promise<string> {
    const startedAt = this.#config.clock.now()
    const { token, credentialsExpireAt } = await this.#signToken(endpoint)
    // Measured from before signing: the token's own X-Amz-Date is no earlier than this.
    let renewAt = startedAt + RDS_IAM_TOKEN_LIFETIME_MS - RDS_IAM_TOKEN_MARGIN_MS
    // A presigned token dies with the temporary credentials that signed it.
    if (credentialsExpireAt !== undefined) renewAt = Math.min(renewAt, credentialsExpireAt - RDS_IAM_TOKEN_MARGIN_MS)
    if (this.#config.clock.now() < renewAt) {
      this.#tokens.delete(key)
      this.#tokens.set(key, { token, renewAt })
      while (this.#tokens.size > RDS_IAM_TOKEN_CACHE_SIZE) {
        const oldest = this.#tokens.keys().next()
        if (oldest.done === true) break
        this.#tokens.delete(oldest.value)
      }
    }
    return token
  }

  async #signToken(endpoint: ConnectionEndpoint): Promise<Signed> {
    const { region, credentials: configured } = this.#config
    const target = describeTarget(endpoint)
    // Every credential the signer saw, to redact from its errors and to bound the token's lifetime.
    const seen: AwsCredentials[] = []
    let credentials: AwsCredentials | AwsCredentialsProvider | undefined
    if (typeof configured === 'function') {
      // The SDK calls providers with identity properties ({ forceRefresh }…): pass them on.
      const provider: (properties?: unknown) => Promise<AwsCredentials> = configured
      credentials = async (properties?: unknown) => {
        const resolved = await provider(properties)
        if (typeof resolved === 'object' && resolved !== null) seen.push(resolved)
        return resolved
      }
    } else if (configured !== undefined) {
      seen.push(configured)
      // The SDK writes bookkeeping ($source) onto static credentials: hand it a copy.
      credentials = { ...configured }
    }
    const params: RdsIamSignerParams = {
      hostname: endpoint.host,
      port: endpoint.port,
      username: endpoint.user,
      region,
      ...(credentials === undefined ? {} : { credentials }),
    }
    let token: unknown
    try {
      if (this.#config.signer !== undefined) {
        token = await this.#config.signer(params)
      } else {
        const sdk = await this.#loadSigner(target)
        token = await new sdk.Signer(params).getAuthToken()
      }
    } catch (error) {
      if (error instanceof AuthTokenError) throw error
      throw signerError(target, error, seen)
    }
    if (typeof token !== 'string' || token === '') {
      throw new AuthTokenError(target, false, 'InvalidToken', {
        message: `Could not create an auth token for ${target}: the RDS IAM signer returned no token.`,
      })
    }
    let credentialsExpireAt: number | undefined
    for (const c of seen) {
      const at = c.expiration instanceof Date ? c.expiration.getTime() : undefined
      if (at !== undefined && Number.isFinite(at)) credentialsExpireAt = Math.min(credentialsExpireAt ?? at, at)
    }
    return { token, credentialsExpireAt }
  }

  async #loadSigner(target: string): Promise<RdsSignerModule> {
    let pending = this.#sdk
    if (pending === undefined) {
      const loading = this.#loadSdk().then(signerModule)
      pending = loading
      this.#sdk = loading
      loading.catch(() => {
        if (this.#sdk === loading) this.#sdk = undefined
      })
    }
    try {
      return await pending
    } catch (error) {
      throw sdkLoadError(target, error)
    }
  }

  [inspect.custom](): { kind: string; region: string } {
    return this.toJSON()
  }

  toJSON(): { kind: string; region: string } {
    return { kind: this.kind, region: this.#config.region }
  }
}

/** CJS interop: named exports normally, `default` under some bundlers. */
function signerModule(imported: unknown): RdsSignerModule {
  const direct = imported as Partial<RdsSignerModule> & { default?: Partial<RdsSignerModule> }
  const Signer = typeof direct.Signer === 'function' ? direct.Signer : direct.default?.Signer
  if (typeof Signer !== 'function') throw new TypeError(`${SDK_PACKAGE} has no Signer export`)
  return { Signer }
}

function validate(options: RdsIamAuthOptions): Config {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidOptionsError('rdsIamAuth(options) expects an options object such as { region: "eu-west-1" }.')
  }
  for (const key of Object.keys(options)) {
    if (!OPTION_KEYS.has(key)) {
      const shown = safeIdentifier(key) === undefined ? 'an unknown option' : `unknown option "${key}"`
      throw new InvalidOptionsError(`rdsIamAuth: ${shown}; the options are region, credentials, clock and signer.`)
    }
  }
  const { region, credentials, clock, signer } = options
  if (typeof region !== 'string' || !/^[a-z0-9-]{1,64}$/.test(region)) {
    throw new InvalidOptionsError('rdsIamAuth: region is required and must be an AWS region name such as "eu-west-1" (the database\'s region).')
  }
  if (
    credentials !== undefined &&
    typeof credentials !== 'function' &&
    (typeof credentials !== 'object' ||
      credentials === null ||
      typeof credentials.accessKeyId !== 'string' ||
      credentials.accessKeyId === '' ||
      typeof credentials.secretAccessKey !== 'string' ||
      credentials.secretAccessKey === '' ||
      (credentials.sessionToken !== undefined && typeof credentials.sessionToken !== 'string'))
  ) {
    // The value is not echoed: it may hold a key.
    throw new InvalidOptionsError(
      'rdsIamAuth: credentials must be { accessKeyId, secretAccessKey, sessionToken? } or a provider function; omit it to use the default credential chain.',
    )
  }
  if (clock !== undefined && (typeof clock !== 'object' || clock === null || typeof clock.now !== 'function')) {
    throw new InvalidOptionsError('rdsIamAuth: clock must be a Clock (an object with now()); omit it to use the system clock.')
  }
  if (signer !== undefined && typeof signer !== 'function') {
    throw new InvalidOptionsError('rdsIamAuth: signer must be a function (params) => Promise<token>; omit it to use @aws-sdk/rds-signer.')
  }
  return Object.freeze({ region, credentials, clock: clock ?? systemClock, signer })
}

function endpointKey(endpoint: ConnectionEndpoint): string {
  if (typeof endpoint !== 'object' || endpoint === null) {
    throw new InvalidOptionsError('rdsIamAuth: password() expects { host, port, user } of the connection.')
  }
  const { host, port, user } = endpoint
  if (typeof host !== 'string' || host === '' || host.startsWith('/')) {
    throw new InvalidOptionsError('rdsIamAuth: the connection needs a TCP host name (IAM authentication does not work over a Unix socket).')
  }
  if (!Number.isInteger(port) || port < 1 || port > 65_535) {
    throw new InvalidOptionsError('rdsIamAuth: the connection\'s port must be an integer from 1 to 65535.')
  }
  if (typeof user !== 'string' || user === '') {
    throw new InvalidOptionsError('rdsIamAuth: the connection URL needs a user name (the IAM database user).')
  }
  return `${host}\u0000${port}\u0000${user}`
}

function describeTarget(endpoint: ConnectionEndpoint): string {
  return `${endpoint.user}@${endpoint.host}:${endpoint.port}`
}

/**
 * Wraps a signer or credential-provider error. Our message carries only identifiers; the cause keeps
 * the original message unless it could hold a key or a token, in which case it is withheld entirely.
 */
function signerError(target: string, error: unknown, credentials: readonly AwsCredentials[]): AuthTokenError {
  const mapped = mapAwsError('rds-iam-token', error)
  const transient = 'transient' in mapped ? mapped.transient : false
  const secrets = credentials.flatMap((c) => [c.accessKeyId, c.secretAccessKey, c.sessionToken]).filter(
    (s): s is string => typeof s === 'string' && s !== '',
  )
  let sourceCode = 'sourceCode' in mapped ? mapped.sourceCode : undefined
  if (sourceCode !== undefined && mentionsSecret(sourceCode, secrets)) sourceCode = undefined
  return new AuthTokenError(target, transient, sourceCode, { cause: redactedCause(error, secrets) })
}

function redactedCause(error: unknown, secrets: readonly string[]): Error {
  const name = stringProperty(error, 'name')
  const code = stringProperty(error, 'code')
  const message = stringProperty(error, 'message') ?? (typeof error === 'string' ? error : 'unknown error')
  const safe = mentionsSecret(message, secrets)
    ? '(message withheld: it may contain credentials or a token)'
    : redactText(message, secrets).slice(0, 500)
  const cause = new Error(safe)
  cause.name = (name !== undefined && !mentionsSecret(name, secrets) ? safeIdentifier(name) : undefined) ?? 'Error'
  if (code !== undefined && safeIdentifier(code) !== undefined && !mentionsSecret(code, secrets)) {
    ;(cause as Error & { code?: string }).code = code
  }
  return cause
}

/** Looks like an AWS access key id, or a secret access key (40 base64 characters). */
const KEY_LIKE = /\b(?:AKIA|ASIA)[A-Z0-9]{16}\b|(?<![A-Za-z0-9/+=])[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])/

/**
 * True when text holds a known key, anything shaped like a key (a provider may fail before we see its
 * keys), or anything that looks like a presigned token or a signature.
 */
function mentionsSecret(text: string, secrets: readonly string[]): boolean {
  if (/x-amz-|action=connect|signature/i.test(text) || KEY_LIKE.test(text)) return true
  return secrets.some((s) => text.includes(s) || text.includes(encodeURIComponent(s)))
}

function sdkLoadError(target: string, error: unknown): AuthTokenError {
  // Loaders and test runners may wrap the resolution error, so look through the cause chain.
  let missing = false
  let current: unknown = error
  for (let depth = 0; depth < 5 && typeof current === 'object' && current !== null; depth++) {
    const code = stringProperty(current, 'code')
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') missing = true
    current = (current as { cause?: unknown }).cause
  }
  return new AuthTokenError(target, false, missing ? 'SdkNotInstalled' : 'SdkLoadFailed', {
    cause: redactedCause(error, []),
    message: missing
      ? `Could not create an auth token for ${target}: rdsIamAuth() needs the optional peer dependency ${SDK_PACKAGE}. Install it (npm install ${SDK_PACKAGE}).`
      : `Could not create an auth token for ${target}: ${SDK_PACKAGE} failed to load. Check that a single, complete copy of it is installed.`,
  })
}

function stringProperty(value: unknown, key: string): string | undefined {
  if (typeof value !== 'object' || value === null) return undefined
  try {
    const property = (value as Record<string, unknown>)[key]
    return typeof property === 'string' ? property : undefined
  } catch {
    return undefined
  }
}
