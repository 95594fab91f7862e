/**
 * Time and timers behind an interface so eviction and TTLs are testable with fake timers. The default
 * reads the globals on every call, so `vi.useFakeTimers()` applies without injecting anything.
 */
export interface TimerHandle {
  unref?(): unknown
}

export interface Clock {
  now(): number
  setInterval(fn: () => void, ms: number): TimerHandle
  clearInterval(handle: TimerHandle): void
  setTimeout(fn: () => void, ms: number): TimerHandle
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
