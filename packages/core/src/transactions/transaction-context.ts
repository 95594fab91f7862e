import { AsyncLocalStorage } from 'node:async_hooks'
import { ContextConflictError, TransactionClosedError, TransactionPropagationError } from '../hyperconn-error.js'
import type { TenantKey } from '../tenant-types.js'
import type { PinnedConnection } from './pinned-connection.js'
import type { RouteScope } from './route-scope.js'
import type { TransactionInfo, TransactionScope, TransactionState } from './transaction-state.js'

/** What a tenant maps to in a frame: a transaction (or savepoint) scope, or a pinned connection (`kind` tells). */
export type ContextEntry = TransactionScope | PinnedConnection | RouteScope

/**
 * The value of the one AsyncLocalStorage: service → orgId → the scope queries of that tenant run in (a
 * transaction scope, or the connection `tenant.connection(fn)` pinned).
 * Frames are immutable and only entered with `run()`: a change (new transaction, savepoint,
 * `not_supported`) creates a new frame for the callback, so sibling flows never see each other's
 * transactions and a parent frame is untouched when a child scope ends. A tenant missing from the
 * frame has no transaction here: its queries autocommit on its own pool.
 */
export type Frame = ReadonlyMap<string, ReadonlyMap<string, ContextEntry>>

/**
 * Version of what is shared between copies of core: the frame shape above and the members of
 * `TransactionScope`/`TransactionState` that the runner calls. Bump it when either changes.
 */
export const CONTEXT_VERSION = 3

const SLOT_PREFIX = '@hyperconn/core/context@'
const SLOT = Symbol.for(`${SLOT_PREFIX}${CONTEXT_VERSION}`)

interface ContextSlot {
  readonly version: number
  readonly storage: AsyncLocalStorage<Frame>
}

function conflict(found: string): ContextConflictError {
  return new ContextConflictError(
    `Two incompatible copies of @hyperconn/core are loaded in this process (${found}; this copy uses context version ${CONTEXT_VERSION}), ` +
      'so adapters would not share transactions. Install one version: make every @hyperconn adapter list @hyperconn/core as a ' +
      'peerDependency, align the versions and run "pnpm dedupe" (or "npm dedupe"); "pnpm why @hyperconn/core" shows the copies.',
  )
}

/**
 * Returns the process-wide transaction storage registered on `host`, registering it first if this is
 * the first copy of core. Every copy with the same `CONTEXT_VERSION` gets the same AsyncLocalStorage
 * (pnpm duplicates, ESM and CJS builds); an incompatible copy throws ContextConflictError.
 * Exported for tests; the module calls it once with `globalThis`.
 */
export function claimContextStorage(host: object = globalThis): AsyncLocalStorage<Frame> {
  for (const symbol of Object.getOwnPropertySymbols(host)) {
    const description = symbol.description
    if (symbol !== SLOT && description?.startsWith(SLOT_PREFIX) === true) {
      throw conflict(`another copy registered "${description}"`)
    }
  }
  const slot: Partial<ContextSlot> | null | undefined = Reflect.get(host, SLOT)
  if (slot !== undefined) {
    if (slot === null || typeof slot !== 'object' || slot.version !== CONTEXT_VERSION) {
      throw conflict(`another copy registered context version ${String(slot?.version)}`)
    }
    const storage = slot.storage
    if (typeof storage?.run !== 'function' || typeof storage.getStore !== 'function') {
      throw conflict('another copy registered a malformed context')
    }
    return storage
  }
  const created: ContextSlot = Object.freeze({ version: CONTEXT_VERSION, storage: new AsyncLocalStorage<Frame>() })
  Object.defineProperty(host, SLOT, { value: created, enumerable: false, writable: false, configurable: false })
  return created.storage
}

const storage = claimContextStorage()

/** What this tenant maps to in the current frame (possibly ended), or undefined: the hot path, one `getStore()`. */
export function currentEntry(key: TenantKey): ContextEntry | undefined {
  const frame = storage.getStore()
  return frame === undefined ? undefined : frame.get(key.service)?.get(key.orgId)
}

