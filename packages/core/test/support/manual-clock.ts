import type { Clock, TimerHandle } from '../../src/clock.js'

interface Timer extends TimerHandle {
  fn: () => void
  at: number
  every: number | undefined
}

/** A clock the test moves by hand: `advance(ms)` runs due timers in order. No real time passes. */
export class ManualClock implements Clock {
  #now = 1_700_000_000_000
  readonly #timers = new Set<Timer>()
  randomValue = 0.5

  now(): number {
    return this.#now
  }

  random(): number {
    return this.randomValue
  }

  setInterval(fn: () => void, ms: number): TimerHandle {
    return this.#add(fn, ms, ms)
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    return this.#add(fn, ms, undefined)
  }

  clearInterval(handle: TimerHandle): void {
    this.#timers.delete(handle as Timer)
  }

  clearTimeout(handle: TimerHandle): void {
    this.#timers.delete(handle as Timer)
  }

  get pendingTimers(): number {
    return this.#timers.size
  }

  advance(ms: number): void {
    const target = this.#now + ms
    for (;;) {
      const due = [...this.#timers].filter((t) => t.at <= target).sort((a, b) => a.at - b.at)[0]
      if (!due) break
      this.#now = due.at
      if (due.every === undefined) this.#timers.delete(due)
      else due.at += due.every
      due.fn()
    }
    this.#now = target
  }

  #add(fn: () => void, ms: number, every: number | undefined): Timer {
    const timer: Timer = { fn, at: this.#now + ms, every, unref: () => timer }
    this.#timers.add(timer)
    return timer
  }
}
