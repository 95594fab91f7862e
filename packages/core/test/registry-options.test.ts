import { describe, expect, it } from 'vitest'
import { createRegistry, InvalidOptionsError, staticSecrets, UnknownServiceError } from '../src/index.js'
import type { RegistryOptions } from '../src/index.js'

const base: RegistryOptions = { project: 'p', services: ['core'], secrets: staticSecrets({}) }

describe('createRegistry options', () => {
  it.each([
    [{ ...base, services: [] }, /services must be a non-empty array/],
    [{ ...base, services: ['core', 'core'] }, /duplicates/],
    [{ ...base, services: ['a b'] }, /service name/],
    [{ ...base, secrets: {} as never }, /secrets must be a secret source/],
    [{ services: ['core'], secrets: staticSecrets({}) }, /project .* or a secretName function/],
    [{ ...base, pool: { connectionString: 'postgresql://x' } as never }, /pool.connectionString is not allowed/],
    [{ ...base, pool: { password: 'x' } as never }, /pool.password is not allowed/],
    [{ ...base, eviction: { maxPools: 0 } }, /eviction.maxPools/],
    [{ ...base, eviction: { idleTtlMs: -1 } }, /eviction.idleTtlMs/],
    [{ ...base, secretCache: { jitter: 2 } }, /secretCache.jitter/],
    [{ ...base, logger: { info() {} } as never }, /logger must have/],
    [{ ...base, evictions: {} } as never, /unknown option "evictions"/],
  ])('rejects %j', (options, message) => {
    expect(() => createRegistry(options as RegistryOptions)).toThrow(InvalidOptionsError)
    expect(() => createRegistry(options as RegistryOptions)).toThrow(message)
  })

  it('tenant() without a service needs exactly one configured service', async () => {
    await using one = createRegistry(base)
    expect(one.tenant('org1').service).toBe('core')
    await using two = createRegistry({ ...base, services: ['core', 'billing'] })
    expect(() => two.tenant('org1')).toThrow(UnknownServiceError)
  })

  it('creates no timer that keeps the process alive and stops its sweeper on close', async () => {
    const registry = createRegistry(base)
    await registry.close()
    expect(registry.stats().closed).toBe(true)
  })
})

describe('hyperconnErrorOf', () => {
  it('finds a hyperconn error behind ORM wrappers, and nothing behind plain errors', async () => {
    const { hyperconnErrorOf, SecretNotFoundError } = await import('../src/index.js')
    const inner = new SecretNotFoundError('p-org1')
    const wrapped = new Error('Failed query: select 1', { cause: new Error('driver', { cause: inner }) })
    expect(hyperconnErrorOf(wrapped)).toBe(inner)
    expect(hyperconnErrorOf(inner)).toBe(inner)
    expect(hyperconnErrorOf(new Error('plain', { cause: new Error('also plain') }))).toBeUndefined()
    expect(hyperconnErrorOf('not an error')).toBeUndefined()
  })
})
