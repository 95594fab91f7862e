import { inspect } from 'node:util'
import { afterEach, describe, expect, it, vi } from 'vitest'
import type { Clock } from '../clock.js'
import { systemClock } from '../clock.js'
import { InvalidOptionsError, SecretFormatError, SecretNotFoundError, SecretSourceError } from '../hyperconn-error.js'
import { SecretBundle } from './secret-bundle.js'
import { SecretCache } from './secret-cache.js'
import type { SecretCacheConfig, SecretCacheHooks } from './secret-cache.js'
import type { SecretSource, SecretValue } from './secret-source.js'

const MARKER = 'Marker-Pw-7q'
const secret = (password: string): Record<string, string> => ({
  'core-postgresql': `postgresql://app:${password}@db:5432/app`,
})

/** A clock whose time only moves when told to, and whose "random" is chosen by the test. */
class FakeClock implements Clock {
  time = 1_000_000
  rand = 0
  now(): number {
    return this.time
  }
  advance(ms: number): void {
    this.time += ms
  }
  random(): number {
    return this.rand
  }
  setInterval(): never {
    throw new Error('not used')
  }
  clearInterval(): void {}
  setTimeout(): never {
    throw new Error('not used')
  }
  clearTimeout(): void {}
}

/** A source backed by a map of behaviours; counts calls per name. */
class FakeSource implements SecretSource {
  readonly kind = 'fake'
  readonly behaviour = new Map<string, () => Promise<SecretValue>>()
  readonly get = vi.fn((name: string): Promise<SecretValue> => {
    const fn = this.behaviour.get(name)
    return fn === undefined ? Promise.reject(new SecretNotFoundError(name)) : fn()
  })
  set(name: string, value: SecretValue): void {
    this.behaviour.set(name, () => Promise.resolve(value))
  }
  fail(name: string, error: unknown): void {
    this.behaviour.set(name, async () => {
      throw error // may deliberately be a non-Error
    })
  }
  calls(name?: string): number {
    return name === undefined ? this.get.mock.calls.length : this.get.mock.calls.filter(([n]) => n === name).length
  }
}

function deferred<T>(): { promise: Promise<T>; resolve(value: T): void; reject(error: unknown): void } {
  let resolve!: (value: T) => void
  let reject!: (error: unknown) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

const CONFIG: SecretCacheConfig = Object.freeze({
  ttlMs: 60_000,
  jitter: 0,
  staleIfErrorMs: 300_000,
  notFoundTtlMs: 10_000,
  maxEntries: 100,
})

function setup(config: Partial<SecretCacheConfig> = {}, hooks?: SecretCacheHooks) {
  const source = new FakeSource()
  const clock = new FakeClock()
  const cache = new SecretCache(source, { ...CONFIG, ...config }, clock, hooks)
  return { source, clock, cache }
}

const transient = (name: string) => new SecretSourceError(name, true, 'ThrottlingException')
const permanent = (name: string) => new SecretSourceError(name, false, 'AccessDeniedException')

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection')
    },
    (error: unknown) => error,
  )
}

afterEach(() => {
  vi.useRealTimers()
})

