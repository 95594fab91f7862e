/** `createRegistry({ telemetry })`: OpenTelemetry metrics and spans (needs `@opentelemetry/api`). */
export interface TelemetryOptions {
  /**
   * Add `hyperconn.org_id` to per-checkout metrics and spans. Off by default: with thousands of tenants
   * every metric series is multiplied by the number of orgs (cardinality, cost), and org ids may be
   * personal data in your backend.
   */
  tenantAttribute?: boolean
  /** Default: the global meter provider (`metrics.setGlobalMeterProvider` / the OpenTelemetry SDK). */
  meterProvider?: {
    /** An OpenTelemetry `MeterProvider.getMeter`. */
    getMeter(name: string, version?: string): unknown
  }
  /** Default: the global tracer provider. */
  tracerProvider?: {
    /** An OpenTelemetry `TracerProvider.getTracer`. */
    getTracer(name: string, version?: string): unknown
  }
}
