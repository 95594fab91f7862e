/** `createRegistry({ telemetry })`: OpenTelemetry metrics and spans (needs `@opentelemetry/api`). */
export interface TelemetryOptions {
  /**
   * Add `hyperconn.org_id` to per-checkout metrics and spans. Off by default: with thousands of tenants
   * every metric series is multiplied by the number of orgs (cardinality, cost), and org ids may be
   * personal data in your backend.
   */
  tenantAttribute?: boolean
  /** Default: the global meter provider (`metrics.setGlobalMeterProvider` / the OpenTelemetry SDK). */
  meterProvider?: { getMeter(name: string, version?: string): unknown }
  /** Default: the global tracer provider. */
  tracerProvider?: { getTracer(name: string, version?: string): unknown }
}
