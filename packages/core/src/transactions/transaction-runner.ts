import { InvalidOptionsError, TransactionPropagationError } from '../hyperconn-error.js'
import type { Propagation, TenantKey, TenantPoolAccess, TransactionOptions } from '../tenant-types.js'
import type { PinnedConnection } from './pinned-connection.js'
import { currentEntry, runWithoutScope, runWithScope } from './transaction-context.js'
import { TransactionState } from './transaction-state.js'
import type { TransactionScope } from './transaction-state.js'

const PROPAGATIONS: ReadonlySet<string> = new Set<Propagation>([
  'required',
  'requires_new',
  'nested',
  'mandatory',
  'never',
  'not_supported',
  'supports',
])
const ISOLATION_LEVELS: ReadonlySet<string> = new Set(['read committed', 'repeatable read', 'serializable'])

function describe(key: TenantKey): string {
  return `service "${key.service}", org "${key.orgId}"`
}

// Checked at runtime for JavaScript callers; the types already rule these out.
function validate(fn: unknown, options: TransactionOptions): Propagation {
  if (typeof fn !== 'function') throw new InvalidOptionsError('transaction(fn, options): fn must be a function returning a promise.')
  const propagation = options.propagation ?? 'required'
  if (!PROPAGATIONS.has(propagation)) {
    throw new InvalidOptionsError(
      `Unknown transaction propagation "${String(propagation)}". Use one of: ${[...PROPAGATIONS].join(', ')}.`,
    )
  }
  if (options.isolationLevel !== undefined && !ISOLATION_LEVELS.has(options.isolationLevel)) {
    throw new InvalidOptionsError(
      `Unknown isolationLevel "${String(options.isolationLevel)}". Use "read committed", "repeatable read" or "serializable".`,
    )
  }
  if (options.readOnly !== undefined && typeof options.readOnly !== 'boolean') {
    throw new InvalidOptionsError('readOnly must be true, false or left out.')
  }
  return propagation
}

/**
 * `tenant.transaction(fn, options)`: all propagation policy lives here; adapters only call this.
 *
 * | propagation     | no transaction here       | transaction active here                       |
 * |-----------------|---------------------------|-----------------------------------------------|
 * | required        | BEGIN a new one           | join it                                       |
 * | requires_new    | BEGIN a new one           | BEGIN another on a second connection          |
 * | nested          | BEGIN a new one           | SAVEPOINT                                     |
 * | mandatory       | TransactionPropagationError | join it                                     |
 * | never           | run fn without one        | TransactionPropagationError                   |
 * | not_supported   | run fn without one        | run fn in a frame without it (autocommit)     |
 * | supports        | run fn without one        | join it                                       |
 *
 * Inside `tenant.connection(fn)` with no transaction active, "BEGIN a new one" begins on the pinned
 * connection (holding it until COMMIT/ROLLBACK); `requires_new` inside an active transaction still uses
 * a second connection.
 *
 * Joining (and nesting) checks options: an `isolationLevel` or `readOnly` different from the active
 * transaction's throws TransactionPropagationError (unset options are learned from PostgreSQL with
 * SHOW). `readOnly: false` means "needs to write", so it cannot join a read-only transaction;
 * leaving `readOnly` out joins either. When there is no transaction and none is started
 * (`never`, `not_supported`, `supports`), `isolationLevel` and `readOnly` are ignored.
 *
 * A frame whose transaction has ended (a timer or un-awaited callback that outlived it) cannot join
 * or nest: that rejects with TransactionClosedError. `requires_new`, `not_supported` and `never`
 * don't touch the ended transaction and work there.
 */
