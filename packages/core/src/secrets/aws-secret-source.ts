import { inspect } from 'node:util'
import {
  InvalidOptionsError,
  isHyperconnError,
  SecretFormatError,
  SecretNotFoundError,
  SecretSourceError,
} from '../hyperconn-error.js'
import { safeCause, safeIdentifier } from './secret-bundle.js'
import type { SecretSource, SecretValue } from './secret-source.js'
import type * as SdkModule from '@aws-sdk/client-secrets-manager'

/** Structural copy of the SDK's `AwsCredentialIdentity`, so our types don't need the optional SDK. */
export interface AwsCredentials {
  readonly accessKeyId: string
  readonly secretAccessKey: string
  readonly sessionToken?: string | undefined
  readonly expiration?: Date | undefined
}

/** Credentials fetched on demand, like the SDK's providers (`fromIni()`, `fromTemporaryCredentials()`…). */
export type AwsCredentialsProvider = () => Promise<AwsCredentials>

/** Anything with the SDK client's `send(command)`: a `SecretsManagerClient`, a wrapped or fake one. */
export interface SecretsManagerClientLike {
  /** Sends a `GetSecretValueCommand` (and, for `registry.listTenants()`, a `ListSecretsCommand`). */
  send(command: any, ...rest: any[]): Promise<any>
  /** Called by `close()` on a client the source created; a client you pass in is yours to destroy. */
  destroy?(): void
}

/** Options of `awsSecretsManager()`: all optional, the SDK's defaults apply. */
export interface AwsSecretsManagerOptions {
  /** Defaults to the SDK's region chain (AWS_REGION, profile…). */
  region?: string | undefined
  /** e.g. a VPC endpoint or a local fake; defaults to the regional endpoint. */
  endpoint?: string | undefined
  /** Defaults to the SDK's credential chain (env, SSO, profiles, container/instance roles). */
  credentials?: AwsCredentials | AwsCredentialsProvider | undefined
  /** Bring your own client (middleware, custom retry strategy…); then region/endpoint/credentials/maxAttempts/timeoutMs must not be set. */
  client?: SecretsManagerClientLike | undefined
  /** SDK attempts per request (a `get`, or one page of `list`) including the first; SDK default 3. */
  maxAttempts?: number | undefined
  /** Staging label to read, default AWSCURRENT. */
  versionStage?: string | undefined
  /** Connect and per-attempt request timeout in ms (default 5000). The SDK itself has none. */
  timeoutMs?: number | undefined
}

const DEFAULT_TIMEOUT_MS = 5_000
const SDK_PACKAGE = '@aws-sdk/client-secrets-manager'
/** ListSecrets page size: the most the service returns per call. */
const LIST_PAGE_SIZE = 100
/** Characters of secret names (and so of a name prefix worth sending as a ListSecrets filter). */
const NAME_PREFIX = /^[A-Za-z0-9/_+=.@-]{0,512}$/

/**
 * `GetSecretValue` from AWS Secrets Manager (and `ListSecrets` for `list(prefix)`). The SDK is an optional peer dependency, loaded with a
 * dynamic `import()` on the first `get()`; one client is created lazily and reused.
 */
export function awsSecretsManager(options: AwsSecretsManagerOptions = {}): SecretSource {
  return new AwsSecretsManagerSource(options)
}

type Sdk = Pick<typeof SdkModule, 'GetSecretValueCommand' | 'ListSecretsCommand' | 'SecretsManagerClient'>

interface Runtime {
  readonly sdk: Sdk
  readonly client: SecretsManagerClientLike
  /** Only a client we created is destroyed by `close()`. */
  readonly owned: boolean
}

interface Config {
  readonly region: string | undefined
  readonly endpoint: string | undefined
  readonly credentials: AwsCredentials | AwsCredentialsProvider | undefined
  readonly client: SecretsManagerClientLike | undefined
  readonly maxAttempts: number | undefined
  readonly versionStage: string | undefined
  readonly timeoutMs: number
}

class AwsSecretsManagerSource implements SecretSource {
  readonly kind = 'aws-secrets-manager'
  readonly #config: Config
  /** In-flight or settled SDK load + client; cleared on failure so a later call retries. */
  #runtime: Promise<Runtime> | undefined

  constructor(options: AwsSecretsManagerOptions) {
    this.#config = validate(options)
  }

