/**
 * Deterministic traffic for the scale scenario: a seeded PRNG and a Zipf sampler. Every contender
 * replays the same sequence of tenant indexes, so a skew figure never depends on Math.random().
 */

/** mulberry32: 32-bit state, full period 2^32, good enough to shape traffic (not for anything secret). */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
}

/**
 * Zipf over ranks 0..n-1: P(rank k) ∝ 1 / (k + 1)^s. Inverse-CDF sampling by binary search over a
 * precomputed cumulative table (n doubles: 80 KB at 10,000 tenants). Rank 0 is the hottest tenant.
 */
export function zipfSampler(n: number, s: number, random: () => number): () => number {
  if (!Number.isInteger(n) || n < 1) throw new Error(`zipfSampler: n must be a positive integer, got ${n}`)
  const cdf = new Float64Array(n)
  let sum = 0
  for (let k = 0; k < n; k++) {
    sum += 1 / Math.pow(k + 1, s)
    cdf[k] = sum
  }
  return () => {
    const target = random() * sum
    let lo = 0
    let hi = n - 1
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if ((cdf[mid] as number) < target) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}

/**
 * `length` tenant indexes drawn up front. Workers index it by request sequence number (modulo its
 * length), so drawing costs nothing inside the timed loop and every contender sees the same order.
 */
export function zipfSequence(n: number, s: number, seed: number, length: number): Uint32Array {
  const next = zipfSampler(n, s, seededRandom(seed))
  const sequence = new Uint32Array(length)
  for (let i = 0; i < length; i++) sequence[i] = next()
  return sequence
}

/** Share of draws that hit the `top` hottest ranks, for the report ("top 1 % of tenants get x % of requests"). */
export function topShare(sequence: Uint32Array, top: number): number {
  let hits = 0
  for (const rank of sequence) if (rank < top) hits++
  return hits / sequence.length
}