export async function runTransaction<T>(
  access: TenantPoolAccess,
  key: TenantKey,
  fn: () => Promise<T>,
  requested: TransactionOptions = {},
): Promise<T> {
  // PostgreSQL runs READ UNCOMMITTED as READ COMMITTED; normalising here keeps joins comparable.
  const options: TransactionOptions =
    requested.isolationLevel === 'read uncommitted' ? { ...requested, isolationLevel: 'read committed' } : requested
  const propagation = validate(fn, options)
  const entry = currentEntry(key)
  const current = entry?.kind === 'transaction' ? entry : undefined
  // Inside tenant.connection(fn) (and no transaction there yet): a transaction begins on the pinned connection.
  const pinned = entry?.kind === 'pinned' ? entry : undefined
  switch (propagation) {
    case 'required':
      return current === undefined ? traced(access, key, fn, options, pinned, propagation) : join(current, fn, options)
    case 'requires_new':
      return traced(access, key, fn, options, pinned, propagation)
    case 'nested':
      return current === undefined ? traced(access, key, fn, options, pinned, propagation) : nest(current, fn, options)
    case 'mandatory':
      if (current === undefined) {
        throw new TransactionPropagationError(
          `Propagation "mandatory" needs an active transaction for ${describe(key)}, and there is none in this async context. Call it inside tenant.transaction(), or use "required".`,
        )
      }
      return join(current, fn, options)
    case 'never':
      if (current?.active === true) {
        throw new TransactionPropagationError(
          `Propagation "never" cannot run inside the active transaction for ${describe(key)}. Use "not_supported" to run outside it.`,
        )
      }
      return current === undefined ? fn() : runWithoutScope(key, fn)
    case 'not_supported':
      return current === undefined ? fn() : runWithoutScope(key, fn)
    case 'supports':
      return current === undefined ? fn() : join(current, fn, options)
  }
}

/** `begin`, inside a `hyperconn.transaction` span when the registry has telemetry. */
function traced<T>(
  access: TenantPoolAccess,
  key: TenantKey,
  fn: () => Promise<T>,
  options: TransactionOptions,
  pinned: PinnedConnection | undefined,
  propagation: Propagation,
): Promise<T> {
  const trace = access.traceTransaction
  return trace === undefined ? begin(access, key, fn, options, pinned) : trace(key, options, propagation, () => begin(access, key, fn, options, pinned))
}

/** BEGIN on a newly leased (or the pinned) connection; COMMIT if fn resolves, ROLLBACK if it throws. */
async function begin<T>(
  access: TenantPoolAccess,
  key: TenantKey,
  fn: () => Promise<T>,
  options: TransactionOptions,
  pinned: PinnedConnection | undefined,
): Promise<T> {
  const tx = await TransactionState.begin(pinned === undefined ? () => access.acquire(key) : () => pinned.borrow(), key, options)
  let result: T
  try {
    result = await runWithScope(key, tx.root, fn)
  } catch (error) {
    await tx.rollback()
    throw error
  }
  await tx.commit()
  return result
}

/**
 * Runs fn in the active scope (same frame, same queue). If fn throws, the scope is marked failed even
 * when the caller catches the error: the transaction will roll back and the outer `transaction()`
 * rejects with TransactionRolledBackError (a joined unit of work that failed must not be committed
 * half-done; use "nested" to recover from inner failures).
 */
async function join<T>(scope: TransactionScope, fn: () => Promise<T>, options: TransactionOptions): Promise<T> {
  scope.assertActive()
  await assertCompatible(scope, options)
  try {
    return await fn()
  } catch (error) {
    scope.markFailed(error)
    throw error
  }
}

/**
 * SAVEPOINT below `parent`: holds the parent's queue for the savepoint's lifetime, so queries of the
 * parent frame wait instead of running inside the savepoint. Success → RELEASE; failure → ROLLBACK TO
 * + RELEASE, and the parent carries on.
 */
async function nest<T>(parent: TransactionScope, fn: () => Promise<T>, options: TransactionOptions): Promise<T> {
  parent.assertActive()
  await assertCompatible(parent, options)
  const giveBack = await parent.queue.hold()
  try {
    const scope = await parent.openChild()
    let result: T
    try {
      result = await runWithScope(parent.key, scope, fn)
    } catch (error) {
      await scope.abort()
      throw error
    }
    await scope.release()
    return result
  } finally {
    giveBack()
  }
}

async function assertCompatible(scope: TransactionScope, options: TransactionOptions): Promise<void> {
  const { isolationLevel, readOnly } = options
  if (isolationLevel !== undefined) {
    const actual = await scope.tx.isolationLevelVia(scope)
    if (actual !== isolationLevel) {
      throw new TransactionPropagationError(
        `Cannot join the active transaction for ${describe(scope.key)} with isolationLevel "${isolationLevel}": it runs at "${String(actual)}". ` +
          'Drop isolationLevel to join it, or use propagation "requires_new" for a separate transaction.',
      )
    }
  }
  if (readOnly !== undefined) {
    const actual = await scope.tx.readOnlyVia(scope)
    if (actual !== readOnly) {
      throw new TransactionPropagationError(
        `Cannot join the active ${actual === true ? 'read-only' : 'read-write'} transaction for ${describe(scope.key)} with readOnly: ${String(readOnly)}. ` +
          'Drop readOnly to join it, or use propagation "requires_new" for a separate transaction.',
      )
    }
  }
}
