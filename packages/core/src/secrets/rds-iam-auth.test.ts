import { inspect } from 'node:util'
import { describe, expect, it, vi } from 'vitest'
import { createRdsIamAuth, rdsIamAuth } from './rds-iam-auth.js'
import type { RdsIamAuthOptions, RdsIamSignerParams } from './rds-iam-auth.js'
import { AuthTokenError, InvalidOptionsError, isHyperconnError } from '../hyperconn-error.js'
import { ManualClock } from '../../test/support/manual-clock.js'

const MARKER = 'Marker-Tok-9x'
const CREDENTIALS = Object.freeze({ accessKeyId: 'AKIDRDSIAMUNIT', secretAccessKey: `sk-${MARKER}-secret-key` })
const ENDPOINT = Object.freeze({ host: 'db1.cluster-abc.eu-west-1.rds.amazonaws.com', port: 5432, user: 'app_user' })
const MINUTE = 60_000

/** A signer that hands out numbered tokens and records its calls. */
function countingSigner() {
  const calls: RdsIamSignerParams[] = []
  const signer = vi.fn(async (params: RdsIamSignerParams) => {
    calls.push(params)
    return `${params.hostname}:${params.port}/?Action=connect&DBUser=${params.username}&X-Amz-Signature=${MARKER}-${calls.length}`
  })
  return { signer, calls }
}

async function failure(promise: Promise<unknown>): Promise<Error> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error).toBeInstanceOf(Error)
  return error as Error
}

/** Everything a thrown error shows: message, stack, inspect and its cause chain. */
function errorText(error: unknown): string {
  let text = ''
  let current: unknown = error
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    text += `${current.message}\n${current.stack ?? ''}\n${inspect(current, { depth: 5 })}\n${JSON.stringify(current)}\n`
    current = current.cause
  }
  return text
}

describe('rdsIamAuth: options', () => {
  it('needs a region', () => {
    for (const region of [undefined, '', 'EU-WEST-1', 'eu west 1', 42, 'eu-west-1/'] as unknown[]) {
      expect(() => rdsIamAuth({ region } as RdsIamAuthOptions)).toThrow(InvalidOptionsError)
    }
    expect(() => rdsIamAuth({ region: undefined } as unknown as RdsIamAuthOptions)).toThrow(/region is required.*eu-west-1/)
    expect(() => rdsIamAuth(undefined as unknown as RdsIamAuthOptions)).toThrow(InvalidOptionsError)
  })

  it('checks the credentials shape without echoing it', () => {
    for (const credentials of [
      'AKID:secret',
      { accessKeyId: 'AKID' },
      { accessKeyId: 'AKID', secretAccessKey: 42 },
      { accessKeyId: '', secretAccessKey: `sk-${MARKER}` },
      { accessKeyId: 'AKID', secretAccessKey: `sk-${MARKER}`, sessionToken: 1 },
      null,
    ] as unknown[]) {
      let thrown: unknown
      try {
        rdsIamAuth({ region: 'eu-west-1', credentials } as RdsIamAuthOptions)
      } catch (error) {
        thrown = error
      }
      expect(thrown).toBeInstanceOf(InvalidOptionsError)
      expect((thrown as Error).message).toMatch(/accessKeyId, secretAccessKey/)
      expect((thrown as Error).message).not.toContain(MARKER)
    }
    expect(rdsIamAuth({ region: 'eu-west-1', credentials: CREDENTIALS }).kind).toBe('rds-iam')
    expect(rdsIamAuth({ region: 'eu-west-1', credentials: async () => CREDENTIALS }).kind).toBe('rds-iam')
  })

  it('checks signer and clock, and rejects unknown options', () => {
    expect(() => rdsIamAuth({ region: 'eu-west-1', signer: 'x' } as unknown as RdsIamAuthOptions)).toThrow(/signer must be a function/)
    expect(() => rdsIamAuth({ region: 'eu-west-1', clock: {} } as unknown as RdsIamAuthOptions)).toThrow(/clock must be a Clock/)
    expect(() => rdsIamAuth({ region: 'eu-west-1', credential: CREDENTIALS } as unknown as RdsIamAuthOptions)).toThrow(
      /unknown option "credential"/,
    )
  })

  it('rejects an endpoint it cannot sign for', async () => {
    const { signer } = countingSigner()
    const auth = rdsIamAuth({ region: 'eu-west-1', signer })
    expect(await failure(auth.password({ ...ENDPOINT, host: '/var/run/postgresql' }))).toBeInstanceOf(InvalidOptionsError)
    expect(await failure(auth.password({ ...ENDPOINT, port: 0 }))).toBeInstanceOf(InvalidOptionsError)
    expect(await failure(auth.password({ ...ENDPOINT, user: '' }))).toBeInstanceOf(InvalidOptionsError)
    expect(signer).not.toHaveBeenCalled()
  })
})

