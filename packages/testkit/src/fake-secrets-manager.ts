import { createServer } from 'node:http'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { randomBytes, randomUUID } from 'node:crypto'
import { once } from 'node:events'

export type SecretsManagerFault = 'none' | 'throttle' | 'error500' | 'accessDenied' | 'refuse' | 'hang'

export interface FakeSecretsManager extends AsyncDisposable {
  /** e.g. http://127.0.0.1:54321 */
  readonly endpoint: string
  readonly region: string
  /** Creates the secret or adds a new AWSCURRENT version (the old one becomes AWSPREVIOUS). Objects are JSON.stringified. */
  setSecret(name: string, value: string | object): void
  deleteSecret(name: string): void
  /** GetSecretValue calls (all, including failed/faulted ones) per secret name and in total. */
  getSecretValueCalls(name?: string): number
  /** All requests by X-Amz-Target operation name (e.g. 'GetSecretValue', 'ListSecrets'). */
  calls(operation: string): number
  resetCounters(): void
  /**
   * Fault for the next `times` requests (default: until changed). 'refuse' stops listening and destroys open
   * sockets so clients get ECONNREFUSED (no requests arrive to count, so `times` is rejected); any other mode
   * re-listens on the same port. 'hang' holds requests unanswered until the next setFault() call with another
   * mode (then they are answered normally; with `times`, even after the count ran out) or close() (then their
   * sockets are destroyed). With `operation` (e.g. 'ListSecrets'), only requests of that operation take the fault
   * (and count towards `times`); others are answered normally ('refuse' cannot be limited to one operation).
   */
  setFault(fault: SecretsManagerFault, options?: { times?: number; operation?: string }): Promise<void>
  /** Delay before every answer, on real timers (captured at import, so vi.useFakeTimers() does not stall it). */
  setDelay(ms: number): void
  /** Authorization header of the last request (SigV4: `AWS4-HMAC-SHA256 Credential=<key id>/<date>/<region>/secretsmanager/aws4_request, ...`). */
  readonly lastAuthorization: string | undefined
  /** Idempotent. */
  close(): Promise<void>
}

export interface StartFakeSecretsManagerOptions {
  /** Default 0 (any free port). */
  port?: number
  /** Default 'us-east-1'; only used in ARNs (signatures are not verified). */
  region?: string
  /** Initial secrets, as with setSecret. */
  secrets?: Record<string, string | object>
}

export async function startFakeSecretsManager(options: StartFakeSecretsManagerOptions = {}): Promise<FakeSecretsManager> {
  const fake = new LocalSecretsManager(options.region ?? 'us-east-1')
  for (const [name, value] of Object.entries(options.secrets ?? {})) fake.setSecret(name, value)
  await fake.listen(options.port ?? 0)
  return fake
}

const HOST = '127.0.0.1'
const ACCOUNT = '123456789012'
const TARGET_PREFIX = 'secretsmanager.'
/** ListSecrets page size when MaxResults is not given, and the largest MaxResults the service accepts. */
const LIST_PAGE_MAX = 100
/** Characters of a ListSecrets filter value (`!` negates), as the service's API reference gives them. */
const FILTER_VALUE = /^!?[a-zA-Z0-9 :_@/+=.\-!]*$/
const realSetTimeout = globalThis.setTimeout

interface SecretVersion {
  readonly id: string
  readonly value: string
  readonly created: number
}

interface StoredSecret {
  /** Creation order: ListSecrets sorts by it (like the service's creation date) and pages after it. */
  readonly seq: number
  readonly name: string
  readonly arn: string
  readonly created: number
  description: string | undefined
  current: SecretVersion | undefined
  previous: SecretVersion | undefined
}

/** Thrown by operations; becomes an AWS JSON error response. */
class ServiceError extends Error {
  readonly status: number
  readonly type: string

  constructor(status: number, type: string, message: string) {
    super(message)
    this.status = status
    this.type = type
  }
}

const notFound = (): ServiceError =>
  new ServiceError(400, 'ResourceNotFoundException', "Secrets Manager can't find the specified secret.")

type Operation = (input: Record<string, unknown>) => object

