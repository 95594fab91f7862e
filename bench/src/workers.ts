import { inspect } from 'node:util'

export interface WorkerRun {
  readonly completed: number
  /** Requests that threw; the run goes on (hyperconn-pg's eviction races are part of what we measure). */
  readonly errors: number
  /** Message of the first failure, for the report. */
  readonly firstError: string | undefined
  readonly elapsedMs: number
}

/** `concurrency` workers take the next item until none is left. */
export function forEachConcurrently<T>(
  items: readonly T[],
  concurrency: number,
  task: (item: T) => Promise<void>,
): Promise<WorkerRun> {
  let next = 0
  return runWorkers(concurrency, () => next < items.length, () => task(items[next++] as T))
}

/**
 * `concurrency` workers take indexes 0 … count-1 in order, but start none after `limitMs`: a pass over
 * every tenant that a slow or failing contender cannot stretch. completed + errors < count = cut short.
 */
export function forRangeWithin(
  count: number,
  concurrency: number,
  limitMs: number,
  task: (index: number) => Promise<void>,
): Promise<WorkerRun> {
  const deadline = performance.now() + limitMs
  let next = 0
  return runWorkers(concurrency, () => next < count && performance.now() < deadline, () => task(next++))
}

/** `workers` workers issue requests back to back until `durationMs` has passed; in-flight ones finish. */
export function runForDuration(workers: number, durationMs: number, task: (seq: number) => Promise<void>): Promise<WorkerRun> {
  const deadline = performance.now() + durationMs
  let seq = 0
  return runWorkers(workers, () => performance.now() < deadline, () => task(seq++))
}

async function runWorkers(workers: number, more: () => boolean, task: () => Promise<void>): Promise<WorkerRun> {
  let completed = 0
  let errors = 0
  let firstError: string | undefined
  const started = performance.now()
  const worker = async (): Promise<void> => {
    while (more()) {
      try {
        await task()
        completed++
      } catch (error) {
        if (errors++ === 0) firstError = error instanceof Error ? `${error.name}: ${error.message}` : inspect(error)
      }
    }
  }
  await Promise.all(Array.from({ length: workers }, worker))
  return { completed, errors, firstError, elapsedMs: performance.now() - started }
}