  async get(name: string): Promise<SecretValue> {
    let runtime: Runtime
    try {
      runtime = await this.#load()
    } catch (error) {
      throw sdkLoadError(name, error)
    }
    const input: { SecretId: string; VersionStage?: string } = { SecretId: name }
    if (this.#config.versionStage !== undefined) input.VersionStage = this.#config.versionStage
    let output: { SecretString?: unknown; SecretBinary?: unknown } | undefined
    try {
      output = await runtime.client.send(new runtime.sdk.GetSecretValueCommand(input))
    } catch (error) {
      throw mapAwsError(name, error)
    }
    if (typeof output?.SecretString === 'string') return output.SecretString
    if (output?.SecretBinary instanceof Uint8Array) return new TextDecoder().decode(output.SecretBinary)
    throw new SecretFormatError(name, undefined, 'has neither a SecretString nor a SecretBinary value')
  }

  /**
   * `ListSecrets` filtered by name prefix, `MaxResults` 100 per page, following `NextToken` lazily: a
   * page is fetched when the previous one has been consumed. Each page goes through the same client as
   * `get`, so throttling and transient failures are retried by the SDK (`maxAttempts`) and what is left
   * is mapped as for `get` (`mapAwsError`). The service's name filter is a prefix match, but it has
   * been case-insensitive and word-based before, so names are checked again here. Needs the
   * `secretsmanager:ListSecrets` IAM permission (on resource `*`).
   */
  async *list(prefix: string): AsyncGenerator<string, void, undefined> {
    if (typeof prefix !== 'string' || !NAME_PREFIX.test(prefix)) {
      throw new InvalidOptionsError(
        'awsSecretsManager: list(prefix) expects a secret name prefix of at most 512 characters of [A-Za-z0-9/_+=.@-] (\'\' for all secrets).',
      )
    }
    const label = `${prefix}*`
    let runtime: Runtime
    try {
      runtime = await this.#load()
    } catch (error) {
      throw sdkLoadError(label, error)
    }
    let nextToken: string | undefined
    do {
      const input: { MaxResults: number; Filters?: { Key: 'name'; Values: string[] }[]; NextToken?: string } = { MaxResults: LIST_PAGE_SIZE }
      // An empty filter value is invalid: '' lists everything.
      if (prefix !== '') input.Filters = [{ Key: 'name', Values: [prefix] }]
      if (nextToken !== undefined) input.NextToken = nextToken
      let output: { SecretList?: unknown; NextToken?: unknown } | undefined
      try {
        output = await runtime.client.send(new runtime.sdk.ListSecretsCommand(input))
      } catch (error) {
        throw listError(prefix, mapAwsError(label, error))
      }
      const list = Array.isArray(output?.SecretList) ? (output.SecretList as unknown[]) : []
      for (const entry of list) {
        const name = stringProperty(entry, 'Name')
        if (name?.startsWith(prefix) === true) yield name
      }
      nextToken = typeof output?.NextToken === 'string' && output.NextToken !== '' ? output.NextToken : undefined
    } while (nextToken !== undefined)
  }

  async close(): Promise<void> {
    const pending = this.#runtime
    this.#runtime = undefined // a later get() starts over with a fresh client
    if (pending === undefined) return
    let runtime: Runtime
    try {
      runtime = await pending
    } catch {
      return
    }
    if (runtime.owned) runtime.client.destroy?.()
  }

  #load(): Promise<Runtime> {
    let pending = this.#runtime
    if (pending === undefined) {
      const loading = this.#init()
      pending = loading
      this.#runtime = loading
      loading.catch(() => {
        if (this.#runtime === loading) this.#runtime = undefined
      })
    }
    return pending
  }

  async #init(): Promise<Runtime> {
    const imported = await import('@aws-sdk/client-secrets-manager')
    // CJS interop: named exports normally, `default` under some bundlers.
    const sdk: Sdk =
      typeof imported.GetSecretValueCommand === 'function' ? imported : imported.default
    const config = this.#config
    if (config.client !== undefined) return { sdk, client: config.client, owned: false }
    const clientConfig: Record<string, unknown> = {
      // Without throwOnRequestTimeout the SDK only logs a warning (to console) and keeps waiting.
      requestHandler: {
        connectionTimeout: config.timeoutMs,
        requestTimeout: config.timeoutMs,
        throwOnRequestTimeout: true,
      },
    }
    if (config.region !== undefined) clientConfig.region = config.region
    if (config.endpoint !== undefined) clientConfig.endpoint = config.endpoint
    if (config.credentials !== undefined) {
      // The SDK writes bookkeeping ($source) onto static credentials: hand it a copy, so a frozen or
      // shared object from the caller works and is left untouched.
      clientConfig.credentials = typeof config.credentials === 'function' ? config.credentials : { ...config.credentials }
    }
    if (config.maxAttempts !== undefined) clientConfig.maxAttempts = config.maxAttempts
    return { sdk, client: new sdk.SecretsManagerClient(clientConfig), owned: true }
  }

