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

/**
 * ABC…ABC…: the same idea for more than two contenders. Round i runs each contender once, in the
 * order given, back to back; every figure is then compared within its round. No warm-up here: the
 * caller warms each contender inside its own run (the scale scenario rebuilds them every round).
 */
export async function alternateEach<K extends string, R>(
  rounds: number,
  contenders: Readonly<Record<K, (round: number) => Promise<R>>>,
): Promise<Record<K, R[]>> {
  const names = Object.keys(contenders) as K[]
  const result = Object.fromEntries(names.map((name) => [name, [] as R[]])) as Record<K, R[]>
  for (let round = 0; round < rounds; round++) {
    for (const name of names) result[name].push(await contenders[name](round))
  }
  return result
}
