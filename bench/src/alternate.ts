export interface Alternated<A, B> {
  readonly ours: A[]
  readonly theirs: B[]
}

/**
 * ABAB: round i runs ours, then theirs, back to back. On a shared, noisy 2-core machine absolute
 * figures drift by tens of percent between minutes; two runs seconds apart see nearly the same
 * machine, so each round yields one ratio, and the spread of ratios over rounds shows the noise.
 * One untimed warm-up of each first, so neither side pays for JIT compilation in round 1.
 */
export async function alternate<A, B>(
  rounds: number,
  ours: (round: number) => Promise<A>,
  theirs: (round: number) => Promise<B>,
  options: { warmup?: boolean } = {},
): Promise<Alternated<A, B>> {
  if (options.warmup ?? true) {
    await ours(-1)
    await theirs(-1)
  }
  const result: Alternated<A, B> = { ours: [], theirs: [] }
  for (let round = 0; round < rounds; round++) {
    result.ours.push(await ours(round))
    result.theirs.push(await theirs(round))
  }
  return result
}
