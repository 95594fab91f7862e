import type { LeakReason } from '../hyperconn-error.js'

/** Why a physical pool was ended: idle too long, least recently used at `maxPools`, `registry.evict`, `registry.close`. */
export type EvictionReason = 'idle' | 'lru' | 'manual' | 'close'

/** Typed registry events by name, with their payloads. Payloads are plain data: no secret, no connection string, no SQL values. */
export interface RegistryEvents {
  /** A physical pool (one connection target, shared by its tenants) was created. */
  'pool:create': { pool: string; server: string }
  'pool:evict': { pool: string; reason: EvictionReason }
  'pool:end': { pool: string; forced: boolean }
  'secret:fetch': { secretName: string; outcome: 'ok' | 'not_found' | 'error' | 'format_error'; durationMs: number }
  'secret:error': { secretName: string; code: string; transient: boolean }
  'secret:stale': { secretName: string }
  /** A connection died (restart, failover, `pg_terminate_backend`); it is dropped and the next checkout opens another. */
  'connection:error': {
    pool: string
    phase: 'idle' | 'checked-out'
    message: string
    sqlState: string | undefined
  }
  /** A read replica was taken out of rotation (connect failure, recovery conflict, replay lag): reads go to the primary. */
  'replica:down': { replica: string; reason: string; retryAfterMs: number }
  /** A replica skipped before answered again: back in rotation. */
  'replica:up': { replica: string }
  /**
   * A checkout held longer than `leakDetection.thresholdMs` (reported once), or still held when its
   * `registry.scope(fn)` settled. `stack` is where it was acquired (captured only with `leakDetection`).
   * `destroyed`: the connection was destroyed and its holder's next query rejects with `ConnectionLeakError`.
   */
  'connection:leak': {
    service: string
    orgId: string
    heldMs: number
    stack: string
    reason: LeakReason
    destroyed: boolean
  }
}

/** The name of a registry event, for `registry.on(name, listener)`. */
export type RegistryEventName = keyof RegistryEvents
/** A listener of one registry event. One that throws is logged and never breaks the registry. */
export type RegistryListener<E extends RegistryEventName> = (event: RegistryEvents[E]) => void

/** A minimal emitter: listeners that throw are reported to `onListenerError` and never break the registry. */
export class RegistryEventEmitter {
  readonly #listeners = new Map<RegistryEventName, Set<(event: never) => void>>()
  readonly #onListenerError: (error: unknown, event: RegistryEventName) => void

  constructor(onListenerError: (error: unknown, event: RegistryEventName) => void) {
    this.#onListenerError = onListenerError
  }

  on<E extends RegistryEventName>(event: E, listener: RegistryListener<E>): () => void {
    let set = this.#listeners.get(event)
    if (!set) this.#listeners.set(event, (set = new Set()))
    set.add(listener)
    return () => this.off(event, listener)
  }

  off<E extends RegistryEventName>(event: E, listener: RegistryListener<E>): void {
    this.#listeners.get(event)?.delete(listener)
  }

  has(event: RegistryEventName): boolean {
    return (this.#listeners.get(event)?.size ?? 0) > 0
  }

  emit<E extends RegistryEventName>(event: E, payload: RegistryEvents[E]): void {
    const set = this.#listeners.get(event)
    if (!set || set.size === 0) return
    for (const listener of set) {
      try {
        ;(listener as RegistryListener<E>)(payload)
      } catch (error) {
        this.#onListenerError(error, event)
      }
    }
  }

  clear(): void {
    this.#listeners.clear()
  }
}
