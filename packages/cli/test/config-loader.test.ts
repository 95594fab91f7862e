import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadConfig } from '../src/config-loader.js'
import { UsageError } from '../src/exit-codes.js'

// Config modules without imports, in a temp directory. In this (vitest) process Node cannot import .ts
// itself, so TypeScript configs go through jiti's own compilation here.

let dir: string
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hyperconn-config-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

async function configFile(name: string, source: string): Promise<string> {
  await writeFile(join(dir, name), source)
  return name
}

const REGISTRY = `{ tenant: (orgId: string) => ({ orgId, service: 'core' }), close: async () => {} }`

describe('loadConfig', () => {
  it('TypeScript, default export with createRegistry (called once), typed syntax and all options', async () => {
    const file = await configFile(
      'full.config.ts',
      `interface Counter { calls: number }
const counter: Counter = { calls: 0 }
export const calls = counter
export default {
  createRegistry: async () => { counter.calls++; return ${REGISTRY} },
  service: 'core' as const,
  concurrency: 8,
  whenLocked: 'wait' as const,
  tenants: ['a', 'b'],
  migrate: async (orgId: string): Promise<string> => orgId.toUpperCase(),
}
`,
    )
    const config = await loadConfig(file, dir)
    expect(config).toMatchObject({ path: join(dir, file), service: 'core', concurrency: 8, whenLocked: 'wait', tenants: ['a', 'b'] })
    expect(config.registry.tenant('x').orgId).toBe('x')
    expect(await config.migrate('t1', { tenant: config.registry.tenant('t1') })).toBe('T1')
  })

  it('named exports (registry, migrate) in ESM JavaScript; a default export that is a function returning the config', async () => {
    const named = await loadConfig(
      await configFile('named.config.mjs', `export const registry = ${REGISTRY.replace(': string', '')}\nexport const migrate = async () => {}\nexport const helper = 1\n`),
      dir,
    )
    expect(named.service).toBeUndefined()
    expect(typeof named.registry.tenant).toBe('function')
    const fromFunction = await loadConfig(
      await configFile('function.config.mts', `export default async () => ({ registry: ${REGISTRY}, service: 'core', migrate: async () => {} })\n`),
      dir,
    )
    expect(fromFunction.service).toBe('core')
  })

  it('says what is wrong with a module that is not a config', async () => {
    const cases: [string, string, RegExp][] = [
      ['no-migrate.config.ts', `export default { registry: ${REGISTRY} }`, /no migrate function/],
      ['bad-migrate.config.ts', `export default { registry: ${REGISTRY}, migrate: 'up' }`, /migrate must be a function .* got "up"/],
      ['no-registry.config.ts', 'export default { migrate: async () => {} }', /no registry: export registry .* or createRegistry/],
      ['both.config.ts', `export default { registry: ${REGISTRY}, createRegistry: () => (${REGISTRY}), migrate: async () => {} }`, /either registry or createRegistry, not both/],
      ['not-registry.config.ts', 'export default { registry: { name: 1 }, migrate: async () => {} }', /registry is an object, not a Registry/],
      ['throws.config.ts', `export default { createRegistry: () => { throw new Error('no AWS region') }, migrate: async () => {} }`, /createRegistry\(\) threw: no AWS region/],
      ['concurrency.config.ts', `export default { registry: ${REGISTRY}, migrate: async () => {}, concurrency: 0 }`, /concurrency must be an integer from 1 to 256, got 0/],
      ['locked.config.ts', `export default { registry: ${REGISTRY}, migrate: async () => {}, whenLocked: 'retry' }`, /whenLocked must be 'skip' or 'wait', got "retry"/],
      ['tenants.config.ts', `export default { registry: ${REGISTRY}, migrate: async () => {}, tenants: 'acme' }`, /tenants must be 'all', an array/],
      ['array.config.ts', 'export default [1, 2]', /default export must be a config object .* got an array/],
      ['syntax.config.ts', 'export default { migrate: async () => { }', /could not load the config .*syntax\.config\.ts/],
      ['top-level.config.mjs', "throw new Error('DATABASE_URL is not set')", /could not load the config .*: DATABASE_URL is not set/],
    ]
    for (const [name, source, message] of cases) {
      const file = await configFile(name, source)
      const error = await loadConfig(file, dir).then(() => undefined, (e: unknown) => e)
      expect(error, name).toBeInstanceOf(UsageError)
      expect((error as Error).message, name).toMatch(message)
    }
    await expect(loadConfig('absent.config.ts', dir)).rejects.toThrow(/config file not found: .*absent\.config\.ts/)
    await expect(loadConfig('.', dir)).rejects.toThrow(/config file not found/)
  })
})
