import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { alternate } from './alternate.js'
import type { MemoryProbeResult } from './memory-probe.js'
import { median, ratios } from './ratio-summary.js'
import type { Scenario } from './scenario-types.js'

const PROBE = fileURLToPath(new URL('./memory-probe.ts', import.meta.url))

/**
 * Heap and RSS per cached tenant: 10,000 tenants whose pools exist but never connected (idle),
 * each probe in a fresh child process (same tsx loader, --expose-gc, forced GC before sampling).
 *
 * Secrets come from memory here, for both sides: 20,000 round trips through the AWS SDK and the
 * local endpoint would take minutes on a busy 2-core machine, and what is kept per tenant after a
 * lookup (ours: the parsed secret; hyperconn-pg: nothing) does not depend on the transport.
 */
export const memory: Scenario = {
  id: 'memory',
  title: '6. Memory',
  async run({ env, smoke }) {
    const tenants = smoke ? 500 : 10_000
    const probe = (contender: 'ours' | 'theirs') => runProbe(contender, tenants, env.tenantUrl)
    const result = await alternate(smoke ? 1 : 2, () => probe('ours'), () => probe('theirs'), { warmup: false })

    const perTenant = (runs: readonly MemoryProbeResult[], field: 'heapUsed' | 'rss', state: 'cached' | 'evicted') =>
      runs.map((run) => ((run[state]?.[field] ?? Number.NaN) - run.before[field]) / tenants)
    const row = (field: 'heapUsed' | 'rss', label: string) => {
      const ours = perTenant(result.ours, field, 'cached')
      const theirs = perTenant(result.theirs, field, 'cached')
      return {
        scenario: this.title,
        metric: `${label} per cached tenant (${tenants.toLocaleString('en-US')} idle pools)`,
        unit: 'bytes',
        better: 'lower' as const,
        ours: median(ours),
        baseline: 'hyperconn-pg',
        theirs: median(theirs),
        ratio: ratios(ours, theirs),
        target: undefined,
      }
    }
    const evictedHeap = perTenant(result.ours, 'heapUsed', 'evicted')
    return {
      id: this.id,
      title: this.title,
      rows: [
        row('heapUsed', 'heap'),
        row('rss', 'RSS'),
        {
          scenario: this.title,
          metric: 'heap per tenant with pools evicted, secrets cached',
          unit: 'bytes',
          better: 'lower',
          ours: median(evictedHeap),
          baseline: 'hyperconn-pg keeps nothing (re-fetches the secret)',
          theirs: undefined,
          ratio: undefined,
          target: undefined,
        },
      ],
      notes: [
        'ours caches the parsed secret per tenant (TTL 5 min); hyperconn-pg keeps only the pool (and re-fetches the secret for every new pool)',
        'RSS per tenant is noisier than heap: the allocator returns memory to the OS lazily',
      ],
      details: { tenants, probes: result },
    }
  },
}

function runProbe(contender: 'ours' | 'theirs', tenants: number, tenantUrl: string): Promise<MemoryProbeResult> {
  // Same loader (tsx) and conditions as this process; a profiler flag must not follow into the child.
  const execArgv = process.execArgv.filter((arg) => !arg.startsWith('--cpu-prof') && !arg.startsWith('--heap-prof'))
  if (!execArgv.includes('--expose-gc')) execArgv.push('--expose-gc')
  const child = spawn(process.execPath, [...execArgv, PROBE, contender, String(tenants)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, BENCH_TENANT_URL: tenantUrl },
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  return new Promise((resolve, reject) => {
    child.once('error', reject)
    child.once('close', (code) => {
      const line = stdout.trim().split('\n').at(-1) ?? ''
      if (code !== 0 || !line.startsWith('{')) {
        reject(new Error(`memory probe (${contender}) exited with ${code}: ${stderr.trim().slice(-2000)}`))
        return
      }
      resolve(JSON.parse(line) as MemoryProbeResult)
    })
  })
}
