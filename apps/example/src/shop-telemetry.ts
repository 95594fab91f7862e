import { PrometheusExporter, PrometheusSerializer } from '@opentelemetry/exporter-prometheus'
import { MeterProvider } from '@opentelemetry/sdk-metrics'

/** Prometheus' text exposition format. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

/**
 * The app's OpenTelemetry metrics: a MeterProvider (given to `createRegistry({ telemetry: { meterProvider } })`)
 * whose one reader is the Prometheus exporter. The exporter starts no HTTP server of its own: the shop serves
 * what it collects at `GET /metrics`, on the port it already listens on.
 */
export interface ShopTelemetry {
  readonly meterProvider: MeterProvider
  /** Collects every instrument now (the registry's gauges are read at this moment) in Prometheus' text format. */
  scrape(): Promise<string>
  /** Stops the provider; later scrapes fail. Idempotent. */
  shutdown(): Promise<void>
}

export function createShopTelemetry(): ShopTelemetry {
  const exporter = new PrometheusExporter({ preventServerStart: true })
  // The exporter's defaults (no prefix, no timestamps, target_info and otel_scope_* labels included).
  const serializer = new PrometheusSerializer()
  const meterProvider = new MeterProvider({ readers: [exporter] })
  let stopping: Promise<void> | undefined
  return {
    meterProvider,
    scrape: async () => {
      const { resourceMetrics, errors } = await exporter.collect()
      // A callback that threw loses its own series only; the rest are still worth serving.
      if (errors.length > 0 && resourceMetrics.scopeMetrics.length === 0) throw new AggregateError(errors, 'collecting metrics failed')
      return serializer.serialize(resourceMetrics)
    },
    shutdown: () => (stopping ??= meterProvider.shutdown()),
  }
}