describe('SecretCache: hits and single-flight', () => {
  it('100 concurrent gets of a cold secret make one source call and share one bundle', async () => {
    const { source, cache } = setup()
    const gate = deferred<SecretValue>()
    source.behaviour.set('s1', () => gate.promise)
    const pending = Array.from({ length: 100 }, () => cache.get('s1'))
    expect(cache.stats().inFlight).toBe(1)
    gate.resolve(secret('pw1'))
    const bundles = await Promise.all(pending)
    expect(source.calls('s1')).toBe(1)
    expect(new Set(bundles).size).toBe(1)
    expect(bundles[0]).toBeInstanceOf(SecretBundle)
    expect(cache.stats()).toMatchObject({ entries: 1, misses: 100, fetches: 1, hits: 0, inFlight: 0, errors: 0 })
  })

  it('a fresh entry is served without calling the source', async () => {
    const { source, clock, cache } = setup()
    source.set('s1', secret('pw1'))
    const first = await cache.get('s1')
    clock.advance(59_999)
    expect(await cache.get('s1')).toBe(first)
    expect(source.calls()).toBe(1)
    expect(cache.stats()).toMatchObject({ hits: 1, misses: 1, fetches: 1 })
  })

  it('a failed fetch clears the in-flight promise: concurrent callers share the failure, the next get retries', async () => {
    const { source, cache } = setup()
    const gate = deferred<SecretValue>()
    source.behaviour.set('s1', () => gate.promise)
    const pending = Array.from({ length: 10 }, () => rejection(cache.get('s1')))
    gate.reject(transient('s1'))
    const errors = await Promise.all(pending)
    expect(new Set(errors).size).toBe(1)
    expect(cache.stats().inFlight).toBe(0)
    source.set('s1', secret('pw1'))
    await expect(cache.get('s1')).resolves.toBeInstanceOf(SecretBundle)
    expect(source.calls('s1')).toBe(2)
  })

  it('different names are fetched independently', async () => {
    const { source, cache } = setup()
    source.set('a', secret('a'))
    source.set('b', secret('b'))
    const [a, b] = await Promise.all([cache.get('a'), cache.get('b')])
    expect(a.name).toBe('a')
    expect(b.name).toBe('b')
    expect(source.calls()).toBe(2)
  })
})

describe('SecretCache: TTL and jitter', () => {
  it('refetches once the TTL has passed and returns the rotated secret', async () => {
    const { source, clock, cache } = setup()
    source.set('s1', secret('old'))
    const old = await cache.get('s1')
    source.set('s1', secret('new'))
    clock.advance(60_000)
    const rotated = await cache.get('s1')
    expect(rotated).not.toBe(old)
    expect(rotated.fingerprint).not.toBe(old.fingerprint)
    expect(rotated.connectionString('core-postgresql')).toContain(':new@')
    expect(source.calls()).toBe(2)
  })

  it.each([0, 0.25, 0.5, 0.999999])('with jitter 0.2 and random()=%s the TTL lies in [0.8·ttl, ttl]', async (rand) => {
    const { source, clock, cache } = setup({ ttlMs: 10_000, jitter: 0.2 })
    clock.rand = rand
    source.set('s1', secret('pw'))
    await cache.get('s1')
    const ttl = 10_000 * (1 - 0.2 * rand)
    expect(ttl).toBeGreaterThanOrEqual(8_000)
    expect(ttl).toBeLessThanOrEqual(10_000)
    clock.advance(Math.ceil(ttl) - 1)
    await cache.get('s1')
    expect(source.calls()).toBe(1)
    clock.advance(1)
    await cache.get('s1')
    expect(source.calls()).toBe(2)
  })

  it('spreads expiry of secrets fetched together (jitter draws from clock.random per entry)', async () => {
    const { source, clock, cache } = setup({ ttlMs: 10_000, jitter: 0.5 })
    source.set('a', secret('a'))
    source.set('b', secret('b'))
    clock.rand = 0.9 // a: 5 500 ms
    await cache.get('a')
    clock.rand = 0 // b: 10 000 ms
    await cache.get('b')
    clock.advance(6_000)
    await cache.get('a')
    await cache.get('b')
    expect(source.calls('a')).toBe(2)
    expect(source.calls('b')).toBe(1)
  })

  it('ttlMs 0 never serves from cache but still single-flights', async () => {
    const { source, cache } = setup({ ttlMs: 0 })
    source.set('s1', secret('pw'))
    await Promise.all([cache.get('s1'), cache.get('s1')])
    await cache.get('s1')
    expect(source.calls()).toBe(2)
  })

  it('works with vi.useFakeTimers() and the default clock', async () => {
    vi.useFakeTimers({ now: 0 })
    const source = new FakeSource()
    source.set('s1', secret('pw'))
    const cache = new SecretCache(source, CONFIG, systemClock)
    await cache.get('s1')
    vi.advanceTimersByTime(59_999)
    await cache.get('s1')
    expect(source.calls()).toBe(1)
    vi.advanceTimersByTime(1)
    await cache.get('s1')
    expect(source.calls()).toBe(2)
  })
})