class LocalSecretsManager implements FakeSecretsManager {
  readonly region: string
  readonly #server: Server
  readonly #sockets = new Set<Socket>()
  /** Release callbacks of requests parked by 'hang'. */
  readonly #held = new Set<() => void>()
  readonly #secrets = new Map<string, StoredSecret>()
  readonly #calls = new Map<string, number>()
  readonly #getCalls = new Map<string, number>()
  #getCallsTotal = 0
  #fault: SecretsManagerFault = 'none'
  #faultRemaining: number | undefined
  #faultOperation: string | undefined
  #seq = 0
  #delayMs = 0
  #lastAuthorization: string | undefined
  #port = 0
  #listening = false
  #relistening: Promise<void> | undefined
  #closing: Promise<void> | undefined
  readonly #operations: Record<string, Operation> = {
    GetSecretValue: (input) => this.#getSecretValue(input),
    DescribeSecret: (input) => this.#describeSecret(input),
    CreateSecret: (input) => this.#createSecret(input),
    PutSecretValue: (input) => this.#putSecretValue(input),
    ListSecrets: (input) => this.#listSecrets(input),
  }

  constructor(region: string) {
    this.region = region
    this.#server = createServer((request, response) => {
      this.#handle(request, response).catch(() => response.destroy())
    })
    this.#server.on('connection', (socket) => {
      this.#sockets.add(socket)
      socket.once('close', () => this.#sockets.delete(socket))
    })
  }

  get endpoint(): string {
    return `http://${HOST}:${this.#port}`
  }

  get lastAuthorization(): string | undefined {
    return this.#lastAuthorization
  }

  async listen(port: number): Promise<void> {
    this.#server.listen(port, HOST)
    await once(this.#server, 'listening')
    const address = this.#server.address()
    if (address === null || typeof address === 'string') throw new Error('fake Secrets Manager has no TCP address')
    this.#port = address.port
    this.#listening = true
  }

  setSecret(name: string, value: string | object): void {
    const secretString = typeof value === 'string' ? value : JSON.stringify(value)
    const existing = this.#secrets.get(name)
    if (existing === undefined) this.#secrets.set(name, this.#newSecret(name, secretString, undefined, undefined))
    else this.#addVersion(existing, secretString, undefined)
  }

  deleteSecret(name: string): void {
    this.#secrets.delete(name)
  }

  getSecretValueCalls(name?: string): number {
    return name === undefined ? this.#getCallsTotal : (this.#getCalls.get(name) ?? 0)
  }

  calls(operation: string): number {
    return this.#calls.get(operation) ?? 0
  }

  resetCounters(): void {
    this.#calls.clear()
    this.#getCalls.clear()
    this.#getCallsTotal = 0
  }

  async setFault(fault: SecretsManagerFault, options: { times?: number; operation?: string } = {}): Promise<void> {
    if (this.#closing !== undefined) throw new Error('fake Secrets Manager is closed')
    const { times, operation } = options
    if (times !== undefined && !(Number.isInteger(times) && times > 0)) {
      throw new RangeError(`setFault times must be a positive integer, got ${times}`)
    }
    if (fault === 'refuse' && times !== undefined) {
      throw new TypeError("setFault('refuse') cannot take `times`: refused connections never reach the server to be counted")
    }
    if (operation !== undefined && (typeof operation !== 'string' || operation === '')) {
      throw new TypeError('setFault operation must be an operation name such as "ListSecrets"')
    }
    if (fault === 'refuse' && operation !== undefined) {
      throw new TypeError("setFault('refuse') cannot take `operation`: a refused connection never says which operation it was for")
    }
    this.#fault = fault
    this.#faultRemaining = fault === 'none' ? undefined : times
    this.#faultOperation = fault === 'none' ? undefined : operation
    if (fault !== 'hang') this.#releaseHeld()
    if (fault === 'refuse') {
      this.#refuse()
    } else if (!this.#listening) {
      // Concurrent setFault calls share one re-listen (a second listen() would throw).
      this.#relistening ??= this.listen(this.#port).finally(() => (this.#relistening = undefined))
      await this.#relistening
    }
  }

  setDelay(ms: number): void {
    if (!(Number.isFinite(ms) && ms >= 0)) throw new RangeError(`setDelay expects a non-negative number of ms, got ${ms}`)
    this.#delayMs = ms
  }

  close(): Promise<void> {
    this.#closing ??= this.#close()
    return this.#closing
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }

  async #close(): Promise<void> {
    const closed = this.#listening ? new Promise<void>((resolve) => this.#server.close(() => resolve())) : undefined
    this.#listening = false
    this.#destroySockets()
    await closed
  }

  /** Closing the listening socket is synchronous, so the very next connect() is refused. */
  #refuse(): void {
    if (this.#listening) {
      this.#server.close()
      this.#listening = false
    }
    this.#destroySockets()
  }

  #destroySockets(): void {
    // Released first, but they resume only after the destroy below and then see their socket gone.
    this.#releaseHeld()
    for (const socket of this.#sockets) socket.destroy()
  }

  #releaseHeld(): void {
    const held = [...this.#held]
    this.#held.clear()
    for (const release of held) release()
  }

  /** Consumes one request's worth of the current fault, if it applies to `operation`. */
  #takeFault(operation: string): SecretsManagerFault {
    const fault = this.#fault
    if (fault === 'none' || (this.#faultOperation !== undefined && this.#faultOperation !== operation)) return 'none'
    if (this.#faultRemaining !== undefined && --this.#faultRemaining === 0) {
      this.#fault = 'none'
      this.#faultRemaining = undefined
      this.#faultOperation = undefined
    }
    return fault
  }

  async #handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    this.#lastAuthorization = request.headers.authorization
    const body = await readBody(request)
    const target = headerValue(request.headers['x-amz-target']) ?? ''
    const operation = target.startsWith(TARGET_PREFIX) ? target.slice(TARGET_PREFIX.length) : target
    this.#calls.set(operation, (this.#calls.get(operation) ?? 0) + 1)

    let input: Record<string, unknown> | undefined
    try {
      const parsed: unknown = body === '' ? {} : JSON.parse(body)
      if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) input = parsed as Record<string, unknown>
    } catch {
      input = undefined
    }
    if (operation === 'GetSecretValue') this.#countGetSecretValue(input?.SecretId)

    const fault = this.#takeFault(operation)
    if (fault === 'hang') {
      await new Promise<void>((release) => {
        this.#held.add(release)
        response.once('close', () => {
          this.#held.delete(release)
          release()
        })
      })
    }
    if (this.#delayMs > 0 && !isGone(response)) await new Promise((resolve) => realSetTimeout(resolve, this.#delayMs))
    if (isGone(response)) return

    try {
      if (request.method !== 'POST') throw new ServiceError(404, 'UnknownOperationException', 'Only POST / is supported.')
      if (fault === 'throttle') throw new ServiceError(400, 'ThrottlingException', 'Rate exceeded')
      if (fault === 'error500') throw new ServiceError(500, 'InternalServiceError', 'An error occurred on the server side.')
      if (fault === 'accessDenied') {
        throw new ServiceError(
          400,
          'AccessDeniedException',
          `User: arn:aws:iam::${ACCOUNT}:user/test is not authorized to perform: secretsmanager:${operation} because no identity-based policy allows the secretsmanager:${operation} action`,
        )
      }
      const handler = Object.hasOwn(this.#operations, operation) ? this.#operations[operation] : undefined
      if (handler === undefined) {
        throw new ServiceError(400, 'UnknownOperationException', `Unknown operation ${JSON.stringify(target)}.`)
      }
      if (input === undefined) throw new ServiceError(400, 'SerializationException', 'Request body is not a JSON object.')
      respond(response, 200, handler(input))
    } catch (error) {
      if (error instanceof ServiceError) {
        // The SDK reads `__type` first (then `code`, then the x-amzn-errortype header); both for older clients.
        respond(response, error.status, { __type: error.type, message: error.message }, { 'x-amzn-ErrorType': error.type })
      } else {
        respond(response, 500, { __type: 'InternalServiceError', message: String(error) })
      }
    }
  }

  #countGetSecretValue(secretId: unknown): void {
    this.#getCallsTotal++
    const name = typeof secretId === 'string' ? (this.#find(secretId)?.name ?? secretId) : '<missing SecretId>'
    this.#getCalls.set(name, (this.#getCalls.get(name) ?? 0) + 1)
  }

  /** By name or full ARN, as the real service accepts. */
  #find(secretId: string): StoredSecret | undefined {
    const byName = this.#secrets.get(secretId)
    if (byName !== undefined) return byName
    for (const secret of this.#secrets.values()) if (secret.arn === secretId) return secret
    return undefined
  }

  #require(secretId: unknown): StoredSecret {
    if (typeof secretId !== 'string' || secretId === '') {
      throw new ServiceError(400, 'InvalidParameterException', 'You must provide a SecretId.')
    }
    const secret = this.#find(secretId)
    if (secret === undefined) throw notFound()
    return secret
  }

  #getSecretValue(input: Record<string, unknown>): object {
    const secret = this.#require(input.SecretId)
    const stage = typeof input.VersionStage === 'string' ? input.VersionStage : undefined
    const versionId = typeof input.VersionId === 'string' ? input.VersionId : undefined
    const candidates: Array<[SecretVersion | undefined, string]> = [
      [secret.current, 'AWSCURRENT'],
      [secret.previous, 'AWSPREVIOUS'],
    ]
    const match = candidates.find(
      ([version, label]) =>
        version !== undefined &&
        (versionId === undefined || version.id === versionId) &&
        (stage === undefined ? versionId !== undefined || label === 'AWSCURRENT' : label === stage),
    )
    if (match === undefined || match[0] === undefined) {
      const what = versionId === undefined ? `staging label: ${stage ?? 'AWSCURRENT'}` : `VersionId: ${versionId}`
      throw new ServiceError(400, 'ResourceNotFoundException', `Secrets Manager can't find the specified secret value for ${what}`)
    }
    const [version, label] = match
    return {
      ARN: secret.arn,
      Name: secret.name,
      VersionId: version.id,
      SecretString: version.value,
      VersionStages: [label],
      CreatedDate: version.created,
    }
  }

  #describeSecret(input: Record<string, unknown>): object {
    const secret = this.#require(input.SecretId)
    const versions: Record<string, string[]> = {}
    if (secret.current !== undefined) versions[secret.current.id] = ['AWSCURRENT']
    if (secret.previous !== undefined) versions[secret.previous.id] = ['AWSPREVIOUS']
    return {
      ARN: secret.arn,
      Name: secret.name,
      ...(secret.description === undefined ? {} : { Description: secret.description }),
      CreatedDate: secret.created,
      LastChangedDate: secret.current?.created ?? secret.created,
      VersionIdsToStages: versions,
    }
  }

  #createSecret(input: Record<string, unknown>): object {
    const name = input.Name
    if (typeof name !== 'string' || name === '') throw new ServiceError(400, 'InvalidParameterException', 'You must provide a Name.')
    if (this.#secrets.has(name)) {
      throw new ServiceError(400, 'ResourceExistsException', `The operation failed because the secret ${name} already exists.`)
    }
    const value = typeof input.SecretString === 'string' ? input.SecretString : undefined
    const description = typeof input.Description === 'string' ? input.Description : undefined
    const secret = this.#newSecret(name, value, description, stringOrUndefined(input.ClientRequestToken))
    this.#secrets.set(name, secret)
    return { ARN: secret.arn, Name: secret.name, ...(secret.current === undefined ? {} : { VersionId: secret.current.id }) }
  }

  #putSecretValue(input: Record<string, unknown>): object {
    const secret = this.#require(input.SecretId)
    if (typeof input.SecretString !== 'string') {
      throw new ServiceError(400, 'InvalidRequestException', 'You must provide a SecretString (SecretBinary is not supported by this fake).')
    }
    const version = this.#addVersion(secret, input.SecretString, stringOrUndefined(input.ClientRequestToken))
    return { ARN: secret.arn, Name: secret.name, VersionId: version.id, VersionStages: ['AWSCURRENT'] }
  }

  /**
   * Oldest first. Filters: `name` only (a case-sensitive prefix of the name; `!` negates; several values
   * of one filter are ORed, several filters ANDed). NextToken is opaque: the creation order of the last
   * secret of the page, so secrets created or deleted between pages neither repeat nor shift others.
   */
  #listSecrets(input: Record<string, unknown>): object {
    const limit = input.MaxResults ?? LIST_PAGE_MAX
    if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > LIST_PAGE_MAX) {
      throw new ServiceError(
        400,
        'ValidationException',
        `1 validation error detected: Value '${JSON.stringify(limit)}' at 'maxResults' failed to satisfy constraint: Member must have value between 1 and ${LIST_PAGE_MAX}`,
      )
    }
    const filters = listFilters(input.Filters)
    let after = -1
    if (input.NextToken !== undefined) {
      const token = typeof input.NextToken === 'string' ? decodeToken(input.NextToken) : undefined
      if (token === undefined) throw new ServiceError(400, 'InvalidNextTokenException', 'The NextToken value is invalid.')
      after = token
    }
    const matching = [...this.#secrets.values()]
      .filter((secret) => secret.seq > after && filters.every((filter) => filter(secret.name)))
      .sort((a, b) => a.seq - b.seq)
    const page = matching.slice(0, limit)
    const last = page.at(-1)
    return {
      SecretList: page.map((secret) => ({
        ARN: secret.arn,
        Name: secret.name,
        ...(secret.description === undefined ? {} : { Description: secret.description }),
        CreatedDate: secret.created,
        LastChangedDate: secret.current?.created ?? secret.created,
        SecretVersionsToStages: {
          ...(secret.current === undefined ? {} : { [secret.current.id]: ['AWSCURRENT'] }),
          ...(secret.previous === undefined ? {} : { [secret.previous.id]: ['AWSPREVIOUS'] }),
        },
      })),
      ...(matching.length > limit && last !== undefined ? { NextToken: encodeToken(last.seq) } : {}),
    }
  }

  #newSecret(name: string, value: string | undefined, description: string | undefined, versionId: string | undefined): StoredSecret {
    const created = nowSeconds()
    return {
      seq: this.#seq++,
      name,
      // Real ARNs end in '-' plus 6 random characters.
      arn: `arn:aws:secretsmanager:${this.region}:${ACCOUNT}:secret:${name}-${randomBytes(3).toString('hex')}`,
      created,
      description,
      current: value === undefined ? undefined : { id: versionId ?? randomUUID(), value, created },
      previous: undefined,
    }
  }

  #addVersion(secret: StoredSecret, value: string, versionId: string | undefined): SecretVersion {
    const version = { id: versionId ?? randomUUID(), value, created: nowSeconds() }
    secret.previous = secret.current
    secret.current = version
    return version
  }
}

