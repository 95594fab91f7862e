import { inspect } from 'node:util'
import type { InspectOptions } from 'node:util'
import type { Clock } from '../clock.js'
import { InvalidOptionsError, isHyperconnError, SecretSourceError } from '../hyperconn-error.js'
import type { HyperconnError, SecretFormatError, SecretNotFoundError } from '../hyperconn-error.js'
import { safeCause, SecretBundle } from './secret-bundle.js'
import type { SecretSource } from './secret-source.js'

export interface SecretCacheConfig {
  /** How long a fetched secret is served without asking the source again. */
  readonly ttlMs: number
  /** Fraction of the TTL taken off at random: TTL is uniform in [ttl × (1 − jitter), ttl]. */
  readonly jitter: number
  /** How long past its TTL a secret is still served while the source fails transiently. */
  readonly staleIfErrorMs: number
  /** How long "not found" (and permanent source errors) are remembered. */
  readonly notFoundTtlMs: number
  /** Bound on entries, positive and negative together; least recently used go first. */
  readonly maxEntries: number
  /**
   * After a transient failure, how long to wait before asking the source again: the stale secret (or
   * the error, when there is none) is served meanwhile. Default 0: every miss asks the source.
   */
  readonly errorBackoffMs?: number
}

/** How a call to the secret source ended (`secret:fetch` event). */
export type SecretFetchOutcome = 'ok' | 'not_found' | 'error' | 'format_error'

export interface SecretCacheHooks {
  onFetch?(name: string, outcome: SecretFetchOutcome, durationMs: number): void
  onStale?(name: string, error: SecretSourceError): void
}

/** The registry's secret cache in numbers, as in `registry.stats().secretCache`. */
export interface SecretCacheStats {
  /** Cached entries, positive and negative. */
  entries: number
  /** `get`s answered from a fresh secret. */
  hits: number
  /** `get`s that needed the source (or joined a fetch in flight). */
  misses: number
  /** Calls to the source. */
  fetches: number
  /** Fetches that produced no secret (not found, source error, malformed secret). */
  errors: number
  /** Times a stale secret was served because the source failed transiently. */
  staleServed: number
  /** `get`s answered from a cached error without calling the source. */
  negativeHits: number
  /** Fetches in flight now. */
  inFlight: number
}

type CachedError = SecretNotFoundError | SecretSourceError

/**
 * One cache entry. A single shape for positive and negative entries keeps the hot-path lookup
 * monomorphic; only the parsed `SecretBundle` is kept, never the raw secret text.
 */
interface Entry {
  readonly bundle: SecretBundle | undefined
  readonly error: CachedError | undefined
  /** Served without asking the source until then. */
  expiresAt: number
  /** Positive entries: may be served on transient errors until then (TTL expiry + staleIfErrorMs). */
  readonly staleUntil: number
}

/**
 * TTL cache in front of a `SecretSource`: single-flight per secret name, TTL with jitter, stale-if-error
 * for transient failures, negative caching of "not found", LRU-bounded.
 */
export class SecretCache {
  readonly #source: SecretSource
  readonly #config: Required<SecretCacheConfig>
  readonly #clock: Clock
  readonly #hooks: SecretCacheHooks
  /** Insertion order is recency order: a hit moves its entry to the end. */
  readonly #entries = new Map<string, Entry>()
  readonly #inFlight = new Map<string, Promise<SecretBundle>>()
  /** Bumped by `clear()`, so fetches started before it don't repopulate the cache. */
  #generation = 0
  #hits = 0
  #misses = 0
  #fetches = 0
  #errors = 0
  #staleServed = 0
  #negativeHits = 0

  constructor(source: SecretSource, config: SecretCacheConfig, clock: Clock, hooks: SecretCacheHooks = {}) {
    if (typeof source?.get !== 'function') throw new InvalidOptionsError('SecretCache: source must have a get(name) method.')
    this.#source = source
    this.#config = validate(config)
    this.#clock = clock
    this.#hooks = hooks
  }

