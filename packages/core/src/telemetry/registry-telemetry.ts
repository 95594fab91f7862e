import type { Attributes, BatchObservableCallback, Counter, Histogram, Meter, MeterProvider, Observable, Tracer, TracerProvider } from '@opentelemetry/api'
import type { SecretSource, SecretValue } from '../secrets/secret-source.js'
import type { TenantKey, TransactionOptions } from '../tenant-types.js'
import type { OtelApi } from './telemetry-api.js'
import type { TelemetryOptions } from './telemetry-options.js'

/** One physical pool as the connection metrics see it at collection time. */
export interface PoolGauge {
  readonly name: string
  readonly idle: number
  readonly used: number
  readonly max: number
}

/** Where the observable metrics read from, at collection time only. */
export interface TelemetrySources {
  pools(): Iterable<PoolGauge>
  /** Callers waiting, by the name of the pool they wait for. */
  pending(): ReadonlyMap<string, number>
}

/** Filled in by the lease point while an acquire runs (only when telemetry is on). */
export interface AcquireNote {
  poolName: string | undefined
  waitedMs: number
  queued: boolean
}

const METER = '@hyperconn/core'
const POOL = 'db.client.connection.pool.name'
const STATE = 'db.client.connection.state'
const SERVICE = 'hyperconn.service'
const ORG = 'hyperconn.org_id'
// The semantic conventions' advice for connection wait/use/create times, in seconds.
const TIME_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/**
 * OpenTelemetry for one registry: the database-client connection metrics of the semantic conventions, per
 * physical pool (`db.client.connection.pool.name` = `host:port/database@user`, no secret), hyperconn's own
 * counters, and spans for transactions, acquires (under an active span only) and secret fetches. Gauges are
 * read at collection time; per-checkout work is two histogram records.
 */
export class RegistryTelemetry {
  readonly #api: OtelApi
  readonly #tracer: Tracer
  readonly #meter: Meter
  readonly #tenantAttribute: boolean
  readonly #waitTime: Histogram
  readonly #useTime: Histogram
  readonly #timeouts: Counter
  readonly #secretFetches: Counter
  readonly #evictions: Counter
  readonly #leaks: Counter
  readonly #observables: Observable[]
  readonly #collect: BatchObservableCallback
  /** Attributes per pool and service, built once: recording must not allocate per checkout. */
  readonly #attributes = new Map<string, Map<string, Attributes>>()
  #closed = false

