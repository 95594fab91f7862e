/**
 * What scenario 9 (telemetry) runs, in two telemetry-probe.ts children; each workload runs on a registry
 * without telemetry (`off`) and on one with `telemetry: { meterProvider, tracerProvider }` (`on`), the
 * providers of telemetry-otel.ts:
 * - `plain` never enters an AsyncLocalStorage (no transaction, no active span): `query` (batches of
 *   `tenant.query('SELECT 1')`), `drizzle`, `kysely`, `knex` (batches of one primary-key SELECT through
 *   the adapter's `getDb(orgId)`, called per query);
 * - `traced` (on Node 20, AsyncLocalStorage's promise hook is on for the whole process once a transaction
 *   or an active span ran): `transaction` (`tenant.transaction()` around two `tenant.query('SELECT 1')`:
 *   BEGIN, 2 queries, COMMIT; with telemetry a `hyperconn.transaction` span), `parent` (a batch of
 *   `tenant.query('SELECT 1')` inside an active `bench.request` span, created in both configurations;
 *   with telemetry each checkout gets a `hyperconn.connection.acquire` span under it).
 */
export const TELEMETRY_WORKLOADS = {
  plain: ['query', 'drizzle', 'kysely', 'knex'],
  traced: ['transaction', 'parent'],
} as const satisfies Record<string, readonly string[]>

export type TelemetryProbeKind = keyof typeof TELEMETRY_WORKLOADS
export type TelemetryWorkload = (typeof TELEMETRY_WORKLOADS)[TelemetryProbeKind][number]
export type TelemetrySwitch = 'off' | 'on'

/** One timed round of one workload and configuration, as a probe prints it. */
export interface TelemetryRound {
  /** Queries, or transactions for `transaction`: the unit figures are given per. */
  readonly units: number
  /** Checkouts made (one per query; one per transaction). */
  readonly checkouts: number
  readonly elapsedMs: number
  /** CPU time (user + system) of the probe process during the round, µs. */
  readonly cpuUs: number
  readonly errors: number
  readonly firstError: string | undefined
}

/** One round of one workload: telemetry off and on in alternating slices, each side summed. */
export interface TelemetryPair {
  readonly off: TelemetryRound
  readonly on: TelemetryRound
}
