import { inspect } from 'node:util'
import {
  DecryptionFailure,
  GetSecretValueCommand,
  InternalServiceError,
  InvalidParameterException,
  InvalidRequestException,
  ResourceNotFoundException,
  SecretsManagerClient,
  SecretsManagerServiceException,
} from '@aws-sdk/client-secrets-manager'
import type * as SdkModule from '@aws-sdk/client-secrets-manager'
import { mockClient } from 'aws-sdk-client-mock'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { awsSecretsManager, mapAwsError } from './aws-secret-source.js'
import type { SecretsManagerClientLike } from './aws-secret-source.js'
import { InvalidOptionsError, SecretFormatError, SecretNotFoundError, SecretSourceError } from '../hyperconn-error.js'

const MARKER = 'Marker-Pw-7q'
const SECRET_JSON = JSON.stringify({ 'core-postgresql': `postgresql://app:${MARKER}@db:5432/app` })
const CREDENTIALS = Object.freeze({ accessKeyId: 'AKIDUNITTEST', secretAccessKey: `sk-${MARKER}` })
const SDK = '@aws-sdk/client-secrets-manager'

const sm = mockClient(SecretsManagerClient)

beforeEach(() => {
  sm.reset()
})

afterEach(() => {
  vi.unstubAllEnvs()
  vi.restoreAllMocks()
})

/** A service error as the SDK's deserialiser builds it, including the `$response` we must not carry along. */
function serviceError(name: string, status: number, fault: 'client' | 'server' = 'client', message = 'service says no'): Error {
  const error = new SecretsManagerServiceException({
    name,
    $fault: fault,
    $metadata: { httpStatusCode: status, requestId: 'req-1', attempts: 1, totalRetryDelay: 0 },
    message,
  })
  return Object.assign(error, { $response: { statusCode: status, headers: {}, body: SECRET_JSON } })
}

const networkError = (code: string, message = `connect ${code} 127.0.0.1:443`): Error => Object.assign(new Error(message), { code })

async function failure(promise: Promise<unknown>): Promise<SecretSourceError | SecretNotFoundError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error).toBeDefined()
  return error as SecretSourceError | SecretNotFoundError
}

describe('awsSecretsManager: values', () => {
  it('returns SecretString as-is and sends GetSecretValue for the name (AWSCURRENT by default)', async () => {
    sm.on(GetSecretValueCommand).resolves({ SecretString: SECRET_JSON })
    const source = awsSecretsManager({ region: 'eu-west-1', credentials: CREDENTIALS })
    expect(source.kind).toBe('aws-secrets-manager')
    expect(await source.get('martech-org1')).toBe(SECRET_JSON)
    expect(sm.commandCalls(GetSecretValueCommand)).toHaveLength(1)
    expect(sm.commandCalls(GetSecretValueCommand)[0]?.args[0].input).toEqual({ SecretId: 'martech-org1' })
  })

  it('passes versionStage', async () => {
    sm.on(GetSecretValueCommand).resolves({ SecretString: SECRET_JSON })
    await awsSecretsManager({ region: 'eu-west-1', credentials: CREDENTIALS, versionStage: 'AWSPENDING' }).get('s1')
    expect(sm.commandCalls(GetSecretValueCommand)[0]?.args[0].input).toEqual({ SecretId: 's1', VersionStage: 'AWSPENDING' })
  })

  it('decodes SecretBinary as UTF-8', async () => {
    const text = JSON.stringify({ k: 'pässwörd-€' })
    sm.on(GetSecretValueCommand).resolves({ SecretBinary: new TextEncoder().encode(text) })
    expect(await awsSecretsManager({ region: 'eu-west-1', credentials: CREDENTIALS }).get('s1')).toBe(text)
  })

  it('a response without a value is a SecretFormatError', async () => {
    sm.on(GetSecretValueCommand).resolves({ Name: 's1' })
    const error = await failure(awsSecretsManager({ region: 'eu-west-1', credentials: CREDENTIALS }).get('s1'))
    expect(error).toBeInstanceOf(SecretFormatError)
  })
})

