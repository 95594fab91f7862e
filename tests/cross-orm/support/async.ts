import { DrizzleQueryError } from 'drizzle-orm'

/** A promise with its resolve function, for synchronising on events instead of sleeping. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void
  const promise = new Promise<T>((r) => {
    resolve = r
  })
  return { promise, resolve }
}

/** `arrive()` resolves once `count` parties have arrived (so does `all`): makes concurrent flows overlap for certain. */
export function barrier(count: number): { arrive: () => Promise<void>; all: Promise<void> } {
  let arrived = 0
  const all = deferred()
  return {
    arrive: () => {
      if (++arrived === count) all.resolve()
      return all.promise
    },
    all: all.promise,
  }
}

/** The rejection reason of `promise`; fails if it resolves (a swallowed error must never look like success). */
export async function rejectionOf(promise: PromiseLike<unknown>): Promise<unknown> {
  try {
    await promise
  } catch (error) {
    return error
  }
  throw new Error('expected the promise to reject, but it resolved')
}

/**
 * The error as hyperconn raised it: Drizzle 0.44+ wraps every query error in DrizzleQueryError
 * (documented in @hyperconn/drizzle's README); Kysely and Knex pass errors through.
 */
export function unwrap(error: unknown): unknown {
  return error instanceof DrizzleQueryError ? error.cause : error
}

/** Polls `check` until it returns true: for waiting on the database (never a fixed sleep). */
export async function until(check: () => Promise<boolean>, what: string, giveUpAfterMs = 15_000): Promise<void> {
  // The deadline only bounds a broken run; passing never depends on how long anything takes.
  const deadline = Date.now() + giveUpAfterMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`)
    await new Promise<void>((resolve) => setImmediate(resolve))
  }
}

/** Collects process warnings while `fn` runs (and for one more macrotask, so late ones surface). */
export async function collectWarnings(fn: () => Promise<void>): Promise<Error[]> {
  const warnings: Error[] = []
  const onWarning = (warning: Error): void => {
    warnings.push(warning)
  }
  process.on('warning', onWarning)
  try {
    await fn()
    await new Promise<void>((resolve) => setImmediate(resolve))
  } finally {
    process.off('warning', onWarning)
  }
  return warnings
}
