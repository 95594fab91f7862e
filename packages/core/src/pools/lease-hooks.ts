import type { QueryConfig, QueryResult, QueryResultRow } from 'pg'
import type { TenantKey } from '../tenant-types.js'

/** The checked-out connection as a lifecycle hook sees it. */
export interface HookConnection {
  /** Runs a statement on the checked-out connection (a `SET` here makes the next checkout reset the session). */
  query<R extends QueryResultRow = any>(text: string | QueryConfig, values?: unknown[]): Promise<QueryResult<R>>
  /** Backend process id, for diagnostics. */
  readonly processID: number | undefined
}

/**
 * Code run on every checkout, whatever asked for the connection (an adapter, `tenant.query`, a
 * transaction, `getPool()`): registry-wide (`hooks`) or per service (`services.<name>.hooks`, which
 * replace the registry-wide ones for that service).
 */
export interface LifecycleHooks {
  /**
   * After the tenant's settings are applied, before the caller's first statement. Throwing destroys the
   * connection and rejects the acquire with `LifecycleHookError`.
   */
  onClaim?: (conn: HookConnection, tenant: TenantKey) => Promise<void> | void
  /**
   * After the caller released the connection (its work has settled), before it goes back to the pool.
   * Not run for a connection being destroyed. Throwing destroys the connection.
   */
  onRelease?: (conn: HookConnection, tenant: TenantKey) => Promise<void> | void
}

/** Reporting connections held too long (`createRegistry({ leakDetection })`); off unless given. */
export interface LeakDetectionOptions {
  /** A checkout held longer than this emits `connection:leak` (once) with the acquiring stack. */
  thresholdMs: number
  /** Also destroy it: the holder's next query rejects with `ConnectionLeakError`. Default false. */
  destroy?: boolean
}