  [inspect.custom](): string {
    const { region, endpoint, versionStage } = this.#config
    return `AwsSecretsManagerSource ${inspect({ region, endpoint, versionStage, client: this.#config.client === undefined ? 'own' : 'provided' })}`
  }

  toJSON(): { kind: string; region: string | undefined } {
    return { kind: this.kind, region: this.#config.region }
  }
}

function validate(options: AwsSecretsManagerOptions): Config {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidOptionsError('awsSecretsManager(options) expects an options object or nothing.')
  }
  const { region, endpoint, credentials, client, maxAttempts, versionStage, timeoutMs } = options
  if (region !== undefined && (typeof region !== 'string' || !/^[a-z0-9-]{1,64}$/.test(region))) {
    throw new InvalidOptionsError('awsSecretsManager: region must be an AWS region name such as "eu-west-1".')
  }
  if (endpoint !== undefined) {
    let url: URL | undefined
    try {
      url = typeof endpoint === 'string' ? new URL(endpoint) : undefined
    } catch {
      url = undefined
    }
    if (url === undefined || (url.protocol !== 'https:' && url.protocol !== 'http:')) {
      // The endpoint is not echoed: it may carry credentials.
      throw new InvalidOptionsError('awsSecretsManager: endpoint must be an http(s) URL.')
    }
  }
  if (
    credentials !== undefined &&
    typeof credentials !== 'function' &&
    (typeof credentials !== 'object' || credentials === null || typeof credentials.accessKeyId !== 'string')
  ) {
    throw new InvalidOptionsError(
      'awsSecretsManager: credentials must be { accessKeyId, secretAccessKey, sessionToken? } or a provider function; omit it to use the default credential chain.',
    )
  }
  if (client !== undefined && (typeof client !== 'object' || client === null || typeof client.send !== 'function')) {
    throw new InvalidOptionsError('awsSecretsManager: client must be a SecretsManagerClient (an object with send()).')
  }
  if (
    client !== undefined &&
    (region !== undefined || endpoint !== undefined || credentials !== undefined || maxAttempts !== undefined || timeoutMs !== undefined)
  ) {
    throw new InvalidOptionsError(
      'awsSecretsManager: pass either client or region/endpoint/credentials/maxAttempts/timeoutMs; configure those on your client instead.',
    )
  }
  if (maxAttempts !== undefined && (!Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 10)) {
    throw new InvalidOptionsError('awsSecretsManager: maxAttempts must be an integer from 1 to 10.')
  }
  if (versionStage !== undefined && (typeof versionStage !== 'string' || !/^[\w-]{1,256}$/.test(versionStage))) {
    throw new InvalidOptionsError('awsSecretsManager: versionStage must be a staging label such as "AWSCURRENT".')
  }
  if (timeoutMs !== undefined && (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0)) {
    throw new InvalidOptionsError('awsSecretsManager: timeoutMs must be a positive number of milliseconds.')
  }
  return Object.freeze({
    region,
    endpoint,
    credentials,
    client,
    maxAttempts,
    versionStage,
    timeoutMs: timeoutMs ?? DEFAULT_TIMEOUT_MS,
  })
}

function sdkLoadError(name: string, error: unknown): SecretSourceError {
  // Loaders and test runners may wrap the resolution error, so look through the cause chain.
  const missing = findInCauses(error, (e) => {
    const code = stringProperty(e, 'code')
    return code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND'
  })
  return new SecretSourceError(name, false, missing ? 'SdkNotInstalled' : 'SdkLoadFailed', {
    cause: safeCause(error),
    message: missing
      ? `Could not read secret "${name}": awsSecretsManager() needs the optional peer dependency ${SDK_PACKAGE}. Install it (npm install ${SDK_PACKAGE}) or use another secret source.`
      : `Could not read secret "${name}": ${SDK_PACKAGE} failed to load. Check that a single, complete copy of it is installed.`,
  })
}

