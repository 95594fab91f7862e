import { context } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { DataPointType, MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics'
import type { PushMetricExporter, ResourceMetrics } from '@opentelemetry/sdk-metrics'
import { BasicTracerProvider } from '@opentelemetry/sdk-trace-base'
import type { ReadableSpan, SpanProcessor } from '@opentelemetry/sdk-trace-base'

/** What the no-op exporters saw: proof that the "on" configurations really recorded. */
export interface OtelCounts {
  /** Values recorded in `db.client.connection.use_time` (one per checkout), cumulative. */
  readonly useTimeRecords: number
  /** Values recorded in `db.client.connection.wait_time` (one per checkout), cumulative. */
  readonly waitTimeRecords: number
  /** Spans ended, by name. */
  readonly spans: Readonly<Record<string, number>>
}

export interface NoopOtel {
  readonly meterProvider: MeterProvider
  readonly tracerProvider: BasicTracerProvider
  /** Collects once (forceFlush) and returns the counts. */
  counts(): Promise<OtelCounts>
  shutdown(): Promise<void>
}

/** Once per process, as the OpenTelemetry Node SDK does: spans become active through AsyncLocalStorage. */
export function registerContextManager(): void {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
}

/**
 * A real `@opentelemetry/sdk-metrics` MeterProvider and `@opentelemetry/sdk-trace-base` BasicTracerProvider
 * whose exports go nowhere:
 * - metrics: a PeriodicExportingMetricReader with an exporter that drops what it gets and an interval of
 *   an hour, so no collection runs while the bench measures (`counts()` collects once at the end);
 * - spans: a span processor that only counts ended spans (the default sampler records every span). A
 *   BatchSpanProcessor would add its own buffering per span: an exporter's cost, not ours.
 */
export function createNoopOtel(): NoopOtel {
  let lastExport: ResourceMetrics | undefined
  const exporter: PushMetricExporter = {
    export(metrics, done) {
      lastExport = metrics
      done({ code: 0 }) // ExportResultCode.SUCCESS
    },
    forceFlush: async () => {},
    shutdown: async () => {},
  }
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 })
  const meterProvider = new MeterProvider({ readers: [reader] })
  const spans: Record<string, number> = {}
  const processor: SpanProcessor = {
    onStart() {},
    onEnd(span: ReadableSpan) {
      spans[span.name] = (spans[span.name] ?? 0) + 1
    },
    forceFlush: async () => {},
    shutdown: async () => {},
  }
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [processor] })
  const histogramCount = (name: string): number => {
    let count = 0
    for (const scope of lastExport?.scopeMetrics ?? []) {
      for (const metric of scope.metrics) {
        if (metric.descriptor.name !== name || metric.dataPointType !== DataPointType.HISTOGRAM) continue
        for (const point of metric.dataPoints) count += point.value.count
      }
    }
    return count
  }
  return {
    meterProvider,
    tracerProvider,
    async counts() {
      await reader.forceFlush()
      return {
        useTimeRecords: histogramCount('db.client.connection.use_time'),
        waitTimeRecords: histogramCount('db.client.connection.wait_time'),
        spans: { ...spans },
      }
    },
    async shutdown() {
      await meterProvider.shutdown()
      await tracerProvider.shutdown()
    },
  }
}