  /** The parsed secret: from cache while fresh, else fetched once for all concurrent callers. */
  async get(name: string): Promise<SecretBundle> {
    const entry = this.#entries.get(name)
    if (entry !== undefined && this.#clock.now() < entry.expiresAt) {
      this.#entries.delete(name)
      this.#entries.set(name, entry)
      if (entry.bundle !== undefined) {
        this.#hits++
        return entry.bundle
      }
      this.#negativeHits++
      throw entry.error as CachedError
    }
    this.#misses++
    return this.#fetchShared(name)
  }

  /**
   * The last good secret for `name`, fresh or stale (within staleIfErrorMs), without asking the source.
   * New connections of a warm tenant use it so a slow or failing source never delays them.
   */
  peek(name: string): SecretBundle | undefined {
    const entry = this.#entries.get(name)
    if (entry?.bundle === undefined || this.#clock.now() >= entry.staleUntil) return undefined
    return entry.bundle
  }

  /** True when `get(name)` would be answered from the cache. */
  isFresh(name: string): boolean {
    const entry = this.#entries.get(name)
    return entry !== undefined && this.#clock.now() < entry.expiresAt
  }

  /**
   * Forgets `name` so the next `get` asks the source. With `fingerprint`, only if the cached secret
   * still has it: N callers that all failed with the same old password trigger one refetch, not N.
   * A fetch already in flight is kept (and joined by the next `get`).
   */
  invalidate(name: string, fingerprint?: string): boolean {
    const entry = this.#entries.get(name)
    if (entry === undefined) return false
    if (fingerprint !== undefined && entry.bundle?.fingerprint !== fingerprint) return false
    return this.#entries.delete(name)
  }

  /** Drops every entry; fetches in flight still answer their callers but are not cached. */
  clear(): void {
    this.#generation++
    this.#entries.clear()
    this.#inFlight.clear()
  }

  stats(): SecretCacheStats {
    return {
      entries: this.#entries.size,
      hits: this.#hits,
      misses: this.#misses,
      fetches: this.#fetches,
      errors: this.#errors,
      staleServed: this.#staleServed,
      negativeHits: this.#negativeHits,
      inFlight: this.#inFlight.size,
    }
  }

  toJSON(): SecretCacheStats & { source: string } {
    return { source: this.#source.kind ?? 'custom', ...this.stats() }
  }

  [inspect.custom](_depth: number, options: InspectOptions): string {
    return `SecretCache ${inspect(this.toJSON(), options)}`
  }

  #fetchShared(name: string): Promise<SecretBundle> {
    let pending = this.#inFlight.get(name)
    if (pending === undefined) {
      const fetching = this.#fetch(name, this.#generation).finally(() => {
        // clear() may have replaced it meanwhile; only remove our own promise.
        if (this.#inFlight.get(name) === fetching) this.#inFlight.delete(name)
      })
      pending = fetching
      this.#inFlight.set(name, fetching)
    }
    return pending
  }

