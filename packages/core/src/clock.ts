/** A timer returned by a `Clock`; Node's `Timeout` is one. */
export interface TimerHandle {
  /** Called when present, so the registry's timers never keep the process alive. */
  unref?(): unknown
}

/**
 * Time and timers behind an interface so eviction and TTLs are testable with fake timers. The default
 * reads the globals on every call, so `vi.useFakeTimers()` applies without injecting anything.
 */
export interface Clock {
  /** Milliseconds since the epoch, like `Date.now()`. */
  now(): number
  /** Like the global `setInterval` (the sweeper). */
  setInterval(fn: () => void, ms: number): TimerHandle
  /** Like the global `clearInterval`. */
  clearInterval(handle: TimerHandle): void
  /** Like the global `setTimeout` (queue and close deadlines). */
  setTimeout(fn: () => void, ms: number): TimerHandle
  /** Like the global `clearTimeout`. */
  clearTimeout(handle: TimerHandle): void
  /** Uniform in [0, 1); used for TTL jitter. */
  random(): number
}

export const systemClock: Clock = Object.freeze({
  now: () => Date.now(),
  setInterval: (fn: () => void, ms: number) => setInterval(fn, ms),
  clearInterval: (handle: TimerHandle) => clearInterval(handle as ReturnType<typeof setInterval>),
  setTimeout: (fn: () => void, ms: number) => setTimeout(fn, ms),
  clearTimeout: (handle: TimerHandle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
  random: () => Math.random(),
})
