/**
 * The AWS secret source against the real SDK over HTTP, using the local Secrets-Manager-compatible
 * endpoint from @hyperconn/testkit: signing, retries, error mapping and the credential chain.
 */
import { inspect } from 'node:util'
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager'
import { startFakeSecretsManager } from '@hyperconn/testkit'
import type { FakeSecretsManager } from '@hyperconn/testkit'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { awsSecretsManager } from '../src/secrets/aws-secret-source.js'
import { systemClock } from '../src/clock.js'
import { SecretNotFoundError, SecretSourceError } from '../src/hyperconn-error.js'
import { SecretBundle } from '../src/secrets/secret-bundle.js'
import { SecretCache } from '../src/secrets/secret-cache.js'
import type { SecretSource } from '../src/secrets/secret-source.js'

const MARKER = 'Marker-Pw-7q'
const SECRET = { 'core-postgresql': `postgresql://app:${MARKER}@db.internal:5432/app` }
const CREDENTIALS = Object.freeze({ accessKeyId: 'AKIDSMINTEGRATION', secretAccessKey: `sk-${MARKER}-secret-key` })

/**
 * The SDK's standard strategy waits up to 1 s, then 2 s, between throttled attempts (50/100 ms for
 * 5xx). Same decisions (retry THROTTLING and TRANSIENT, up to maxAttempts) but a 5 ms pause, so
 * fault tests stay fast. Handed in through the `client` option.
 */
function fastRetryStrategy(maxAttempts: number) {
  const token = (count: number) => ({ getRetryCount: () => count, getRetryDelay: () => 5 })
  return {
    mode: 'standard',
    acquireInitialRetryToken: async () => token(0),
    refreshRetryTokenForRetry: async (previous: { getRetryCount(): number }, info: { errorType: string }) => {
      const next = previous.getRetryCount() + 1
      if (next >= maxAttempts || (info.errorType !== 'THROTTLING' && info.errorType !== 'TRANSIENT')) {
        throw new Error('No retry token available')
      }
      return token(next)
    },
    recordSuccess: () => {},
  }
}

let sm: FakeSecretsManager
const opened: SecretSource[] = []

beforeEach(async () => {
  sm = await startFakeSecretsManager({ secrets: { 'martech-org1': SECRET } })
})

afterEach(async () => {
  vi.unstubAllEnvs()
  for (const source of opened.splice(0)) await source.close?.()
  await sm.close()
})

function track<T extends SecretSource>(source: T): T {
  opened.push(source)
  return source
}

/** awsSecretsManager with its own client (default SDK retry strategy). */
function direct(options: { maxAttempts?: number; timeoutMs?: number; versionStage?: string } = {}): SecretSource {
  return track(awsSecretsManager({ region: sm.region, endpoint: sm.endpoint, credentials: CREDENTIALS, ...options }))
}

/** awsSecretsManager over a client we configure with a fast retry strategy. */
function fast(maxAttempts = 3): SecretSource {
  const client = new SecretsManagerClient({
    region: sm.region,
    endpoint: sm.endpoint,
    credentials: { ...CREDENTIALS }, // the SDK writes onto static credentials; CREDENTIALS is frozen
    retryStrategy: fastRetryStrategy(maxAttempts),
  })
  opened.push({ get: () => Promise.reject(new Error('unused')), close: () => client.destroy() })
  return track(awsSecretsManager({ client }))
}

async function failure(promise: Promise<unknown>): Promise<Error> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error).toBeInstanceOf(Error)
  return error as Error
}

function expectNoSecrets(error: Error): void {
  const text = inspect(error, { depth: Infinity, showHidden: true })
  expect(text).not.toContain(MARKER)
  expect(text).not.toContain('Signature=')
  expect(text).not.toContain(CREDENTIALS.secretAccessKey)
}