/** `mapAwsError`'s verdict, with a message about listing (the IAM permission differs from `get`'s). */
function listError(prefix: string, mapped: SecretNotFoundError | SecretSourceError): SecretSourceError {
  const transient = mapped instanceof SecretSourceError && mapped.transient
  const sourceCode = mapped instanceof SecretSourceError ? mapped.sourceCode : 'ResourceNotFoundException'
  return new SecretSourceError(mapped.secretName, transient, sourceCode, {
    cause: mapped.cause,
    message: `Could not list the secrets whose name starts with "${prefix}"${sourceCode ? ` (${sourceCode})` : ''}: ${
      transient
        ? 'Secrets Manager is throttling or unavailable; retry later.'
        : 'the request was refused; ListSecrets needs the secretsmanager:ListSecrets IAM permission (on resource "*").'
    }`,
  })
}

/** Error names the SDK (or Secrets Manager) uses for throttling, server faults and timeouts. */
const TRANSIENT_NAMES: ReadonlySet<string> = new Set([
  'ThrottlingException',
  'Throttling',
  'TooManyRequestsException',
  'RequestLimitExceeded',
  'InternalServiceError',
  'InternalFailure',
  'ServiceUnavailable',
  'ServiceUnavailableException',
  'TimeoutError',
  'RequestTimeout',
  'RequestTimeoutException',
])

/** Node network errnos: the endpoint is down, unreachable or unresolvable right now. */
const NETWORK_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'ESOCKETTIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'ERR_HTTP2_STREAM_ERROR',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
])

/**
 * Maps an SDK error to our taxonomy: not found; transient (throttling, 5xx, timeouts, network);
 * permanent (access denied, KMS decryption, invalid request/parameter, anything else).
 */
export function mapAwsError(name: string, error: unknown): SecretNotFoundError | SecretSourceError {
  if (isHyperconnError(error) && (error.code === 'HC_SECRET_NOT_FOUND' || error.code === 'HC_SECRET_SOURCE')) {
    return error as SecretNotFoundError | SecretSourceError
  }
  const errorName = stringProperty(error, 'name')
  const cause = safeCause(error)
  if (errorName === 'ResourceNotFoundException') return new SecretNotFoundError(name, { cause })
  const code = networkCode(error)
  const status = (error as { $metadata?: { httpStatusCode?: unknown } } | null)?.$metadata?.httpStatusCode
  const transient =
    code !== undefined ||
    (errorName !== undefined && TRANSIENT_NAMES.has(errorName)) ||
    (typeof status === 'number' && (status >= 500 || status === 429)) ||
    (error as { $fault?: unknown } | null)?.$fault === 'server'
  // The SDK's error name when it has a specific one (ThrottlingException…), else the errno (ECONNREFUSED…).
  const specificName = errorName !== undefined && errorName !== 'Error' ? safeIdentifier(errorName) : undefined
  const sourceCode = specificName ?? code ?? safeIdentifier(stringProperty(error, 'code') ?? '')
  return new SecretSourceError(name, transient, sourceCode, { cause })
}

/** The network errno of `error` or of an error in its `cause` chain (fetch and undici wrap them). */
function networkCode(error: unknown): string | undefined {
  let found: string | undefined
  findInCauses(error, (e) => {
    const code = stringProperty(e, 'code')
    if (code !== undefined && NETWORK_CODES.has(code)) found = code
    else if (/socket hang up/i.test(stringProperty(e, 'message') ?? '')) found = 'ECONNRESET'
    return found !== undefined
  })
  return found
}

function findInCauses(error: unknown, test: (error: object) => boolean): boolean {
  let current: unknown = error
  for (let depth = 0; depth < 5 && typeof current === 'object' && current !== null; depth++) {
    if (test(current)) return true
    current = (current as { cause?: unknown }).cause
  }
  return false
}

function stringProperty(value: unknown, key: string): string | undefined {
  if (typeof value !== 'object' || value === null) return undefined
  const property = (value as Record<string, unknown>)[key]
  return typeof property === 'string' ? property : undefined
}