/** The transaction scope of this tenant in the current frame (possibly ended), or undefined. */
export function currentScope(key: TenantKey): TransactionScope | undefined {
  const entry = currentEntry(key)
  return entry?.kind === 'transaction' ? entry : undefined
}

/** Runs `fn` in a new frame where `key` maps to `scope`; other tenants keep their scopes. */
export function runWithScope<T>(key: TenantKey, scope: ContextEntry, fn: () => T): T {
  const frame = new Map(storage.getStore())
  const orgs = new Map(frame.get(key.service))
  orgs.set(key.orgId, scope)
  frame.set(key.service, orgs)
  return storage.run(frame, fn)
}

/** Runs `fn` in a new frame without any scope of `key`: its queries autocommit (propagation `not_supported`). */
export function runWithoutScope<T>(key: TenantKey, fn: () => T): T {
  const frame = new Map(storage.getStore())
  const orgs = new Map(frame.get(key.service))
  orgs.delete(key.orgId)
  if (orgs.size === 0) frame.delete(key.service)
  else frame.set(key.service, orgs)
  return storage.run(frame, fn)
}

/**
 * True when the current async context has an active transaction (or savepoint scope) for this tenant,
 * i.e. `tenant.query` / `tenant.acquire()` here would join it. Accepts a `Tenant` or a `TenantKey`.
 */
export function isInTransaction(key: TenantKey): boolean {
  return currentScope(key)?.active === true
}

/**
 * The transaction scope of this tenant in the current async context, also when it has already ended
 * (see `status`), or undefined when there is none. Contains no SQL and no connection details.
 */
export function currentTransactionInfo(key: TenantKey): TransactionInfo | undefined {
  return currentScope(key)?.info()
}

/**
 * Ties an ORM's transaction object (Drizzle `tx`, Kysely or Knex `trx`) to the transaction it was
 * handed for. Adapters take one when they create that object and check it before each of its queries,
 * so a kept handle can never run in another transaction or silently autocommit.
 */
export class TransactionBinding {
  readonly #state: TransactionState
  readonly #key: TenantKey

  constructor(key: TenantKey, state: TransactionState) {
    this.#key = key
    this.#state = state
  }

  get transactionId(): number {
    return this.#state.id
  }

  /**
   * Throws `TransactionClosedError` once the transaction ended, and `TransactionPropagationError` when
   * the current async context is not inside it (another transaction via `requires_new`, a `not_supported`
   * scope, or unrelated code holding on to the handle).
   */
  assertCurrent(): void {
    const refused = this.refusal()
    if (refused !== undefined) throw refused
  }

  /** The same rule as a value, for promise-returning paths: the error to reject with, or undefined. */
  refusal(): Error | undefined {
    const state = this.#state
    if (!state.runnable) return state.closedError()
    const scope = currentScope(this.#key)
    // An ended scope of this same transaction (a released savepoint, or work left over while COMMIT runs)
    if (scope !== undefined && scope.tx === state && !scope.active) return scope.closedError()
    if (scope === undefined || scope.tx !== state) {
      return new TransactionPropagationError(
        `A transaction object of service "${this.#key.service}", org "${this.#key.orgId}" was used outside its transaction ` +
          '(in another transaction, in a not_supported scope, or from code that kept it). Use getDb(orgId) or the ' +
          'tenant to follow the current context, or do the work inside the callback that received the object.',
      )
    }
    return undefined
  }
}

/** A binding to this tenant's active transaction in the current context, or undefined when there is none. */
export function bindTransaction(key: TenantKey): TransactionBinding | undefined {
  const scope = currentScope(key)
  return scope?.active === true ? new TransactionBinding(key, scope.tx) : undefined
}

/**
 * Like `bindTransaction`, for adapters entering a transaction callback: throws `TransactionClosedError`
 * when the transaction being joined ended before the callback could start.
 */
export function bindActiveTransaction(key: TenantKey): TransactionBinding {
  const binding = bindTransaction(key)
  if (binding === undefined) {
    throw new TransactionClosedError(
      `the transaction for service "${key.service}", org "${key.orgId}" ended before the transaction callback started`,
    )
  }
  return binding
}