/** `Filters: [{ Key: 'name', Values: [...] }]` as predicates on the secret name. */
function listFilters(input: unknown): Array<(name: string) => boolean> {
  if (input === undefined) return []
  if (!Array.isArray(input) || input.length > 10) {
    throw new ServiceError(400, 'InvalidParameterException', 'Filters must be a list of at most 10 { Key, Values } filters.')
  }
  return input.map((filter: unknown) => {
    const { Key: key, Values: values } = (typeof filter === 'object' && filter !== null ? filter : {}) as Record<string, unknown>
    if (key !== 'name') {
      throw new ServiceError(400, 'InvalidParameterException', `Filter key ${JSON.stringify(key)} is not supported by this fake (only "name").`)
    }
    if (
      !Array.isArray(values) ||
      values.length < 1 ||
      values.length > 10 ||
      !values.every((v): v is string => typeof v === 'string' && v.length <= 512 && FILTER_VALUE.test(v))
    ) {
      throw new ServiceError(400, 'InvalidParameterException', 'A filter needs 1 to 10 Values of at most 512 characters [a-zA-Z0-9 :_@/+=.-!].')
    }
    const tests = values.map((value) =>
      value.startsWith('!') ? (name: string) => !name.startsWith(value.slice(1)) : (name: string) => name.startsWith(value),
    )
    return (name: string) => tests.some((test) => test(name))
  })
}

