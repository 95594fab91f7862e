/**
 * `registry.listTenants()` and the secret sources' `list(prefix)`: Secrets Manager `ListSecrets` through
 * the real SDK against the local endpoint from @hyperconn/testkit (pages, throttling, error mapping), the
 * static and file sources, and what the registry refuses.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager'
import { startFakeSecretsManager } from '@hyperconn/testkit'
import type { FakeSecretsManager } from '@hyperconn/testkit'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  awsSecretsManager,
  createRegistry,
  fileSecrets,
  InvalidOptionsError,
  RegistryClosedError,
  SecretSourceError,
  staticSecrets,
  UnknownServiceError,
  UnsupportedError,
} from '../src/index.js'
import type { Registry, SecretSource } from '../src/index.js'

const SECRET = { 'core-postgresql': 'postgresql://app:pw@db.internal:5432/app' }
const CREDENTIALS = Object.freeze({ accessKeyId: 'AKIDLISTTENANTS', secretAccessKey: 'sk-list-tenants' })
const TENANTS = 2_500

let sm: FakeSecretsManager
const cleanups: Array<() => unknown> = []

beforeEach(async () => {
  sm = await startFakeSecretsManager()
})

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
  await sm.close()
})

/** awsSecretsManager over the fake endpoint with its own client (the SDK's default retry strategy). */
function aws(options: { maxAttempts?: number } = {}): SecretSource {
  const source = awsSecretsManager({ region: sm.region, endpoint: sm.endpoint, credentials: CREDENTIALS, ...options })
  cleanups.push(() => source.close?.())
  return source
}

function registryOver(secrets: SecretSource, options: Record<string, unknown> = {}): Registry<'core' | 'billing'> {
  const registry = createRegistry({ project: 'martech', services: ['core', 'billing'], secrets, ...options })
  cleanups.push(() => registry.close())
  return registry
}

async function collect(names: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = []
  for await (const name of names) out.push(name)
  return out
}

async function failure(promise: Promise<unknown>): Promise<Error> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error).toBeInstanceOf(Error)
  return error as Error
}

const orgIds = (n: number): string[] => Array.from({ length: n }, (_, i) => `org${String(i + 1).padStart(4, '0')}`)

/** Secrets of other projects and near misses: none of them is a tenant of project "martech". */
const OTHERS = [
  'otherproject-org1',
  'martech2-org1',
  'martechx-org2',
  'xmartech-org3',
  'MARTECH-org4',
  'Martech-org5',
  'mar-org6',
  'other/martech-org7',
]
/** Names with the prefix whose remainder is not a valid org id. */
const INVALID = ['martech-', 'martech-bad.id', 'martech-a/b', 'martech-_under', `martech-${'x'.repeat(65)}`]

describe('listTenants over Secrets Manager (real SDK, local endpoint)', () => {
  it('lists 2,500 tenants across pages through a throttled response: every org id once, other projects excluded', async () => {
    const ids = orgIds(TENANTS)
    // Interleaved, so every page mixes tenants with other secrets.
    ids.forEach((id, i) => {
      sm.setSecret(`martech-${id}`, SECRET)
      if (i % 50 === 0) sm.setSecret(`otherproject-${id}`, SECRET)
      if (i % 100 === 0) sm.setSecret(`martech2-${id}`, SECRET)
    })
    for (const name of [...OTHERS, ...INVALID]) sm.setSecret(name, SECRET)
    const registry = registryOver(aws())

    const listed: string[] = []
    let throttledAt: number | undefined
    for await (const orgId of registry.listTenants()) {
      listed.push(orgId)
      if (listed.length === 950) {
        // Mid-way (page 10 is being consumed): the next page's first attempt is throttled; the SDK retries it.
        throttledAt = sm.calls('ListSecrets')
        await sm.setFault('throttle', { times: 1, operation: 'ListSecrets' })
      }
    }

    expect(listed).toHaveLength(TENANTS)
    expect(new Set(listed).size).toBe(TENANTS)
    expect([...listed].sort()).toEqual(ids)
    // Only names with the project's prefix are listed by the service: 2,500 tenants + the invalid ones.
    const pages = Math.ceil((TENANTS + INVALID.length) / 100)
    expect(throttledAt).toBeGreaterThan(1)
    expect(throttledAt).toBeLessThan(pages)
    expect(sm.calls('ListSecrets')).toBe(pages + 1)
    expect(sm.getSecretValueCalls()).toBe(0)
  })

  it('does not list other projects whose name the project is a prefix of', async () => {
    for (const name of ['martech-org1', 'mar-org2', 'marketing-org3']) sm.setSecret(name, SECRET)
    const registry = createRegistry({ project: 'mar', services: ['core'], secrets: aws() })
    cleanups.push(() => registry.close())
    expect(await collect(registry.listTenants())).toEqual(['org2'])
  })
})