describe('SecretCache: stale-if-error', () => {
  it('serves the stale bundle on a transient failure within staleIfErrorMs, then rejects', async () => {
    const onStale = vi.fn()
    const { source, clock, cache } = setup({}, { onStale })
    source.set('s1', secret('pw'))
    const good = await cache.get('s1')
    const outage = transient('s1')
    source.fail('s1', outage)

    clock.advance(60_000 + 299_999) // expired 299 999 ms ago
    expect(await cache.get('s1')).toBe(good)
    expect(onStale).toHaveBeenCalledWith('s1', outage)
    expect(cache.stats().staleServed).toBe(1)

    clock.advance(1) // expired exactly staleIfErrorMs ago: too old
    expect(await rejection(cache.get('s1'))).toBe(outage)
    expect(source.calls()).toBe(3)
    expect(cache.stats()).toMatchObject({ staleServed: 1, errors: 2, entries: 0 })
  })

  it('asks the source again on every miss during an outage (errorBackoffMs 0), and recovers', async () => {
    const { source, clock, cache } = setup()
    source.set('s1', secret('old'))
    await cache.get('s1')
    clock.advance(60_000)
    source.fail('s1', transient('s1'))
    await cache.get('s1')
    await cache.get('s1')
    expect(source.calls()).toBe(3)
    source.set('s1', secret('new'))
    expect((await cache.get('s1')).connectionString('core-postgresql')).toContain(':new@')
    // Fresh again: a full TTL from now.
    clock.advance(59_999)
    await cache.get('s1')
    expect(source.calls()).toBe(4)
  })

  it('with errorBackoffMs, an outage costs one source call per backoff period and never extends the stale window', async () => {
    const { source, clock, cache } = setup({ errorBackoffMs: 5_000 })
    source.set('s1', secret('pw'))
    const good = await cache.get('s1')
    clock.advance(60_000)
    source.fail('s1', transient('s1'))
    for (let i = 0; i < 100; i++) {
      expect(await cache.get('s1')).toBe(good)
      clock.advance(100)
    } // 10 s of traffic
    expect(source.calls()).toBe(1 + 2)
    clock.advance(300_000)
    await expect(cache.get('s1')).rejects.toBeInstanceOf(SecretSourceError)
    // Without a stale copy the transient error itself is remembered for the backoff period.
    await expect(cache.get('s1')).rejects.toBeInstanceOf(SecretSourceError)
    expect(source.calls()).toBe(1 + 2 + 1)
    clock.advance(5_000)
    source.set('s1', secret('pw'))
    await expect(cache.get('s1')).resolves.toBeInstanceOf(SecretBundle)
  })

  it('a transient failure with no cached secret rejects (and is not remembered by default)', async () => {
    const { source, cache } = setup()
    source.fail('s1', transient('s1'))
    await expect(cache.get('s1')).rejects.toMatchObject({ code: 'HC_SECRET_SOURCE', transient: true })
    await expect(cache.get('s1')).rejects.toBeInstanceOf(SecretSourceError)
    expect(source.calls()).toBe(2)
    expect(cache.stats().entries).toBe(0)
  })

  it('wraps unknown errors as transient SecretSourceErrors with a sanitised cause, and serves stale for them', async () => {
    const { source, clock, cache } = setup()
    const raw = Object.assign(new Error(`vault said: postgresql://app:${MARKER}@db/app`), {
      name: 'VaultError',
      response: { body: MARKER },
    })
    source.fail('s1', raw)
    const error = (await rejection(cache.get('s1'))) as SecretSourceError
    expect(error).toBeInstanceOf(SecretSourceError)
    expect(error.transient).toBe(true)
    expect(error.secretName).toBe('s1')
    expect(error.cause).not.toBe(raw)
    expect((error.cause as Error).name).toBe('VaultError')
    expect(inspect(error, { depth: Infinity, showHidden: true })).not.toContain(MARKER)

    source.set('s1', secret('pw'))
    const good = await cache.get('s1')
    clock.advance(60_000)
    source.fail('s1', 'a thrown string')
    expect(await cache.get('s1')).toBe(good)
  })

  it('a permanent failure is not served stale; it is remembered for notFoundTtlMs', async () => {
    const { source, clock, cache } = setup()
    source.set('s1', secret('pw'))
    await cache.get('s1')
    clock.advance(60_000)
    const denied = permanent('s1')
    source.fail('s1', denied)
    expect(await rejection(cache.get('s1'))).toBe(denied)
    expect(await rejection(cache.get('s1'))).toBe(denied)
    expect(source.calls()).toBe(2)
    expect(cache.stats().negativeHits).toBe(1)
    clock.advance(10_000)
    source.set('s1', secret('pw'))
    await expect(cache.get('s1')).resolves.toBeInstanceOf(SecretBundle)
  })
})

