import { AsyncLocalStorage } from 'node:async_hooks'

/**
 * One `registry.scope(fn)`: the checkouts made inside `fn`'s async context that are still held. Scopes of
 * several registries nest; a checkout is tracked by the innermost scope of its own registry.
 */
export class LeaseScope<T> {
  readonly owner: object
  readonly parent: LeaseScope<unknown> | undefined
  readonly #held = new Set<T>()
  #open = true

  constructor(owner: object, parent: LeaseScope<unknown> | undefined) {
    this.owner = owner
    this.parent = parent
  }

  /** False once `fn` settled: a checkout that completes later is taken back at once. */
  get open(): boolean {
    return this.#open
  }

  add(checkout: T): void {
    this.#held.add(checkout)
  }

  delete(checkout: T): void {
    this.#held.delete(checkout)
  }

  /** `fn` settled: what is still held, for the owner to take back. */
  close(): T[] {
    this.#open = false
    return [...this.#held]
  }
}

const storage = new AsyncLocalStorage<LeaseScope<unknown>>()
// No registry.scope() yet in this process: acquires skip the lookup entirely.
let used = false

/** Runs `fn` inside a new scope of `owner`; the scope is returned with `fn`'s promise. */
export function enterScope<T, R>(owner: object, fn: () => Promise<R>): { scope: LeaseScope<T>; result: Promise<R> } {
  used = true
  const scope = new LeaseScope<T>(owner, storage.getStore())
  const result = storage.run(scope, fn)
  return { scope, result }
}

/** The innermost scope of `owner` around the current async context, if any. */
export function scopeOf<T>(owner: object): LeaseScope<T> | undefined {
  if (!used) return undefined
  let scope = storage.getStore()
  while (scope !== undefined && scope.owner !== owner) scope = scope.parent
  return scope as LeaseScope<T> | undefined
}