describe('awsSecretsManager().list(prefix)', () => {
  beforeEach(() => {
    for (const id of orgIds(250)) sm.setSecret(`martech-${id}`, SECRET)
    sm.setSecret('other-org1', SECRET)
  })

  it('pages through ListSecrets 100 names at a time, lazily, with a name filter', async () => {
    const source = aws()
    const iterator = source.list!('martech-')[Symbol.asyncIterator]()
    expect(await iterator.next()).toEqual({ done: false, value: 'martech-org0001' })
    expect(sm.calls('ListSecrets')).toBe(1)
    const rest: string[] = []
    for (let next = await iterator.next(); next.done !== true; next = await iterator.next()) rest.push(next.value)
    expect(rest).toHaveLength(249)
    expect(sm.calls('ListSecrets')).toBe(3)
    expect(sm.getSecretValueCalls()).toBe(0)
  })

  it("lists every secret for the prefix ''", async () => {
    expect(await collect(aws().list!(''))).toHaveLength(251)
  })

  it('checks names again client-side (the service filter has been case-insensitive and word-based)', async () => {
    const real = new SecretsManagerClient({ region: sm.region, endpoint: sm.endpoint, credentials: { ...CREDENTIALS } })
    cleanups.push(() => real.destroy())
    // A client whose service ignores the filter: every secret comes back.
    const client = {
      send: (command: { input: { Filters?: unknown } }) => {
        delete command.input.Filters
        return real.send(command as never)
      },
    }
    const names = await collect(awsSecretsManager({ client }).list!('martech-'))
    expect(names).toHaveLength(250)
    expect(names).not.toContain('other-org1')
  })

  it('retries a throttled page within maxAttempts', async () => {
    await sm.setFault('throttle', { times: 2, operation: 'ListSecrets' })
    expect(await collect(aws({ maxAttempts: 3 }).list!('martech-'))).toHaveLength(250)
    expect(sm.calls('ListSecrets')).toBe(5)
  })

  it('maps throttling beyond maxAttempts to a transient SecretSourceError, like get', async () => {
    const source = aws({ maxAttempts: 1 })
    const iterator = source.list!('martech-')[Symbol.asyncIterator]()
    await iterator.next() // page 1
    await sm.setFault('throttle', { times: 1, operation: 'ListSecrets' })
    for (let i = 1; i < 100; i++) await iterator.next()
    const error = await failure(iterator.next())
    expect(error).toBeInstanceOf(SecretSourceError)
    expect(error).toMatchObject({ transient: true, sourceCode: 'ThrottlingException', secretName: 'martech-*' })
    expect(error.message).toMatch(/Could not list the secrets whose name starts with "martech-" \(ThrottlingException\).*retry later/)
    // The source keeps working after the failure.
    expect(await collect(source.list!('martech-'))).toHaveLength(250)
  })

  it('maps access denied to a permanent SecretSourceError naming the ListSecrets permission', async () => {
    await sm.setFault('accessDenied', { times: 1 })
    const error = await failure(collect(aws().list!('martech-')))
    expect(error).toBeInstanceOf(SecretSourceError)
    expect(error).toMatchObject({ transient: false, sourceCode: 'AccessDeniedException' })
    expect(error.message).toMatch(/secretsmanager:ListSecrets/)
  })

  it('rejects a prefix no secret name can start with', async () => {
    await expect(collect(aws().list!('bad prefix!'))).rejects.toThrow(InvalidOptionsError)
    expect(sm.calls('ListSecrets')).toBe(0)
  })
})

describe('listTenants over the static and file sources', () => {
  const map = {
    'martech-org1': SECRET,
    'martech-org2': JSON.stringify({ 'billing-postgresql': 'postgresql://b:pw@db:5432/b' }),
    ...Object.fromEntries([...OTHERS, ...INVALID].map((name) => [name, SECRET])),
  }

  it('staticSecrets: the map keys with the prefix', async () => {
    const registry = registryOver(staticSecrets(map))
    expect(await collect(registry.listTenants())).toEqual(['org1', 'org2'])
    // `service` is checked but does not filter: names are listed, not values.
    expect(await collect(registry.listTenants('billing'))).toEqual(['org1', 'org2'])
    expect(await collect(staticSecrets(map).list!('martech2-'))).toEqual(['martech2-org1'])
  })

  it('fileSecrets: read as get reads it, and read again after a change', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hyperconn-list-'))
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    const path = join(dir, 'secrets.json')
    await writeFile(path, JSON.stringify(map))
    const registry = registryOver(fileSecrets(path))
    expect(await collect(registry.listTenants('core'))).toEqual(['org1', 'org2'])

    await writeFile(path, JSON.stringify({ ...map, 'martech-org3': SECRET, 'martech-org4-with-a-longer-name': SECRET }))
    expect(await collect(registry.listTenants())).toEqual(['org1', 'org2', 'org3', 'org4-with-a-longer-name'])

    await writeFile(path, '{ not json')
    const error = await failure(collect(registry.listTenants()))
    expect(error).toBeInstanceOf(SecretSourceError)
    expect(error).toMatchObject({ transient: false, secretName: 'martech-*' })
  })

  it('yields each org id once, from a source that repeats names', async () => {
    const source: SecretSource = {
      get: () => Promise.resolve(SECRET),
      async *list() {
        yield* ['martech-a', 'martech-b', 'martech-a', 'other-c', 'martech-b']
      },
    }
    expect(await collect(registryOver(source).listTenants())).toEqual(['a', 'b'])
  })
})