describe('awsSecretsManager over HTTP', () => {
  it('fetches a secret (SigV4-signed) and it parses into a bundle', async () => {
    const source = direct()
    const value = await source.get('martech-org1')
    expect(typeof value).toBe('string')
    expect(SecretBundle.parse('martech-org1', value).connectionString('core-postgresql')).toBe(SECRET['core-postgresql'])
    expect(sm.getSecretValueCalls('martech-org1')).toBe(1)
    expect(sm.lastAuthorization).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIDSMINTEGRATION\//)
    // The SDK writes bookkeeping onto static credentials; ours are frozen and must stay untouched.
    expect(Object.keys(CREDENTIALS)).toEqual(['accessKeyId', 'secretAccessKey'])
  })

  it('reads another staging label with versionStage', async () => {
    sm.setSecret('martech-org1', { 'core-postgresql': 'postgresql://app:rotated@db/app' })
    expect(await direct().get('martech-org1')).toContain(':rotated@')
    expect(await direct({ versionStage: 'AWSPREVIOUS' }).get('martech-org1')).toContain(MARKER)
  })

  it('reuses one client (and its keep-alive socket) across calls', async () => {
    const source = direct()
    await Promise.all(Array.from({ length: 20 }, () => source.get('martech-org1')))
    expect(sm.getSecretValueCalls('martech-org1')).toBe(20)
  })

  it('a missing secret → SecretNotFoundError, without retries', async () => {
    const error = await failure(direct().get('martech-nope'))
    expect(error).toBeInstanceOf(SecretNotFoundError)
    expect((error as SecretNotFoundError).secretName).toBe('martech-nope')
    expect(sm.getSecretValueCalls('martech-nope')).toBe(1)
  })

  it('throttling twice: the SDK retries and the third attempt succeeds', async () => {
    await sm.setFault('throttle', { times: 2 })
    expect(await fast(3).get('martech-org1')).toContain(MARKER)
    expect(sm.getSecretValueCalls('martech-org1')).toBe(3)
  })

  it('throttling on every attempt → transient SecretSourceError after maxAttempts calls', async () => {
    await sm.setFault('throttle')
    const error = await failure(fast(3).get('martech-org1'))
    expect(error).toBeInstanceOf(SecretSourceError)
    expect(error).toMatchObject({ transient: true, sourceCode: 'ThrottlingException', secretName: 'martech-org1' })
    expect(sm.getSecretValueCalls('martech-org1')).toBe(3)
    expectNoSecrets(error)
  })

  it('HTTP 500 twice: retried with the default SDK strategy (maxAttempts 3), third attempt succeeds', async () => {
    await sm.setFault('error500', { times: 2 })
    expect(await direct().get('martech-org1')).toContain(MARKER)
    expect(sm.getSecretValueCalls('martech-org1')).toBe(3)
  })

  it('HTTP 500 on every attempt → transient SecretSourceError', async () => {
    await sm.setFault('error500')
    const error = await failure(fast(3).get('martech-org1'))
    expect(error).toMatchObject({ transient: true, sourceCode: 'InternalServiceError' })
    expect(sm.getSecretValueCalls('martech-org1')).toBe(3)
    expectNoSecrets(error)
  })

  it('maxAttempts 1 disables SDK retries', async () => {
    await sm.setFault('error500', { times: 1 })
    await expect(direct({ maxAttempts: 1 }).get('martech-org1')).rejects.toMatchObject({ transient: true })
    expect(sm.getSecretValueCalls('martech-org1')).toBe(1)
  })

  it('access denied → permanent SecretSourceError, not retried, nothing secret in it', async () => {
    await sm.setFault('accessDenied')
    const error = await failure(direct().get('martech-org1'))
    expect(error).toBeInstanceOf(SecretSourceError)
    expect(error).toMatchObject({ transient: false, sourceCode: 'AccessDeniedException' })
    expect((error.cause as Error).name).toBe('AccessDeniedException')
    expect(Object.getPrototypeOf(error.cause)).toBe(Error.prototype)
    expect(sm.getSecretValueCalls('martech-org1')).toBe(1)
    expectNoSecrets(error)
  })

  it('a refused connection → transient SecretSourceError; the same source recovers when the endpoint is back', async () => {
    const source = fast(2)
    expect(await source.get('martech-org1')).toContain(MARKER) // opens a keep-alive socket
    await sm.setFault('refuse')
    const error = await failure(source.get('martech-org1'))
    expect(error).toBeInstanceOf(SecretSourceError)
    expect((error as SecretSourceError).transient).toBe(true)
    expect(['ECONNREFUSED', 'ECONNRESET', 'EPIPE']).toContain((error as SecretSourceError).sourceCode)
    expectNoSecrets(error)
    await sm.setFault('none')
    expect(await source.get('martech-org1')).toContain(MARKER)
  })

  it('a hanging endpoint → transient TimeoutError after timeoutMs', async () => {
    await sm.setFault('hang')
    const error = await failure(direct({ maxAttempts: 1, timeoutMs: 200 }).get('martech-org1'))
    expect(error).toMatchObject({ transient: true, sourceCode: 'TimeoutError' })
    await sm.setFault('none')
  })

  it('uses the default credential chain: keys only from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY', async () => {
    vi.stubEnv('AWS_ACCESS_KEY_ID', 'AKIDFROMENVIRONMENT')
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', 'env-secret-access-key')
    vi.stubEnv('AWS_SESSION_TOKEN', '')
    vi.stubEnv('AWS_PROFILE', '')
    const source = track(awsSecretsManager({ region: sm.region, endpoint: sm.endpoint }))
    expect(await source.get('martech-org1')).toContain(MARKER)
    expect(sm.lastAuthorization).toContain('Credential=AKIDFROMENVIRONMENT/')
  })

  it('awsSecretsManager({ region }) alone: credentials and endpoint from the environment only', async () => {
    vi.stubEnv('AWS_ACCESS_KEY_ID', 'AKIDONLYENV')
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', 'env-secret-access-key')
    vi.stubEnv('AWS_SESSION_TOKEN', '')
    vi.stubEnv('AWS_PROFILE', '')
    // the SDK's service-specific endpoint variable, as a VPC endpoint or a local agent would be configured
    vi.stubEnv('AWS_ENDPOINT_URL_SECRETS_MANAGER', sm.endpoint)
    const source = track(awsSecretsManager({ region: sm.region }))
    expect(await source.get('martech-org1')).toContain(MARKER)
    expect(sm.lastAuthorization).toContain('Credential=AKIDONLYENV/')
  })

  it('close() releases the client; a later get() works with a new one', async () => {
    const source = direct()
    await source.get('martech-org1')
    await source.close?.()
    expect(await source.get('martech-org1')).toContain(MARKER)
    expect(sm.getSecretValueCalls('martech-org1')).toBe(2)
  })
})

