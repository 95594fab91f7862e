import { measure } from 'mitata'

/** Process CPU time (user + system, all threads: GC helpers included) in ns; µs resolution. */
export function cpuClock(): number {
  const usage = process.cpuUsage()
  return (usage.user + usage.system) * 1000
}

/**
 * ns per call of a CPU-bound async call: mitata batches the awaited calls, timed on the process CPU
 * clock, because other tenants of a shared machine stretch wall time but not our CPU time. The
 * mean is kept (GC is part of the cost). Slices must not be short: mitata compiles a fresh
 * measuring loop per measure() call and its first samples run unoptimised (a 25 ms slice of a
 * 60 ns call read 3 µs); 200 ms slices amortise that.
 */
export async function measureCpuBound(call: () => Promise<unknown>, minMs: number): Promise<number> {
  return (await measure(call, { min_cpu_time: minMs * 1e6, now: cpuClock })).avg
}