describe('awsSecretsManager: error mapping', () => {
  const notFound = new ResourceNotFoundException({
    $metadata: { httpStatusCode: 400 },
    message: "Secrets Manager can't find the specified secret.",
  })

  it('ResourceNotFoundException → SecretNotFoundError', async () => {
    sm.on(GetSecretValueCommand).rejects(notFound)
    const error = await failure(awsSecretsManager({ region: 'eu-west-1', credentials: CREDENTIALS }).get('martech-nope'))
    expect(error).toBeInstanceOf(SecretNotFoundError)
    expect(error.secretName).toBe('martech-nope')
    expect((error.cause as Error).name).toBe('ResourceNotFoundException')
  })

  const transientCases: Array<[string, Error, string]> = [
    ['ThrottlingException', serviceError('ThrottlingException', 400), 'ThrottlingException'],
    ['TooManyRequestsException (429)', serviceError('TooManyRequestsException', 429), 'TooManyRequestsException'],
    ['InternalServiceError', new InternalServiceError({ $metadata: { httpStatusCode: 500 }, message: 'boom' }), 'InternalServiceError'],
    ['an unmodelled 503', serviceError('ServiceUnavailable', 503, 'server'), 'ServiceUnavailable'],
    ['an unknown error with a 502 status', serviceError('Unknown', 502), 'Unknown'],
    ['TimeoutError', Object.assign(new Error('socket timed out'), { name: 'TimeoutError' }), 'TimeoutError'],
    ['ECONNREFUSED', networkError('ECONNREFUSED'), 'ECONNREFUSED'],
    ['ECONNRESET', networkError('ECONNRESET', 'read ECONNRESET'), 'ECONNRESET'],
    ['ETIMEDOUT', networkError('ETIMEDOUT'), 'ETIMEDOUT'],
    ['ENOTFOUND', networkError('ENOTFOUND', 'getaddrinfo ENOTFOUND secretsmanager.eu-west-1.amazonaws.com'), 'ENOTFOUND'],
    ['EAI_AGAIN', networkError('EAI_AGAIN'), 'EAI_AGAIN'],
    ['socket hang up', new Error('socket hang up'), 'ECONNRESET'],
    ['a network error in the cause chain', new TypeError('fetch failed', { cause: networkError('ECONNREFUSED') }), 'TypeError'],
  ]

  it.each(transientCases)('%s → transient SecretSourceError', async (_label, sdkError, sourceCode) => {
    sm.on(GetSecretValueCommand).rejects(sdkError)
    const error = await failure(awsSecretsManager({ region: 'eu-west-1', credentials: CREDENTIALS }).get('s1'))
    expect(error).toBeInstanceOf(SecretSourceError)
    expect((error as SecretSourceError).transient).toBe(true)
    expect((error as SecretSourceError).sourceCode).toBe(sourceCode)
    expect(error.message).toContain('retry later')
  })

  const permanentCases: Array<[string, Error, string | undefined]> = [
    ['AccessDeniedException', serviceError('AccessDeniedException', 400), 'AccessDeniedException'],
    ['DecryptionFailure', new DecryptionFailure({ $metadata: { httpStatusCode: 400 }, message: 'KMS says no' }), 'DecryptionFailure'],
    ['InvalidRequestException', new InvalidRequestException({ $metadata: { httpStatusCode: 400 }, message: 'marked for deletion' }), 'InvalidRequestException'],
    ['InvalidParameterException', new InvalidParameterException({ $metadata: { httpStatusCode: 400 }, message: 'bad' }), 'InvalidParameterException'],
    ['CredentialsProviderError', Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError' }), 'CredentialsProviderError'],
    ['a plain Error', new Error('Region is missing'), undefined],
  ]

  it.each(permanentCases)('%s → permanent SecretSourceError', async (_label, sdkError, sourceCode) => {
    sm.on(GetSecretValueCommand).rejects(sdkError)
    const error = await failure(awsSecretsManager({ region: 'eu-west-1', credentials: CREDENTIALS }).get('s1'))
    expect(error).toBeInstanceOf(SecretSourceError)
    expect((error as SecretSourceError).transient).toBe(false)
    expect((error as SecretSourceError).sourceCode).toBe(sourceCode)
  })

  it('the cause is a small plain Error: SDK name, redacted message, no request/response objects', async () => {
    const sdkError = serviceError('AccessDeniedException', 400, 'client', `denied for postgresql://app:${MARKER}@db/app`)
    sm.on(GetSecretValueCommand).rejects(sdkError)
    const error = await failure(awsSecretsManager({ region: 'eu-west-1', credentials: CREDENTIALS }).get('s1'))
    const cause = error.cause as Error & Record<string, unknown>
    expect(cause).not.toBe(sdkError)
    expect(Object.getPrototypeOf(cause)).toBe(Error.prototype)
    expect(cause.name).toBe('AccessDeniedException')
    expect(cause.message).toContain('denied for postgresql://app:****@db/app')
    expect(cause.$metadata).toBeUndefined()
    expect(cause.$response).toBeUndefined()
    const printed = inspect(error, { depth: Infinity, showHidden: true })
    expect(printed).not.toContain(MARKER)
    expect(printed).not.toContain('req-1')
  })

  it('mapAwsError passes our own errors through', () => {
    const own = new SecretSourceError('s1', true, 'X')
    expect(mapAwsError('s1', own)).toBe(own)
  })
})

describe('awsSecretsManager: client lifecycle', () => {
  it('creates one client lazily, reuses it, and destroys it on close(); a later get starts a new one', async () => {
    sm.on(GetSecretValueCommand).resolves({ SecretString: SECRET_JSON })
    const destroy = vi.spyOn(SecretsManagerClient.prototype, 'destroy')
    const source = awsSecretsManager({ region: 'eu-west-1', credentials: CREDENTIALS })
    await Promise.all([source.get('a'), source.get('b')])
    await source.get('c')
    const clients = sm.calls().map((call) => call.thisValue as SecretsManagerClient)
    expect(clients).toHaveLength(3)
    expect(new Set(clients).size).toBe(1)
    expect(await clients[0]?.config.region()).toBe('eu-west-1')

    await source.close?.()
    expect(destroy).toHaveBeenCalledTimes(1)
    await source.close?.() // idempotent
    expect(destroy).toHaveBeenCalledTimes(1)
    await source.get('d')
    expect(sm.calls()[3]?.thisValue).not.toBe(clients[0])
  })

  it('uses a provided client and never destroys it', async () => {
    const client = new SecretsManagerClient({ region: 'eu-west-1', credentials: CREDENTIALS })
    const destroy = vi.spyOn(client, 'destroy')
    sm.on(GetSecretValueCommand).resolves({ SecretString: SECRET_JSON })
    const source = awsSecretsManager({ client, versionStage: 'AWSCURRENT' })
    await source.get('s1')
    expect(sm.calls()[0]?.thisValue).toBe(client)
    await source.close?.()
    expect(destroy).not.toHaveBeenCalled()
  })

  it('accepts any object with send(command)', async () => {
    const client: SecretsManagerClientLike = {
      send: vi.fn(async (command: GetSecretValueCommand) => ({ SecretString: `value-of-${command.input.SecretId}` })),
    }
    const source = awsSecretsManager({ client })
    expect(await source.get('s1')).toBe('value-of-s1')
    expect(vi.mocked(client.send).mock.calls[0]?.[0]).toBeInstanceOf(GetSecretValueCommand)
    await source.close?.()
  })

  it('uses the default credential chain when no credentials are given (here: env vars)', async () => {
    vi.stubEnv('AWS_ACCESS_KEY_ID', 'AKIDFROMENV')
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', 'secret-from-env')
    vi.stubEnv('AWS_SESSION_TOKEN', '')
    sm.on(GetSecretValueCommand).resolves({ SecretString: SECRET_JSON })
    const source = awsSecretsManager({ region: 'eu-west-1' })
    await source.get('s1')
    const client = sm.calls()[0]?.thisValue as SecretsManagerClient
    const resolved = await client.config.credentials()
    expect(resolved.accessKeyId).toBe('AKIDFROMENV')
    await source.close?.()
  })

  it('passes explicit credentials (object or provider) to the client', async () => {
    sm.on(GetSecretValueCommand).resolves({ SecretString: SECRET_JSON })
    const provider = vi.fn(async () => ({ accessKeyId: 'AKIDPROVIDER', secretAccessKey: 'x' }))
    const source = awsSecretsManager({ region: 'eu-west-1', credentials: provider, maxAttempts: 2 })
    await source.get('s1')
    const client = sm.calls()[0]?.thisValue as SecretsManagerClient
    expect((await client.config.credentials()).accessKeyId).toBe('AKIDPROVIDER')
    expect(await client.config.maxAttempts()).toBe(2)
  })
})

describe('awsSecretsManager: options', () => {
  it.each([
    ['client together with region', { client: { send: async () => ({}) }, region: 'eu-west-1' }],
    ['a client without send', { client: {} }],
    ['a malformed region', { region: 'EU WEST' }],
    ['a non-http endpoint', { endpoint: 'ftp://example.com' }],
    ['an unparseable endpoint', { endpoint: `not a url ${MARKER}` }],
    ['maxAttempts 0', { maxAttempts: 0 }],
    ['maxAttempts 2.5', { maxAttempts: 2.5 }],
    ['a bad versionStage', { versionStage: 'AWS CURRENT' }],
    ['a bad timeoutMs', { timeoutMs: -1 }],
    ['credentials without accessKeyId', { credentials: { secretAccessKey: MARKER } }],
  ])('rejects %s with InvalidOptionsError that echoes nothing', (_label, options) => {
    let error: unknown
    try {
      awsSecretsManager(options as never)
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(InvalidOptionsError)
    expect((error as Error).message).not.toContain(MARKER)
  })

  it('needs no options at all (region and credentials from the SDK chains)', () => {
    expect(() => awsSecretsManager()).not.toThrow()
  })

  it('prints no credentials', () => {
    const source = awsSecretsManager({ region: 'eu-west-1', credentials: CREDENTIALS })
    const text = inspect(source, { depth: Infinity, showHidden: true }) + JSON.stringify(source)
    expect(text).toContain('eu-west-1')
    expect(text).not.toContain(MARKER)
    expect(text).not.toContain('AKIDUNITTEST')
  })
})

describe('awsSecretsManager: loading the optional SDK', () => {
  afterEach(() => {
    vi.doUnmock(SDK)
  })

  it('is not imported until the first get(), and concurrent first gets import it once', async () => {
    const real = await vi.importActual<typeof SdkModule>(SDK)
    const factory = vi.fn(() => real)
    vi.doMock(SDK, factory)
    sm.on(GetSecretValueCommand).resolves({ SecretString: SECRET_JSON })
    const source = awsSecretsManager({ region: 'eu-west-1', credentials: CREDENTIALS })
    expect(factory).not.toHaveBeenCalled()
    await Promise.all([source.get('a'), source.get('b'), source.get('c')])
    expect(factory).toHaveBeenCalledTimes(1)
  })

  it('a missing SDK is a clear permanent error, and a later get() retries the import', async () => {
    const factory = vi.fn(() => {
      throw Object.assign(new Error(`Cannot find package '${SDK}'`), { code: 'ERR_MODULE_NOT_FOUND' })
    })
    vi.doMock(SDK, factory)
    const source = awsSecretsManager({ region: 'eu-west-1', credentials: CREDENTIALS })
    const error = (await failure(source.get('s1'))) as SecretSourceError
    expect(error).toBeInstanceOf(SecretSourceError)
    expect(error.transient).toBe(false)
    expect(error.sourceCode).toBe('SdkNotInstalled')
    expect(error.message).toContain(`optional peer dependency ${SDK}`)
    expect(error.message).toContain(`npm install ${SDK}`)
    expect(error.message).not.toContain('IAM')
    await expect(source.get('s1')).rejects.toMatchObject({ sourceCode: 'SdkNotInstalled' })
    const attempts = factory.mock.calls.length
    expect(attempts).toBeGreaterThanOrEqual(2) // the failed import was not memoised

    vi.doUnmock(SDK)
    sm.on(GetSecretValueCommand).resolves({ SecretString: SECRET_JSON })
    expect(await source.get('s1')).toBe(SECRET_JSON)
  })
})