  constructor(api: OtelApi, options: TelemetryOptions, sources: TelemetrySources) {
    this.#api = api
    this.#tenantAttribute = options.tenantAttribute === true
    const meterProvider = (options.meterProvider as MeterProvider | undefined) ?? api.metrics.getMeterProvider()
    const tracerProvider = (options.tracerProvider as TracerProvider | undefined) ?? api.trace.getTracerProvider()
    this.#meter = meterProvider.getMeter(METER)
    this.#tracer = tracerProvider.getTracer(METER)
    const meter = this.#meter
    const count = meter.createObservableUpDownCounter('db.client.connection.count', {
      unit: '{connection}',
      description: 'The number of connections that are currently in the state described by the state attribute.',
    })
    const max = meter.createObservableUpDownCounter('db.client.connection.max', {
      unit: '{connection}',
      description: 'The maximum number of open connections allowed.',
    })
    const pending = meter.createObservableUpDownCounter('db.client.connection.pending_requests', {
      unit: '{request}',
      description: 'The number of current pending requests for an open connection.',
    })
    this.#waitTime = meter.createHistogram('db.client.connection.wait_time', {
      unit: 's',
      description: 'The time it took to obtain an open connection from the pool.',
      advice: { explicitBucketBoundaries: TIME_BUCKETS },
    })
    this.#useTime = meter.createHistogram('db.client.connection.use_time', {
      unit: 's',
      description: 'The time between borrowing a connection and returning it to the pool.',
      advice: { explicitBucketBoundaries: TIME_BUCKETS },
    })
    this.#timeouts = meter.createCounter('db.client.connection.timeouts', {
      unit: '{timeout}',
      description: 'The number of connection timeouts that have occurred trying to obtain a connection from the pool.',
    })
    this.#secretFetches = meter.createCounter('hyperconn.secret.fetches', { unit: '{fetch}', description: 'Secret fetches from the secret source, by outcome.' })
    this.#evictions = meter.createCounter('hyperconn.pool.evictions', { unit: '{pool}', description: 'Physical pools ended, by reason.' })
    this.#leaks = meter.createCounter('hyperconn.connection.leaks', { unit: '{connection}', description: 'Checkouts reported as leaks, by reason.' })
    this.#observables = [count, max, pending]
    // The SDK keeps exporting a series' last value once a callback stops observing it
    // (open-telemetry/opentelemetry-js#4096): an ended pool is reported at 0 once, then left out.
    let reported = new Set<string>()
    this.#collect = (result) => {
      const closed = this.#closed
      const waiting = closed ? new Map<string, number>() : sources.pending()
      const live = new Set<string>()
      const observe = (name: string, idle: number, used: number, most: number): void => {
        result.observe(count, idle, { [POOL]: name, [STATE]: 'idle' })
        result.observe(count, used, { [POOL]: name, [STATE]: 'used' })
        result.observe(max, most, { [POOL]: name })
        result.observe(pending, waiting.get(name) ?? 0, { [POOL]: name })
      }
      if (!closed) {
        for (const pool of sources.pools()) {
          live.add(pool.name)
          observe(pool.name, pool.idle, pool.used, pool.max)
        }
      }
      // Callers waiting for a pool that does not exist yet (held back by maxPools).
      const waitingOnly = new Set<string>()
      for (const [name, n] of waiting) {
        if (live.has(name)) continue
        waitingOnly.add(name)
        result.observe(pending, n, { [POOL]: name })
      }
      for (const name of reported) {
        if (live.has(name) || waitingOnly.has(name)) continue
        observe(name, 0, 0, 0)
      }
      reported = new Set([...live, ...waitingOnly])
      if (closed) queueMicrotask(() => this.#meter.removeBatchObservableCallback(this.#collect, this.#observables))
    }
    meter.addBatchObservableCallback(this.#collect, this.#observables)
  }

  /**
   * Registry closed: the next collection reports every pool at 0 (the SDK would keep exporting the last
   * values otherwise), then the callback is removed.
   */
  close(): void {
    this.#closed = true
  }

  /** The active trace context (kept by a queued caller). */
  capture(): unknown {
    return this.#api.context.active()
  }

  /** Runs `fn` in a captured trace context. */
  within<T>(context: unknown, fn: () => T): T {
    return context === undefined ? fn() : this.#api.context.with(context as ReturnType<OtelApi['context']['active']>, fn)
  }

  /** Whether an acquire now runs under an active span (a traced request): then it gets a span of its own. */
  traced(): boolean {
    const api = this.#api
    return api.trace.getSpan(api.context.active()) !== undefined
  }

  /**
   * Wraps an acquire under an active span in `hyperconn.connection.acquire`. Only then: a span per checkout
   * of untraced background work would cost more than the checkout.
   */
  acquireSpan<T>(key: TenantKey, note: AcquireNote, run: () => Promise<T>): Promise<T> {
    return this.#tracer.startActiveSpan('hyperconn.connection.acquire', { attributes: this.#tenant(key) }, async (span) => {
      try {
        const result = await run()
        span.setAttributes({ [POOL]: note.poolName ?? '', 'hyperconn.wait_ms': note.waitedMs, 'hyperconn.queued': note.queued })
        return result
      } catch (error) {
        this.#failed(span, error)
        throw error
      } finally {
        span.end()
      }
    })
  }

  /** A checkout began after `waitedMs` (secret, queue, open). */
  waited(poolName: string, key: TenantKey, waitedMs: number): void {
    this.#waitTime.record(waitedMs / 1000, this.#attributesOf(poolName, key))
  }

  /** A checkout ended after `heldMs`. */
  released(poolName: string, key: TenantKey, heldMs: number): void {
    this.#useTime.record(heldMs / 1000, this.#attributesOf(poolName, key))
  }

  /** A caller gave up waiting after `waitedMs` (PoolSaturatedError): a timeout, and its wait. */
  timedOut(poolName: string, key: TenantKey, waitedMs: number): void {
    const attributes = this.#attributesOf(poolName, key)
    this.#timeouts.add(1, attributes)
    this.#waitTime.record(waitedMs / 1000, attributes)
  }

  /** A secret fetch finished (from the secret cache: format errors included). */
  secretFetched(outcome: string): void {
    this.#secretFetches.add(1, { 'hyperconn.outcome': outcome })
  }

  evicted(reason: string): void {
    this.#evictions.add(1, { 'hyperconn.eviction.reason': reason })
  }

  leaked(reason: string, key: TenantKey): void {
    this.#leaks.add(1, { 'hyperconn.leak.reason': reason, ...this.#tenant(key) })
  }

  /** `hyperconn.transaction` around a transaction that begins; pg query spans inside become its children. */
  transaction<T>(key: TenantKey, options: TransactionOptions, propagation: string, run: () => Promise<T>): Promise<T> {
    const attributes: Attributes = { ...this.#tenant(key), 'hyperconn.propagation': propagation }
    if (options.isolationLevel !== undefined) attributes['hyperconn.isolation_level'] = options.isolationLevel
    if (options.readOnly !== undefined) attributes['hyperconn.read_only'] = options.readOnly
    return this.#tracer.startActiveSpan('hyperconn.transaction', { attributes }, async (span) => {
      try {
        const result = await run()
        span.setAttribute('hyperconn.outcome', 'committed')
        return result
      } catch (error) {
        span.setAttribute('hyperconn.outcome', 'rolled_back')
        this.#failed(span, error)
        throw error
      } finally {
        span.end()
      }
    })
  }

  /** The secret source with a `hyperconn.secret.fetch` span around each `get` (outcome, never the value). */
  traceSource(source: SecretSource): SecretSource {
    return {
      ...(source.kind === undefined ? {} : { kind: source.kind }),
      // Other capabilities of the source (listing secret names) pass through untouched.
      ...passThrough(source, 'list'),
      get: (name: string): Promise<SecretValue> =>
        this.#tracer.startActiveSpan('hyperconn.secret.fetch', { attributes: this.#tenantAttribute ? { 'hyperconn.secret.name': name } : {} }, async (span) => {
          try {
            const value = await source.get(name)
            span.setAttribute('hyperconn.outcome', 'ok')
            return value
          } catch (error) {
            const outcome = codeOf(error) === 'HC_SECRET_NOT_FOUND' ? 'not_found' : 'error'
            span.setAttribute('hyperconn.outcome', outcome)
            this.#failed(span, error)
            throw error
          } finally {
            span.end()
          }
        }),
    }
  }

  /** Error type and status only: an error message may quote SQL or values. */
  #failed(span: { setStatus(status: { code: number }): unknown; setAttribute(key: string, value: string): unknown }, error: unknown): void {
    span.setStatus({ code: this.#api.SpanStatusCode.ERROR })
    const code = codeOf(error)
    span.setAttribute('error.type', code ?? (error instanceof Error ? error.name : 'Error'))
  }

  #tenant(key: TenantKey): Attributes {
    return this.#tenantAttribute ? { [SERVICE]: key.service, [ORG]: key.orgId } : { [SERVICE]: key.service }
  }

  #attributesOf(poolName: string, key: TenantKey): Attributes {
    if (this.#tenantAttribute) return { [POOL]: poolName, [SERVICE]: key.service, [ORG]: key.orgId }
    let byService = this.#attributes.get(poolName)
    if (byService === undefined) {
      // Bounded: pools come and go with eviction; a name that returns is rebuilt.
      if (this.#attributes.size >= 10_000) this.#attributes.clear()
      this.#attributes.set(poolName, (byService = new Map()))
    }
    let attributes = byService.get(key.service)
    if (attributes === undefined) byService.set(key.service, (attributes = Object.freeze({ [POOL]: poolName, [SERVICE]: key.service })))
    return attributes
  }
}

function codeOf(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null) return undefined
  const code = (error as { code?: unknown }).code
  return typeof code === 'string' ? code : undefined
}

function passThrough(source: SecretSource, method: string): Record<string, unknown> {
  const fn = (source as unknown as Record<string, unknown>)[method]
  return typeof fn === 'function' ? { [method]: (fn as (...args: unknown[]) => unknown).bind(source) } : {}
}
