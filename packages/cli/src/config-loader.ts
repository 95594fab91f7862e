import { existsSync, statSync } from 'node:fs'
import { extname, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { createJiti } from 'jiti'
import type { CliRegistry, HyperconnConfig, TenantSource } from './config.js'
import { UsageError } from './exit-codes.js'

/** A config module, loaded and checked; `registry` is created (the caller closes it). */
export interface LoadedConfig {
  readonly path: string
  readonly registry: CliRegistry
  readonly service: string | undefined
  readonly migrate: HyperconnConfig['migrate']
  readonly concurrency: number | undefined
  readonly whenLocked: 'skip' | 'wait' | undefined
  readonly tenants: TenantSource | undefined
}

const NATIVE_EXTENSIONS = new Set(['.js', '.mjs', '.cjs'])

/**
 * Loads the config module at `file` (relative to `cwd`): JavaScript with Node's own `import()`, TypeScript
 * (`.ts`, `.mts`, `.cts`) with jiti, which also compiles what it imports. When the process can already load
 * TypeScript (a TypeScript loader such as tsx, or Node's type stripping), jiti lets Node import it natively.
 * Throws `UsageError` for a missing file, a module that fails to load, or one that is not a valid config.
 */
export async function loadConfig(file: string, cwd: string): Promise<LoadedConfig> {
  const path = resolve(cwd, file)
  if (!existsSync(path) || !statSync(path).isFile()) throw new UsageError(`config file not found: ${path}`)
  let loaded: unknown
  try {
    loaded = NATIVE_EXTENSIONS.has(extname(path))
      ? await import(pathToFileURL(path).href)
      : await createJiti(import.meta.url, { tryNative: false, interopDefault: false }).import(path)
  } catch (error) {
    throw new UsageError(`could not load the config ${path}: ${messageOf(error)}`, { cause: error })
  }
  const config = await configOf(loaded, path)
  return { path, ...(await checkConfig(config, path)) }
}

/** The default export when there is one (an object, or a function returning one), else the named exports. */
async function configOf(loaded: unknown, path: string): Promise<Record<string, unknown>> {
  if (!isObject(loaded)) throw new UsageError(`${path} exports nothing usable: expected a config object`)
  let config: unknown = 'default' in loaded && loaded.default !== undefined ? loaded.default : loaded
  if (typeof config === 'function') {
    try {
      config = await (config as () => unknown)()
    } catch (error) {
      throw new UsageError(`the default export of ${path} (a function) threw: ${messageOf(error)}`, { cause: error })
    }
  }
  if (!isObject(config) || Array.isArray(config)) {
    throw new UsageError(`${path}: the default export must be a config object (export default defineConfig({ ... })), got ${describe(config)}`)
  }
  return config
}

async function checkConfig(config: Record<string, unknown>, path: string): Promise<Omit<LoadedConfig, 'path'>> {
  const fail = (message: string): never => {
    throw new UsageError(`${path}: ${message}`)
  }
  const { migrate, service, concurrency, whenLocked, tenants } = config
  if (migrate === undefined) {
    fail('no migrate function: export { registry | createRegistry, migrate, service?, concurrency?, whenLocked?, tenants? } (export default defineConfig({ ... }), or named exports)')
  }
  if (typeof migrate !== 'function') fail(`migrate must be a function (orgId, { tenant }) => Promise, got ${describe(migrate)}`)
  if (service !== undefined && typeof service !== 'string') fail(`service must be a service name, got ${describe(service)}`)
  if (concurrency !== undefined && !isConcurrency(concurrency)) fail(`concurrency must be an integer from 1 to 256, got ${describe(concurrency)}`)
  if (whenLocked !== undefined && whenLocked !== 'skip' && whenLocked !== 'wait') fail(`whenLocked must be 'skip' or 'wait', got ${describe(whenLocked)}`)
  if (tenants !== undefined && !isTenantSource(tenants)) fail(`tenants must be 'all', an array of org ids or an (async) iterable of them, got ${describe(tenants)}`)

  const hasRegistry = config.registry !== undefined
  const hasFactory = config.createRegistry !== undefined
  if (hasRegistry === hasFactory) {
    fail(hasRegistry ? 'export either registry or createRegistry, not both' : 'no registry: export registry (a Registry) or createRegistry (a function returning one)')
  }
  let registry: unknown = config.registry
  if (hasFactory) {
    if (typeof config.createRegistry !== 'function') fail(`createRegistry must be a function returning a Registry, got ${describe(config.createRegistry)}`)
    try {
      registry = await (config.createRegistry as () => unknown)()
    } catch (error) {
      throw new UsageError(`${path}: createRegistry() threw: ${messageOf(error)}`, { cause: error })
    }
  }
  if (!isObject(registry) || typeof registry.tenant !== 'function') {
    fail(`${hasFactory ? 'createRegistry() returned' : 'registry is'} ${describe(registry)}, not a Registry (no tenant() method)`)
  }
  return {
    registry: registry as CliRegistry,
    service: service as string | undefined,
    migrate: migrate as HyperconnConfig['migrate'],
    concurrency: concurrency as number | undefined,
    whenLocked: whenLocked as 'skip' | 'wait' | undefined,
    tenants: tenants as TenantSource | undefined,
  }
}

export function isConcurrency(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 256
}

function isTenantSource(value: unknown): value is TenantSource {
  if (value === 'all') return true
  return isObject(value) && (Symbol.iterator in value || Symbol.asyncIterator in value) && typeof value !== 'string'
}

function isObject(value: unknown): value is Record<PropertyKey, unknown> {
  return (typeof value === 'object' || typeof value === 'function') && value !== null
}

function describe(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'number' || typeof value === 'boolean') return String(value)
  return typeof value === 'object' ? 'an object' : typeof value
}

export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