describe('SecretCache over the real SDK', () => {
  it('100 concurrent cold gets → one GetSecretValue; a 5xx outage after expiry serves the stale secret', async () => {
    vi.useFakeTimers({ toFake: ['Date'] }) // only Date: the SDK and the fake endpoint keep real timers
    try {
      const onStale = vi.fn()
      const cache = new SecretCache(
        fast(2),
        { ttlMs: 60_000, jitter: 0.1, staleIfErrorMs: 600_000, notFoundTtlMs: 30_000, maxEntries: 100 },
        systemClock,
        { onStale },
      )
      const bundles = await Promise.all(Array.from({ length: 100 }, () => cache.get('martech-org1')))
      expect(new Set(bundles).size).toBe(1)
      expect(sm.getSecretValueCalls('martech-org1')).toBe(1)

      vi.setSystemTime(Date.now() + 61_000)
      await sm.setFault('error500')
      expect(await cache.get('martech-org1')).toBe(bundles[0])
      expect(onStale).toHaveBeenCalledTimes(1)
      expect(sm.getSecretValueCalls('martech-org1')).toBe(3)

      await expect(cache.get('martech-nope')).rejects.toBeInstanceOf(SecretSourceError) // 500 for everything
      await sm.setFault('none')
      await expect(cache.get('martech-nope')).rejects.toBeInstanceOf(SecretNotFoundError)
      await expect(cache.get('martech-nope')).rejects.toBeInstanceOf(SecretNotFoundError)
      expect(sm.getSecretValueCalls('martech-nope')).toBe(2 + 1)
    } finally {
      vi.useRealTimers()
    }
  })
})