function encodeToken(seq: number): string {
  return Buffer.from(JSON.stringify({ after: seq })).toString('base64url')
}

function decodeToken(token: string): number | undefined {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'))
    const after = (parsed as { after?: unknown } | null)?.after
    return typeof after === 'number' && Number.isInteger(after) ? after : undefined
  } catch {
    return undefined
  }
}

function respond(response: ServerResponse, status: number, body: object, headers: Record<string, string> = {}): void {
  const payload = JSON.stringify(body)
  response.writeHead(status, {
    'Content-Type': 'application/x-amz-json-1.1',
    'Content-Length': Buffer.byteLength(payload),
    'x-amzn-RequestId': randomUUID(),
    // No keep-alive: a pooled idle socket would turn the first request after 'refuse' into ECONNRESET, not ECONNREFUSED.
    Connection: 'close',
    ...headers,
  })
  response.end(payload)
}

async function readBody(request: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = []
  try {
    for await (const chunk of request) chunks.push(chunk as Buffer)
  } catch {
    // Client went away (e.g. 'refuse' destroyed the socket); the response will not be written anyway.
  }
  return Buffer.concat(chunks).toString('utf8')
}

function isGone(response: ServerResponse): boolean {
  return response.destroyed || response.socket === null || response.socket.destroyed
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}

function stringOrUndefined(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined
}

/** AWS JSON timestamps are epoch seconds (fractional). */
function nowSeconds(): number {
  return Date.now() / 1000
}
