import { describe, expect, expectTypeOf, it } from 'vitest'
import { createRegistry, InvalidOptionsError, staticSecrets, UnknownServiceError } from '../src/index.js'
import type { Registry, RegistryOptions, ServiceOf, Tenant } from '../src/index.js'

const base: RegistryOptions = { project: 'p', services: ['core'], secrets: staticSecrets({}) }

describe('createRegistry options', () => {
  it.each<[unknown, RegExp]>([
    [{ ...base, services: [] }, /services must name at least one service/],
    [{ ...base, services: {} }, /services must name at least one service/],
    [{ ...base, services: 'core' }, /services must be a non-empty array of service names, or an object/],
    [{ ...base, services: ['core', 'core'] }, /duplicates/],
    [{ ...base, services: ['a b'] }, /service name/],
    [{ ...base, secrets: {} }, /secrets must be a secret source/],
    [{ services: ['core'], secrets: staticSecrets({}) }, /project .* or a secretName function/],
    [{ ...base, pool: { connectionString: 'postgresql://x' } }, /pool.connectionString is not allowed/],
    [{ ...base, pool: { password: 'x' } }, /pool.password is not allowed/],
    [{ ...base, eviction: { maxPools: 0 } }, /eviction.maxPools/],
    [{ ...base, eviction: { idleTtlMs: -1 } }, /eviction.idleTtlMs/],
    [{ ...base, secretCache: { jitter: 2 } }, /secretCache.jitter/],
    [{ ...base, logger: { info() {} } }, /logger must have/],
    [{ ...base, evictions: {} }, /unknown option "evictions"/],
    // services as an object: isolation and per-service keys are validated up front
    [{ ...base, services: { core: { isolation: { rls: 'tenant_id' } } } }, /services\.core\.isolation\.rls must be a custom setting name with a dot/],
    [{ ...base, services: { core: { isolation: { rls: 'x; drop' } } } }, /services\.core\.isolation\.rls: a setting name must be a PostgreSQL parameter name/],
    [{ ...base, services: { core: { isolation: { rls: 'app.tenant_id', value: 'org1' } } } }, /services\.core\.isolation\.value must be a function/],
    [{ ...base, services: { core: { isolation: { rls: 'app.tenant_id', setting: 'x' } } } }, /unknown option services\.core\.isolation\.setting/],
    [{ ...base, services: { core: { isolation: { schema: 'org1' } } } }, /services\.core\.isolation must be \{ schema: \(orgId\) => schemaName \}/],
    [{ ...base, services: { core: { isolation: 'schema' } } }, /services\.core\.isolation must be 'database'/],
    [{ ...base, services: { core: { isolaton: 'database' } } }, /unknown option services\.core\.isolaton/],
    [{ ...base, services: { core: 'database' } }, /services\.core must be an object of service options/],
    [{ ...base, services: { core: { tenantSettings: { statement_timeout: '5s' } } } }, /services\.core\.tenantSettings must be a function/],
    [{ ...base, services: { 'a b': {} } }, /service name/],
    // the connection budget
    [{ ...base, connections: { max: 0 } }, /connections\.max must be an integer/],
    [{ ...base, connections: { max: 'lots' } }, /connections\.max must be an integer/],
    [{ ...base, connections: { max: 2.5 } }, /connections\.max must be an integer/],
    [{ ...base, connections: { perTenant: 0 } }, /connections\.perTenant must be an integer/],
    [{ ...base, connections: { instances: 0 } }, /connections\.instances must be an integer/],
    [{ ...base, connections: { acquireTimeoutMs: -1 } }, /connections\.acquireTimeoutMs must be an integer/],
    [{ ...base, connections: { maxConnections: 10 } }, /unknown option connections\.maxConnections/],
    // pg.Pool options the shared pools do not implement are refused, naming the option and what to use
    [{ ...base, pool: { min: 2 } }, /pool\.min is not supported: .*warm\(orgIds, \{ connections \}\)/],
    [{ ...base, pool: { onConnect: async () => {} } }, /pool\.onConnect is not supported: .*tenantSettings/],
    [{ ...base, pool: { options: '-c search_path=x' } }, /pool\.options is not supported/],
    [{ ...base, pool: { max: 0 } }, /pool\.max must be an integer/],
  ])('rejects %j', (options, message) => {
    expect(() => createRegistry(options as RegistryOptions)).toThrow(InvalidOptionsError)
    expect(() => createRegistry(options as RegistryOptions)).toThrow(message)
  })

  it('accepts services as an object with isolation presets and tenantSettings', async () => {
    await using registry = createRegistry({
      ...base,
      services: {
        core: {},
        plain: { isolation: 'database' },
        app: { isolation: { schema: (orgId) => `org_${orgId}` } },
        shared: { isolation: { rls: 'app.tenant_id' } },
        mapped: { isolation: { rls: 'App.Tenant_Id', value: (orgId) => `t-${orgId}` } },
        billing: { tenantSettings: () => ({ statement_timeout: '5s' }) },
      },
    })
    for (const service of ['core', 'plain', 'app', 'shared', 'mapped', 'billing'] as const) {
      expect(registry.tenant('org1', service).service).toBe(service)
    }
    // @ts-expect-error the object's keys are the only service names
    expect(() => registry.tenant('org1', 'other')).toThrow(UnknownServiceError)
    // several services: tenant() needs one named
    expect(() => registry.tenant('org1')).toThrow(UnknownServiceError)
  })

  it('accepts the connection budget options', async () => {
    await using auto = createRegistry({ ...base, connections: { max: 'auto', instances: 3, perTenant: 2, acquireTimeoutMs: 0 } })
    expect(auto.stats().servers).toEqual([])
    await using fixed = createRegistry({ ...base, connections: { max: 20 }, pool: { max: 5, idleTimeoutMillis: 0, maxUses: 100 } })
    expect(fixed.stats().closed).toBe(false)
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

// Type tests: typecheck (tsc over test/) fails if a @ts-expect-error line compiles; the runtime checks stay.
describe('service names typed from the options', () => {
  const secrets = staticSecrets({})

  it('a literal list gives a union: a typo is a type error in every method taking a service', async () => {
    await using registry = createRegistry({ project: 'p', services: ['core', 'billing'], secrets })
    expectTypeOf(registry).toEqualTypeOf<Registry<'core' | 'billing'>>()
    expectTypeOf<ServiceOf<typeof registry>>().toEqualTypeOf<'core' | 'billing'>()
    expectTypeOf(registry.tenant('org1', 'billing')).toEqualTypeOf<Tenant<'core' | 'billing'>>()
    expect(registry.tenant('org1', 'core').service).toBe('core')
    for (const method of [registry.getPool, registry.getConnection, registry.evict]) {
      expectTypeOf(method).parameter(0).toEqualTypeOf<'core' | 'billing'>()
    }
    // @ts-expect-error 'typo' is not one of the services
    expect(() => registry.tenant('org1', 'typo')).toThrow(UnknownServiceError)
    // @ts-expect-error 'typo' is not one of the services
    await expect(registry.getPool('typo', 'org1')).rejects.toThrow(UnknownServiceError)
    // @ts-expect-error 'typo' is not one of the services
    await expect(registry.getConnection('typo', 'org1')).rejects.toThrow(UnknownServiceError)
    // @ts-expect-error 'typo' is not one of the services
    await expect(registry.evict('typo', 'org1')).rejects.toThrow(UnknownServiceError)
    // @ts-expect-error 'typo' is not one of the services
    await expect(registry.warm(['org1'], 'typo')).rejects.toThrow(UnknownServiceError)
    // @ts-expect-error 'typo' is not one of the services
    await expect(registry.warm(['org1'], { service: 'typo' })).rejects.toThrow(UnknownServiceError)
  })

  it('the object form infers its keys and keeps checking the per-service options', async () => {
    await using registry = createRegistry({
      project: 'p',
      services: { core: {}, app: { isolation: { schema: (orgId) => `org_${orgId}` } } },
      secrets,
    })
    expectTypeOf(registry).toEqualTypeOf<Registry<'core' | 'app'>>()
    expect(registry.tenant('org1', 'app').service).toBe('app')
    // @ts-expect-error 'typo' is not one of the services
    expect(() => registry.tenant('org1', 'typo')).toThrow(UnknownServiceError)
    expect(() =>
      // @ts-expect-error misspelt service option
      createRegistry({ project: 'p', services: { core: { isolaton: 'database' } }, secrets }),
    ).toThrow(InvalidOptionsError)
  })

  it('a string[] that is not a literal, or a RegistryOptions value, gives Registry<string>', async () => {
    const names: string[] = ['core', 'billing']
    await using fromArray = createRegistry({ project: 'p', services: names, secrets })
    expectTypeOf(fromArray).toEqualTypeOf<Registry<string>>()
    expect(() => fromArray.tenant('org1', 'typo')).toThrow(UnknownServiceError)
    const byName: Record<string, { isolation?: 'database' }> = { core: {} }
    await using fromRecord = createRegistry({ project: 'p', services: byName, secrets })
    expectTypeOf(fromRecord).toEqualTypeOf<Registry<string>>()
    await using fromOptions = createRegistry(base)
    expectTypeOf(fromOptions).toEqualTypeOf<Registry>()
    // a narrowly typed registry goes where a Registry is expected
    const registry: Registry = createRegistry({ project: 'p', services: ['core'], secrets })
    await registry.close()
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
