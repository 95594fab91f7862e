import { median } from './ratio-summary.js'

export interface InterleavedRound {
  /** Median wall time of one call, µs. */
  readonly oursWallUs: number
  readonly theirsWallUs: number
  /** Mean CPU time of this process per call, µs (the database server's work is not in it). */
  readonly oursCpuUs: number
  readonly theirsCpuUs: number
}

export interface InterleaveOptions {
  readonly rounds: number
  /** Calls of each contender per round. */
  readonly pairs: number
  /** Untimed pairs first: JIT, pools and connections of both sides. */
  readonly warmupPairs: number
}

/**
 * ABAB at the finest grain, for calls that wait on the database (~0.1–2 ms): one call of ours, one
 * of theirs, and so on (the order flips every pair), each timed on its own. Alternating per call,
 * both sides see the same moment of a shared machine's load, which alternating per second cannot
 * promise. mitata is not used here: one measure() times one function and compiles a fresh loop per
 * call (see measure-slice.ts). The medians per round shrug off the calls during which the process
 * was descheduled; CPU time (process.cpuUsage around each call, calls never overlap) is the
 * client-side work, undisturbed by other processes waiting for the CPU.
 */
export async function interleave(
  ours: () => PromiseLike<unknown>,
  theirs: () => PromiseLike<unknown>,
  options: InterleaveOptions,
): Promise<InterleavedRound[]> {
  const scratch = newTimes()
  for (let i = 0; i < options.warmupPairs; i++) {
    await timed(ours, scratch.ours)
    await timed(theirs, scratch.theirs)
  }
  const rounds: InterleavedRound[] = []
  for (let round = 0; round < options.rounds; round++) {
    const times = newTimes()
    for (let i = 0; i < options.pairs; i++) {
      if (i % 2 === 0) {
        await timed(ours, times.ours)
        await timed(theirs, times.theirs)
      } else {
        await timed(theirs, times.theirs)
        await timed(ours, times.ours)
      }
    }
    rounds.push({
      oursWallUs: median(times.ours.wall),
      theirsWallUs: median(times.theirs.wall),
      oursCpuUs: mean(times.ours.cpu),
      theirsCpuUs: mean(times.theirs.cpu),
    })
  }
  return rounds
}

interface Times {
  readonly wall: number[]
  readonly cpu: number[]
}

function newTimes(): { ours: Times; theirs: Times } {
  return { ours: { wall: [], cpu: [] }, theirs: { wall: [], cpu: [] } }
}

async function timed(call: () => PromiseLike<unknown>, into: Times): Promise<void> {
  const cpu = process.cpuUsage()
  const start = performance.now()
  await call()
  const wall = performance.now() - start
  const used = process.cpuUsage(cpu)
  into.wall.push(wall * 1000)
  into.cpu.push(used.user + used.system)
}

function mean(values: readonly number[]): number {
  return values.reduce((sum, value) => sum + value, 0) / values.length
}

export interface InterleavedFigures {
  /** Median wall time of one call, µs. */
  readonly wallUs: number
  /** Mean CPU time of this process per call, µs. */
  readonly cpuUs: number
}

/**
 * `interleave` for more than two contenders: each group calls every contender once, one at a time, the
 * order rotated by one every group (so no contender always follows the same one). Per round and
 * contender: median wall and mean CPU per call.
 */
export async function interleaveEach<K extends string>(
  contenders: Readonly<Record<K, () => PromiseLike<unknown>>>,
  options: InterleaveOptions,
): Promise<Record<K, InterleavedFigures[]>> {
  const names = Object.keys(contenders) as K[]
  const fresh = () => Object.fromEntries(names.map((name) => [name, { wall: [], cpu: [] }])) as unknown as Record<K, Times>
  const group = async (g: number, times: Record<K, Times>): Promise<void> => {
    for (let j = 0; j < names.length; j++) {
      const name = names[(g + j) % names.length] as K
      await timed(contenders[name], times[name])
    }
  }
  const scratch = fresh()
  for (let g = 0; g < options.warmupPairs; g++) await group(g, scratch)
  const result = Object.fromEntries(names.map((name) => [name, [] as InterleavedFigures[]])) as Record<K, InterleavedFigures[]>
  for (let round = 0; round < options.rounds; round++) {
    const times = fresh()
    for (let g = 0; g < options.pairs; g++) await group(g, times)
    for (const name of names) result[name].push({ wallUs: median(times[name].wall), cpuUs: mean(times[name].cpu) })
  }
  return result
}