describe('listTenants: custom secret names', () => {
  const secrets = staticSecrets({
    'tenants/org1/db': SECRET,
    'tenants/org2/db': SECRET,
    'tenants/org3/other': SECRET,
    'tenants/bad.id/db': SECRET,
    'legacy/org9/db': SECRET,
    'martech-org5': SECRET,
  })
  const secretName = (orgId: string): string => `tenants/${orgId}/db`
  const orgIdOf = (name: string): string | undefined => /^(?:tenants|legacy)\/([^/]+)\/db$/.exec(name)?.[1]

  it('without orgIdOf: UnsupportedError saying to add it', () => {
    const registry = registryOver(secrets, { secretName })
    const error = (() => {
      try {
        registry.listTenants()
      } catch (e) {
        return e
      }
      return undefined
    })()
    expect(error).toBeInstanceOf(UnsupportedError)
    expect((error as Error).message).toMatch(/orgIdOf: \(secretName\) => orgId \| undefined/)
    expect((error as Error).message).toMatch(/secretPrefix/)
  })

  it('with orgIdOf and secretPrefix: the names with the prefix that orgIdOf maps back', async () => {
    const registry = registryOver(secrets, { secretName, orgIdOf, secretPrefix: 'tenants/' })
    expect(await collect(registry.listTenants())).toEqual(['org1', 'org2'])
  })

  it('with orgIdOf only: every name is offered to orgIdOf; an org whose secretName is another name is skipped', async () => {
    const registry = registryOver(secrets, { secretName, orgIdOf })
    // legacy/org9/db maps to org9, but org9's secret is tenants/org9/db: getPool('org9') would not read it.
    expect(await collect(registry.listTenants())).toEqual(['org1', 'org2'])
  })

  it('over Secrets Manager with a custom prefix', async () => {
    for (const id of orgIds(120)) sm.setSecret(secretName(id), SECRET)
    sm.setSecret('tenantsX/org1/db', SECRET)
    const registry = registryOver(aws(), { secretName, orgIdOf, secretPrefix: 'tenants/' })
    expect(await collect(registry.listTenants())).toEqual(orgIds(120))
    expect(sm.calls('ListSecrets')).toBe(2)
  })

  it('validates orgIdOf and secretPrefix up front', () => {
    const base = { project: 'martech', services: ['core'], secrets }
    expect(() => createRegistry({ ...base, orgIdOf: 'org1' as never })).toThrow(/orgIdOf must be a function/)
    expect(() => createRegistry({ ...base, secretPrefix: '' })).toThrow(/secretPrefix must be a non-empty string/)
    expect(() => createRegistry({ ...base, secretPrefix: 'a b' })).toThrow(InvalidOptionsError)
    expect(() => createRegistry({ ...base, secretName, secretPrefix: 'tenants/' })).toThrow(/with a custom secretName, add orgIdOf/)
  })

  it('the default names with a narrower secretPrefix', async () => {
    const registry = registryOver(staticSecrets({ 'martech-eu1': SECRET, 'martech-eu2': SECRET, 'martech-us1': SECRET }), {
      secretPrefix: 'martech-eu',
    })
    expect(await collect(registry.listTenants())).toEqual(['eu1', 'eu2'])
  })
})

describe('listTenants: what it refuses', () => {
  it('a source without list: UnsupportedError naming the sources that can', () => {
    const registry = registryOver({ kind: 'vault', get: () => Promise.resolve(SECRET) })
    expect(() => registry.listTenants()).toThrow(UnsupportedError)
    expect(() => registry.listTenants()).toThrow(/\(vault\) cannot: awsSecretsManager\(\), staticSecrets\(\) and fileSecrets\(\) can/)
  })

  it('an unknown service: UnknownServiceError', () => {
    const registry = registryOver(staticSecrets({ 'martech-org1': SECRET }))
    expect(() => registry.listTenants('biling' as 'billing')).toThrow(UnknownServiceError)
  })

  it('a closed registry: RegistryClosedError, also between items', async () => {
    const registry = registryOver(staticSecrets({ 'martech-org1': SECRET, 'martech-org2': SECRET }))
    const iterator = registry.listTenants()[Symbol.asyncIterator]()
    expect(await iterator.next()).toEqual({ done: false, value: 'org1' })
    await registry.close()
    await expect(iterator.next()).rejects.toThrow(RegistryClosedError)
    expect(() => registry.listTenants()).toThrow(RegistryClosedError)
  })
})