describe('rdsIamAuth: tokens', () => {
  it("calls the signer with the connection's host, port and user and the region", async () => {
    const { signer, calls } = countingSigner()
    const auth = rdsIamAuth({ region: 'eu-west-1', credentials: CREDENTIALS, signer })
    const token = await auth.password(ENDPOINT)
    expect(token).toBe(`${ENDPOINT.host}:5432/?Action=connect&DBUser=app_user&X-Amz-Signature=${MARKER}-1`)
    expect(calls).toEqual([
      { hostname: ENDPOINT.host, port: 5432, username: 'app_user', region: 'eu-west-1', credentials: CREDENTIALS },
    ])
    // a copy: the SDK writes onto static credentials, the caller's (frozen) object stays untouched
    expect(calls[0]?.credentials).not.toBe(CREDENTIALS)
  })

  it('without credentials the signer uses its default chain', async () => {
    const { signer, calls } = countingSigner()
    await rdsIamAuth({ region: 'us-east-1', signer }).password(ENDPOINT)
    expect(calls[0]).toEqual({ hostname: ENDPOINT.host, port: 5432, username: 'app_user', region: 'us-east-1' })
    expect('credentials' in (calls[0] ?? {})).toBe(false)
  })

  it('reuses a token across connections and renews it after 14 minutes (one minute before expiry)', async () => {
    const clock = new ManualClock()
    const { signer } = countingSigner()
    const auth = rdsIamAuth({ region: 'eu-west-1', credentials: CREDENTIALS, clock, signer })
    const first = await auth.password(ENDPOINT)
    for (let i = 0; i < 10; i++) expect(await auth.password({ ...ENDPOINT })).toBe(first)
    clock.advance(14 * MINUTE - 1)
    expect(await auth.password(ENDPOINT)).toBe(first)
    expect(signer).toHaveBeenCalledTimes(1)
    clock.advance(1)
    const second = await auth.password(ENDPOINT)
    expect(second).not.toBe(first)
    expect(signer).toHaveBeenCalledTimes(2)
    clock.advance(14 * MINUTE - 1)
    expect(await auth.password(ENDPOINT)).toBe(second)
    expect(signer).toHaveBeenCalledTimes(2)
  })

  it('one token per host, port and user', async () => {
    const { signer, calls } = countingSigner()
    const auth = rdsIamAuth({ region: 'eu-west-1', signer })
    const tokens = new Set([
      await auth.password(ENDPOINT),
      await auth.password({ ...ENDPOINT, host: 'db2.example' }),
      await auth.password({ ...ENDPOINT, port: 6432 }),
      await auth.password({ ...ENDPOINT, user: 'other' }),
      await auth.password(ENDPOINT),
      await auth.password({ ...ENDPOINT, user: 'other' }),
    ])
    expect(tokens.size).toBe(4)
    expect(calls.map((c) => `${c.username}@${c.hostname}:${c.port}`)).toEqual([
      `app_user@${ENDPOINT.host}:5432`,
      'app_user@db2.example:5432',
      `app_user@${ENDPOINT.host}:6432`,
      `other@${ENDPOINT.host}:5432`,
    ])
  })

  it('concurrent calls for one endpoint share one signer call', async () => {
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    const signer = vi.fn(async () => {
      await gate
      return `tok-${MARKER}`
    })
    const auth = rdsIamAuth({ region: 'eu-west-1', signer })
    const pending = Array.from({ length: 50 }, () => auth.password(ENDPOINT))
    const other = auth.password({ ...ENDPOINT, user: 'other' })
    release()
    expect(new Set(await Promise.all(pending))).toEqual(new Set([`tok-${MARKER}`]))
    await other
    expect(signer).toHaveBeenCalledTimes(2)
  })

  it('bounds the cache: the oldest token is dropped first', async () => {
    const { signer } = countingSigner()
    const auth = rdsIamAuth({ region: 'eu-west-1', signer })
    for (let i = 0; i <= 1_000; i++) await auth.password({ ...ENDPOINT, user: `u${i}` })
    expect(signer).toHaveBeenCalledTimes(1_001)
    await auth.password({ ...ENDPOINT, user: 'u1000' })
    await auth.password({ ...ENDPOINT, user: 'u1' })
    expect(signer).toHaveBeenCalledTimes(1_001)
    await auth.password({ ...ENDPOINT, user: 'u0' }) // dropped when u1000 came in
    expect(signer).toHaveBeenCalledTimes(1_002)
  })

  it('renews sooner when the credentials that signed the token expire first', async () => {
    const clock = new ManualClock()
    const { signer } = countingSigner()
    const provider = vi.fn(async () => ({ ...CREDENTIALS, sessionToken: 'st', expiration: new Date(clock.now() + 5 * MINUTE) }))
    const auth = rdsIamAuth({
      region: 'eu-west-1',
      credentials: provider,
      clock,
      // the real signer resolves a provider; so does this one
      signer: async (params) => {
        if (typeof params.credentials === 'function') await params.credentials()
        return signer(params)
      },
    })
    const first = await auth.password(ENDPOINT)
    clock.advance(4 * MINUTE - 1)
    expect(await auth.password(ENDPOINT)).toBe(first)
    clock.advance(1)
    expect(await auth.password(ENDPOINT)).not.toBe(first)
    expect(provider).toHaveBeenCalledTimes(2)
  })

  it('a failing signer is not cached: the next call signs again', async () => {
    let fail = true
    const signer = vi.fn(async () => {
      if (fail) throw Object.assign(new Error('connect ECONNREFUSED 169.254.169.254:80'), { code: 'ECONNREFUSED' })
      return `tok-${MARKER}`
    })
    const auth = rdsIamAuth({ region: 'eu-west-1', signer })
    const results = await Promise.allSettled([auth.password(ENDPOINT), auth.password(ENDPOINT)])
    expect(signer).toHaveBeenCalledTimes(1)
    const error = (results[0] as PromiseRejectedResult).reason as AuthTokenError
    expect((results[1] as PromiseRejectedResult).reason).toBe(error)
    expect(error).toBeInstanceOf(AuthTokenError)
    expect(isHyperconnError(error)).toBe(true)
    expect(error.code).toBe('HC_AUTH_TOKEN')
    expect(error.transient).toBe(true)
    expect(error.sourceCode).toBe('ECONNREFUSED')
    expect(error.target).toBe(`app_user@${ENDPOINT.host}:5432`)
    expect(error.message).toMatch(/retry later/)
    fail = false
    expect(await auth.password(ENDPOINT)).toBe(`tok-${MARKER}`)
    expect(signer).toHaveBeenCalledTimes(2)
  })

  it('a permanent failure says how to fix it', async () => {
    const signer = async () => {
      throw Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError' })
    }
    const error = (await failure(rdsIamAuth({ region: 'eu-west-1', signer }).password(ENDPOINT))) as AuthTokenError
    expect(error).toBeInstanceOf(AuthTokenError)
    expect(error.transient).toBe(false)
    expect(error.sourceCode).toBe('CredentialsProviderError')
    expect(error.message).toMatch(/credentials option, or the default chain/)
    expect((error.cause as Error).message).toBe('Could not load credentials from any providers')
  })

  it("withholds a signer error's message that holds a key or a token", async () => {
    const leaks = [
      `invalid key ${CREDENTIALS.secretAccessKey}`,
      `bad access key ${CREDENTIALS.accessKeyId}`,
      `token db:5432/?Action=connect&DBUser=u&X-Amz-Signature=${MARKER}`,
    ]
    for (const message of leaks) {
      const signer = async () => {
        throw Object.assign(new Error(message), { name: CREDENTIALS.accessKeyId, code: CREDENTIALS.secretAccessKey })
      }
      const error = await failure(rdsIamAuth({ region: 'eu-west-1', credentials: CREDENTIALS, signer }).password(ENDPOINT))
      expect(error).toBeInstanceOf(AuthTokenError)
      const text = errorText(error)
      expect(text).not.toContain(MARKER)
      expect(text).not.toContain(CREDENTIALS.accessKeyId)
      expect((error.cause as Error).message).toMatch(/withheld/)
    }
  })

  it("redacts keys a credential provider returned from the signer's errors", async () => {
    const provided = { accessKeyId: 'ASIAPROVIDED1', secretAccessKey: `sk-provided-${MARKER}` }
    const signer = async (params: RdsIamSignerParams) => {
      const resolved = typeof params.credentials === 'function' ? await params.credentials() : undefined
      throw new Error(`cannot sign with ${resolved?.secretAccessKey}`)
    }
    const error = await failure(rdsIamAuth({ region: 'eu-west-1', credentials: async () => provided, signer }).password(ENDPOINT))
    expect(errorText(error)).not.toContain(MARKER)
  })

  it('an empty token is an error, not a password', async () => {
    const error = (await failure(rdsIamAuth({ region: 'eu-west-1', signer: async () => '' }).password(ENDPOINT))) as AuthTokenError
    expect(error).toBeInstanceOf(AuthTokenError)
    expect(error.sourceCode).toBe('InvalidToken')
  })
})