  async #fetch(name: string, generation: number): Promise<SecretBundle> {
    const clock = this.#clock
    const started = clock.now()
    this.#fetches++
    let outcome: SecretFetchOutcome = 'error'
    try {
      let bundle: SecretBundle
      try {
        bundle = SecretBundle.parse(name, await this.#source.get(name))
      } catch (raw) {
        const error = classify(name, raw)
        const now = clock.now()
        const live = generation === this.#generation
        const current = live ? this.#entries.get(name) : undefined
        if (error.code === 'HC_SECRET_FORMAT') {
          // A malformed secret is neither remembered nor served from an older copy.
          outcome = 'format_error'
          if (current !== undefined) this.#entries.delete(name)
          throw error
        }
        if (isTransient(error)) {
          if (current?.bundle !== undefined && now < current.staleUntil) {
            this.#staleServed++
            // Back off before asking the source again, never past the stale window.
            current.expiresAt = Math.min(now + this.#config.errorBackoffMs, current.staleUntil)
            safeCall(() => this.#hooks.onStale?.(name, error))
            return current.bundle
          }
          if (live && this.#config.errorBackoffMs > 0) this.#store(name, undefined, error, now + this.#config.errorBackoffMs, now)
          else if (current !== undefined) this.#entries.delete(name)
          throw error
        }
        // Not found or permanent: remembered briefly, so unknown tenants don't hammer the source.
        if (error.code === 'HC_SECRET_NOT_FOUND') outcome = 'not_found'
        if (live) this.#store(name, undefined, error, now + this.#config.notFoundTtlMs, now)
        throw error
      }
      outcome = 'ok'
      if (generation === this.#generation) {
        const now = clock.now()
        const { ttlMs, jitter } = this.#config
        const expiresAt = now + ttlMs * (1 - jitter * clock.random())
        this.#store(name, bundle, undefined, expiresAt, expiresAt + this.#config.staleIfErrorMs)
      }
      return bundle
    } finally {
      if (outcome !== 'ok') this.#errors++
      const durationMs = clock.now() - started
      safeCall(() => this.#hooks.onFetch?.(name, outcome, durationMs))
    }
  }

  #store(name: string, bundle: SecretBundle | undefined, error: CachedError | undefined, expiresAt: number, staleUntil: number): void {
    this.#entries.delete(name)
    this.#entries.set(name, { bundle, error, expiresAt, staleUntil })
    const { maxEntries } = this.#config
    if (this.#entries.size <= maxEntries) return
    // Remembered failures go first: a flood of unknown org ids must not push out the secrets of live tenants.
    for (const [oldest, entry] of this.#entries) {
      if (this.#entries.size <= maxEntries) return
      if (entry.bundle === undefined && oldest !== name) this.#entries.delete(oldest)
    }
    for (const oldest of this.#entries.keys()) {
      if (this.#entries.size <= maxEntries) return
      this.#entries.delete(oldest)
    }
  }
}

/**
 * What a source threw, as one of ours. Anything unrecognised becomes a transient `SecretSourceError`
 * whose cause keeps only the name and a redacted message of the original.
 */
function classify(name: string, error: unknown): SecretNotFoundError | SecretSourceError | SecretFormatError {
  if (
    isHyperconnError(error) &&
    (error.code === 'HC_SECRET_NOT_FOUND' || error.code === 'HC_SECRET_FORMAT' || error.code === 'HC_SECRET_SOURCE')
  ) {
    return error as SecretNotFoundError | SecretSourceError | SecretFormatError
  }
  return new SecretSourceError(name, true, undefined, { cause: safeCause(error) })
}

function isTransient(error: HyperconnError): error is SecretSourceError {
  return error.code === 'HC_SECRET_SOURCE' && (error as SecretSourceError).transient === true
}

/** Hooks feed events and logs; a throwing listener must not break secret resolution. */
function safeCall(fn: () => void): void {
  try {
    fn()
  } catch {
    // ignored on purpose
  }
}

function validate(config: SecretCacheConfig): Required<SecretCacheConfig> {
  const check = (key: keyof SecretCacheConfig, value: unknown, min: number, max = Infinity, integer = false): number => {
    if (typeof value !== 'number' || Number.isNaN(value) || value < min || value > max || (integer && !Number.isInteger(value))) {
      throw new InvalidOptionsError(`SecretCache: ${key} must be ${integer ? 'an integer' : 'a number'} ≥ ${min}${max === Infinity ? '' : ` and ≤ ${max}`}.`)
    }
    return value
  }
  return Object.freeze({
    ttlMs: check('ttlMs', config.ttlMs, 0),
    jitter: check('jitter', config.jitter, 0, 1),
    staleIfErrorMs: check('staleIfErrorMs', config.staleIfErrorMs, 0),
    notFoundTtlMs: check('notFoundTtlMs', config.notFoundTtlMs, 0),
    maxEntries: check('maxEntries', config.maxEntries, 1, Infinity, true),
    errorBackoffMs: check('errorBackoffMs', config.errorBackoffMs ?? 0, 0),
  })
}