describe('SecretCache: not found', () => {
  it('is negative-cached for notFoundTtlMs and rethrown without calling the source', async () => {
    const onFetch = vi.fn()
    const { source, clock, cache } = setup({}, { onFetch })
    const first = await rejection(cache.get('martech-nope'))
    expect(first).toBeInstanceOf(SecretNotFoundError)
    clock.advance(9_999)
    for (let i = 0; i < 50; i++) expect(await rejection(cache.get('martech-nope'))).toBe(first)
    expect(source.calls()).toBe(1)
    expect(cache.stats()).toMatchObject({ negativeHits: 50, fetches: 1, errors: 1, entries: 1 })
    expect(onFetch).toHaveBeenCalledTimes(1)
    expect(onFetch).toHaveBeenCalledWith('martech-nope', 'not_found', 0)

    clock.advance(1)
    source.set('martech-nope', secret('created'))
    await expect(cache.get('martech-nope')).resolves.toBeInstanceOf(SecretBundle)
    expect(source.calls()).toBe(2)
  })

  it('replaces an expired secret (deleted secrets are not served stale)', async () => {
    const { source, clock, cache } = setup()
    source.set('s1', secret('pw'))
    await cache.get('s1')
    clock.advance(60_000)
    source.behaviour.delete('s1')
    await expect(cache.get('s1')).rejects.toBeInstanceOf(SecretNotFoundError)
    expect(cache.stats().staleServed).toBe(0)
  })
})

describe('SecretCache: malformed secrets', () => {
  it('rejects with SecretFormatError and creates no entry, positive or negative', async () => {
    const onFetch = vi.fn()
    const { source, cache } = setup({}, { onFetch })
    source.set('s1', `{"core-postgresql": "postgresql://app:${MARKER}@db/app"`)
    const error = (await rejection(cache.get('s1'))) as SecretFormatError
    expect(error).toBeInstanceOf(SecretFormatError)
    expect(error.message).not.toContain(MARKER)
    expect(cache.stats().entries).toBe(0)
    await expect(cache.get('s1')).rejects.toBeInstanceOf(SecretFormatError)
    expect(source.calls()).toBe(2)
    expect(onFetch).toHaveBeenLastCalledWith('s1', 'format_error', 0)
  })

  it('drops an expired good copy instead of serving it stale', async () => {
    const { source, clock, cache } = setup()
    source.set('s1', secret('pw'))
    await cache.get('s1')
    clock.advance(60_000)
    source.set('s1', '[1,2,3]')
    await expect(cache.get('s1')).rejects.toBeInstanceOf(SecretFormatError)
    expect(cache.stats().entries).toBe(0)
    // A later outage has nothing stale to serve.
    source.fail('s1', transient('s1'))
    await expect(cache.get('s1')).rejects.toBeInstanceOf(SecretSourceError)
  })

  it('a SecretFormatError thrown by the source is treated the same way', async () => {
    const { source, cache } = setup()
    source.fail('s1', new SecretFormatError('s1', undefined, 'has neither a SecretString nor a SecretBinary value'))
    await expect(cache.get('s1')).rejects.toBeInstanceOf(SecretFormatError)
    expect(cache.stats().entries).toBe(0)
  })
})

