/**
 * Child process of scenario-memory.ts: a fresh heap and RSS for one contender, so nothing that
 * earlier scenarios (or the other contender) allocated blurs the figures. Prints one JSON line.
 * Usage: BENCH_TENANT_URL=… memory-probe.ts <ours|theirs> <tenants>   (needs --expose-gc; the URL
 * goes through the environment so its password stays out of `ps`)
 */
import { SERVICE } from './bench-env.js'
import { createHyperconnPg, quietly } from './hyperconn-pg-manager.js'
import { createOurRegistry } from './ours-registry.js'

export interface MemorySample {
  readonly heapUsed: number
  readonly rss: number
}

export interface MemoryProbeResult {
  readonly before: MemorySample
  /** Every tenant's pool cached (idle: it never connected) and, for ours, its secret cached. */
  readonly cached: MemorySample
  /** Ours only: every pool evicted, secrets still cached. */
  readonly evicted: MemorySample | undefined
}

const [contender, tenantsArg] = process.argv.slice(2)
const tenantUrl = process.env.BENCH_TENANT_URL
const tenants = Number(tenantsArg)
if ((contender !== 'ours' && contender !== 'theirs') || !(tenants > 0) || tenantUrl === undefined) {
  throw new Error('usage: BENCH_TENANT_URL=… memory-probe.ts <ours|theirs> <tenants>')
}
const collect = (globalThis as { gc?: () => void }).gc
if (collect === undefined) throw new Error('memory-probe needs node --expose-gc')

function sample(): MemorySample {
  // Several passes: the first may only promote survivors, weak callbacks need another.
  for (let i = 0; i < 4; i++) collect?.()
  const { heapUsed, rss } = process.memoryUsage()
  return { heapUsed, rss }
}

const orgs = Array.from({ length: tenants }, (_, i) => `mem${i}`)
// A fresh string per lookup, like an SDK response body; both sides parse it themselves.
const secretText = (): string => JSON.stringify({ [`${SERVICE}-postgresql`]: tenantUrl })

let result: MemoryProbeResult
if (contender === 'ours') {
  const inMemory = { kind: 'in-memory', get: (_name: string) => Promise.resolve(secretText()) }
  const registry = createOurRegistry(inMemory, { poolMax: 2, eviction: { maxPools: tenants * 2 }, secretCacheMaxEntries: tenants * 2 })
  // One tenant first, so code loaded and caches filled on first use are in the baseline.
  await registry.getPool(SERVICE, 'memwarm')
  const before = sample()
  for (const orgId of orgs) await registry.getPool(SERVICE, orgId)
  const cached = sample()
  for (const orgId of orgs) await registry.evict(SERVICE, orgId)
  const evicted = sample()
  result = { before, cached, evicted }
  await registry.close()
} else {
  const manager = await createHyperconnPg({ poolMax: 2, secretsFromMemory: () => JSON.parse(secretText()) as unknown })
  result = await quietly(async () => {
    await manager.getConnection('memwarm')
    const before = sample()
    for (const orgId of orgs) await manager.getConnection(orgId)
    const cached = sample()
    return { before, cached, evicted: undefined }
  })
  await manager.close()
}
process.stdout.write(`${JSON.stringify(result)}\n`)
