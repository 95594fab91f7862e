/**
 * What scenario 8's hot path runs, in two lifecycle-probe.ts children:
 * - `plain` never enters a scope: `base` (the defaults: validateAfterIdleMs 1000, no leak detection, no
 *   hooks), `leak` (leakDetection { thresholdMs: 60000 }), `hooks` (no-op async onClaim + onRelease),
 *   `validate0` (validateAfterIdleMs 0);
 * - `scoped` entered one `registry.scope` at start (so, on Node 20, AsyncLocalStorage's promise hook is on
 *   for the whole process): `base`, and `scope` (the same registry, every batch inside `registry.scope`).
 */
export const PROBE_CONFIGS = {
  plain: ['base', 'leak', 'hooks', 'validate0'],
  scoped: ['base', 'scope'],
} as const satisfies Record<string, readonly string[]>

export type ProbeKind = keyof typeof PROBE_CONFIGS
export type ProbeConfig = (typeof PROBE_CONFIGS)[ProbeKind][number]
/** `plain.base`, `scoped.scope`, …: one measured configuration. */
export type ProbeSlot = { [K in ProbeKind]: `${K}.${(typeof PROBE_CONFIGS)[K][number]}` }[ProbeKind]

/** One timed round of one configuration, as a probe prints it. */
export interface LifecycleRound {
  readonly queries: number
  readonly elapsedMs: number
  /** CPU time (user + system) of the probe process during the round, µs. */
  readonly cpuUs: number
  readonly errors: number
  readonly firstError: string | undefined
  /** registry.stats().leaks so far: must stay 0 (no checkout is held anywhere near the threshold). */
  readonly leaks: number
}