describe('SecretCache: bounded LRU', () => {
  it('keeps at most maxEntries, dropping the least recently used secret when there are no failures to drop', async () => {
    const { source, cache } = setup({ maxEntries: 3 })
    for (const name of ['a', 'b', 'c', 'd']) source.set(name, secret(name))
    await cache.get('a')
    await cache.get('b')
    await cache.get('c')
    await cache.get('a') // hit: a becomes most recent; b is now the oldest
    await cache.get('d') // evicts b
    expect(cache.stats().entries).toBe(3)
    await cache.get('a')
    await cache.get('c')
    expect(source.calls()).toBe(4)
    await cache.get('b') // refetched, evicts d (least recently used)
    expect(source.calls('b')).toBe(2)
    await cache.get('d')
    expect(source.calls('d')).toBe(2)
    expect(cache.stats().entries).toBe(3)
  })

  it('drops remembered failures before live secrets: a flood of unknown names costs at most one secret', async () => {
    const { source, cache } = setup({ maxEntries: 3 })
    for (const name of ['a', 'b', 'c']) source.set(name, secret(name))
    await cache.get('a')
    await cache.get('b')
    await cache.get('c')
    for (let i = 0; i < 100; i++) await expect(cache.get(`unknown-${i}`)).rejects.toBeInstanceOf(SecretNotFoundError)
    expect(cache.stats().entries).toBe(3)
    await cache.get('b')
    await cache.get('c')
    expect(source.calls('b')).toBe(1)
    expect(source.calls('c')).toBe(1)
    // the last unknown name is still remembered
    await expect(cache.get('unknown-99')).rejects.toBeInstanceOf(SecretNotFoundError)
    expect(source.calls('unknown-99')).toBe(1)
  })

  it('stays bounded under a flood of unknown names', async () => {
    const { cache } = setup({ maxEntries: 50 })
    for (let i = 0; i < 1_000; i++) await cache.get(`org-${i}`).catch(() => undefined)
    expect(cache.stats().entries).toBe(50)
  })
})

describe('SecretCache: invalidate and clear', () => {
  it('invalidate forces the next get to fetch', async () => {
    const { source, cache } = setup()
    source.set('s1', secret('pw'))
    await cache.get('s1')
    expect(cache.invalidate('s1')).toBe(true)
    expect(cache.invalidate('s1')).toBe(false)
    await cache.get('s1')
    expect(source.calls()).toBe(2)
  })

  it('invalidate with a fingerprint only drops that version: N callers that saw the old password cause one refetch', async () => {
    const { source, cache } = setup()
    source.set('s1', secret('old'))
    const old = await cache.get('s1')
    source.set('s1', secret('new'))
    for (let i = 0; i < 10; i++) {
      cache.invalidate('s1', old.fingerprint)
      await cache.get('s1')
    }
    expect(source.calls()).toBe(2)
  })

  it('concurrent invalidate + get share one fetch', async () => {
    const { source, cache } = setup()
    source.set('s1', secret('pw'))
    await cache.get('s1')
    const gate = deferred<SecretValue>()
    source.behaviour.set('s1', () => gate.promise)
    const pending = Array.from({ length: 20 }, () => {
      cache.invalidate('s1')
      return cache.get('s1')
    })
    gate.resolve(secret('new'))
    await Promise.all(pending)
    expect(source.calls()).toBe(2)
  })

  it('clear drops every entry; a fetch in flight answers its callers but is not cached', async () => {
    const { source, cache } = setup()
    source.set('a', secret('a'))
    await cache.get('a')
    const gate = deferred<SecretValue>()
    source.behaviour.set('b', () => gate.promise)
    const pending = cache.get('b')
    cache.clear()
    expect(cache.stats()).toMatchObject({ entries: 0, inFlight: 0 })
    gate.resolve(secret('b'))
    await expect(pending).resolves.toBeInstanceOf(SecretBundle)
    expect(cache.stats().entries).toBe(0)
  })
})

