import type { BenchEnv } from './bench-env.js'

export interface ConnectionMonitor {
  /** Stops sampling (idempotent); resolves to the highest count seen. */
  stop(): Promise<number>
}

/**
 * Samples pg_stat_activity while a contender runs, so the report can show that neither side came
 * near max_connections (hyperconn-pg never caps busy pools, and a refused connection would turn
 * a throughput figure into an error count).
 */
export function monitorConnections(env: BenchEnv, intervalMs = 100): ConnectionMonitor {
  let peak = 0
  let running = true
  const loop = (async () => {
    while (running) {
      peak = Math.max(peak, await env.connectionCount())
      await new Promise((resolve) => setTimeout(resolve, intervalMs))
    }
  })()
  let stopped: Promise<number> | undefined
  return {
    stop() {
      running = false
      stopped ??= loop.then(async () => Math.max(peak, await env.connectionCount()))
      return stopped
    },
  }
}