describe('rdsIamAuth: @aws-sdk/rds-signer', () => {
  it('makes a presigned token for fake static credentials, offline', async () => {
    const credentials = { ...CREDENTIALS, sessionToken: `session-${MARKER}` }
    const auth = rdsIamAuth({ region: 'eu-west-1', credentials })
    const token = await auth.password(ENDPOINT)
    expect(token.startsWith(`${ENDPOINT.host}:5432/?Action=connect&DBUser=app_user&X-Amz-`)).toBe(true)
    const query = new URLSearchParams(token.slice(token.indexOf('?') + 1))
    expect(query.get('X-Amz-Algorithm')).toBe('AWS4-HMAC-SHA256')
    expect(query.get('X-Amz-Credential')).toMatch(/^AKIDRDSIAMUNIT\/\d{8}\/eu-west-1\/rds-db\/aws4_request$/)
    expect(query.get('X-Amz-Expires')).toBe('900')
    expect(query.get('X-Amz-Security-Token')).toBe(`session-${MARKER}`)
    expect(query.get('X-Amz-Signature')).toMatch(/^[0-9a-f]{64}$/)
    expect(token).not.toContain(CREDENTIALS.secretAccessKey)
    expect(await auth.password(ENDPOINT)).toBe(token)

    // the auth object shows its kind and region, nothing else
    const signature = query.get('X-Amz-Signature') ?? ''
    const shown = [JSON.stringify(auth), inspect(auth), inspect(auth, { showHidden: true, depth: 10 }), String(Object.keys(auth))]
    for (const text of shown) {
      expect(text).not.toContain(signature)
      expect(text).not.toContain(MARKER)
      expect(text).not.toContain(CREDENTIALS.accessKeyId)
    }
    expect(JSON.parse(JSON.stringify(auth))).toEqual({ kind: 'rds-iam', region: 'eu-west-1' })
    expect(inspect(auth)).toBe("{ kind: 'rds-iam', region: 'eu-west-1' }")
  })

  it('a provider function is resolved by the signer', async () => {
    const provider = vi.fn(async () => CREDENTIALS)
    const token = await rdsIamAuth({ region: 'eu-west-1', credentials: provider }).password(ENDPOINT)
    expect(provider).toHaveBeenCalled()
    expect(token).toContain('X-Amz-Credential=AKIDRDSIAMUNIT%2F')
  })

  it("a provider's failure is typed and shows no token or key", async () => {
    const provider = async () => {
      throw Object.assign(new Error('Rate exceeded for AKIAIOSFODNN7EXAMPLE'), { name: 'ThrottlingException' })
    }
    const error = (await failure(rdsIamAuth({ region: 'eu-west-1', credentials: provider }).password(ENDPOINT))) as AuthTokenError
    expect(error).toBeInstanceOf(AuthTokenError)
    expect(error.transient).toBe(true)
    expect(error.sourceCode).toBe('ThrottlingException')
    // the provider's message named a key id: withheld, though no credentials were ever resolved
    expect(errorText(error)).not.toContain('AKIAIOSFODNN7EXAMPLE')
    expect((error.cause as Error).message).toMatch(/withheld/)
  })

  it('is loaded once, on first use, and a missing module is a typed error (retried on the next call)', async () => {
    let attempts = 0
    let installed = false
    const loadSdk = vi.fn(async () => {
      attempts++
      if (!installed) {
        throw Object.assign(new Error("Cannot find package '@aws-sdk/rds-signer' imported from /app/x.js"), {
          code: 'ERR_MODULE_NOT_FOUND',
        })
      }
      return import('@aws-sdk/rds-signer')
    })
    const auth = createRdsIamAuth({ region: 'eu-west-1', credentials: CREDENTIALS }, { loadSdk })
    expect(loadSdk).not.toHaveBeenCalled()
    const error = (await failure(auth.password(ENDPOINT))) as AuthTokenError
    expect(error).toBeInstanceOf(AuthTokenError)
    expect(error.sourceCode).toBe('SdkNotInstalled')
    expect(error.transient).toBe(false)
    expect(error.message).toMatch(/needs the optional peer dependency @aws-sdk\/rds-signer\. Install it/)
    installed = true
    await Promise.all([auth.password(ENDPOINT), auth.password({ ...ENDPOINT, user: 'other' }), auth.password({ ...ENDPOINT, port: 1 })])
    expect(attempts).toBe(2)
  })

  it('a module without a Signer is a load failure', async () => {
    const auth = createRdsIamAuth({ region: 'eu-west-1', credentials: CREDENTIALS }, { loadSdk: async () => ({}) })
    const error = (await failure(auth.password(ENDPOINT))) as AuthTokenError
    expect(error.sourceCode).toBe('SdkLoadFailed')
  })

  it('is not loaded at all with an injected signer', async () => {
    const loadSdk = vi.fn(async () => import('@aws-sdk/rds-signer'))
    await createRdsIamAuth({ region: 'eu-west-1', signer: async () => 'tok' }, { loadSdk }).password(ENDPOINT)
    expect(loadSdk).not.toHaveBeenCalled()
  })
})