describe('SecretCache: hooks, stats and printing', () => {
  it('reports each fetch with its outcome and duration; a throwing hook changes nothing', async () => {
    const clock = new FakeClock()
    const outcomes: Array<[string, string, number]> = []
    const source = new FakeSource()
    source.behaviour.set('slow', async () => {
      clock.advance(250)
      return secret('pw')
    })
    source.fail('bad', permanent('bad'))
    const cache = new SecretCache(source, CONFIG, clock, {
      onFetch: (name, outcome, durationMs) => {
        outcomes.push([name, outcome, durationMs])
        throw new Error('listener bug')
      },
      onStale: () => {
        throw new Error('listener bug')
      },
    })
    await expect(cache.get('slow')).resolves.toBeInstanceOf(SecretBundle)
    await expect(cache.get('bad')).rejects.toBeInstanceOf(SecretSourceError)
    await expect(cache.get('nope')).rejects.toBeInstanceOf(SecretNotFoundError)
    clock.advance(60_000)
    source.fail('slow', transient('slow'))
    await expect(cache.get('slow')).resolves.toBeInstanceOf(SecretBundle)
    expect(outcomes).toEqual([
      ['slow', 'ok', 250],
      ['bad', 'error', 0],
      ['nope', 'not_found', 0],
      ['slow', 'error', 0],
    ])
  })

  it('stats are plain numbers', async () => {
    const { source, cache } = setup()
    source.set('s1', secret('pw'))
    await cache.get('s1')
    await cache.get('s1')
    const stats = cache.stats()
    expect(stats).toEqual({ entries: 1, hits: 1, misses: 1, fetches: 1, errors: 0, staleServed: 0, negativeHits: 0, inFlight: 0 })
    expect(Object.values(stats).every((v) => typeof v === 'number')).toBe(true)
    expect(JSON.parse(JSON.stringify(stats))).toEqual(stats)
  })

  it('util.inspect and JSON.stringify of the cache and its bundles show no secret', async () => {
    const { source, cache } = setup()
    source.set('s1', JSON.stringify(secret(MARKER)))
    source.set('s2', secret(encodeURIComponent(`${MARKER}/@`)))
    const bundle = await cache.get('s1')
    await cache.get('s2')
    for (const text of [
      inspect(cache, { depth: Infinity, showHidden: true }),
      inspect({ cache, bundle }, { depth: Infinity, showHidden: true, getters: true }),
      JSON.stringify({ cache, bundle }),
    ]) {
      expect(text).not.toContain(MARKER)
      expect(text).not.toContain(encodeURIComponent(MARKER))
      expect(text).not.toContain('postgresql://')
    }
    expect(inspect(cache)).toContain('SecretCache')
    expect(inspect(cache)).toContain("source: 'fake'")
  })

  it('rejects invalid configuration', () => {
    const source = new FakeSource()
    const clock = new FakeClock()
    for (const bad of [{ ttlMs: -1 }, { jitter: 1.5 }, { maxEntries: 0 }, { maxEntries: 1.5 }, { staleIfErrorMs: Number.NaN }, { errorBackoffMs: -5 }]) {
      expect(() => new SecretCache(source, { ...CONFIG, ...bad }, clock)).toThrow(InvalidOptionsError)
    }
    expect(() => new SecretCache({} as SecretSource, CONFIG, clock)).toThrow(InvalidOptionsError)
  })
})
