/** min / median / max of per-round values: the spread tells how much the machine's noise moved them. */
export interface RatioSummary {
  readonly min: number
  readonly median: number
  readonly max: number
  readonly rounds: readonly number[]
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}

export function summarise(values: readonly number[]): RatioSummary {
  return {
    min: Math.min(...values),
    median: median(values),
    max: Math.max(...values),
    rounds: [...values],
  }
}

/** Round i's ours/theirs: both were measured back to back, so slow phases of the machine hit both. */
export function ratios(ours: readonly number[], theirs: readonly number[]): RatioSummary {
  return summarise(ours.map((value, i) => value / (theirs[i] as number)))
}
