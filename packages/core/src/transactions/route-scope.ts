import type { QueryConfig, QueryResult, QueryResultRow } from 'pg'
import type { QueryOptions, TenantKey, TenantPoolAccess } from '../tenant-types.js'
import { autocommitQuery } from './autocommit-query.js'

/**
 * `tenant.primary(fn)` / `tenant.replica(fn)`: where this tenant's statements outside a transaction go
 * inside `fn`. A transaction or `connection()` begun inside replaces it for its own scope (on the primary).
 */
export class RouteScope {
  readonly kind = 'route'
  readonly key: TenantKey
  readonly to: 'primary' | 'replica'
  readonly #access: TenantPoolAccess
  #open = true

  constructor(access: TenantPoolAccess, key: TenantKey, to: 'primary' | 'replica') {
    this.#access = access
    this.key = key
    this.to = to
  }

  /** `fn` has not returned. */
  get active(): boolean {
    return this.#open
  }

  end(): void {
    this.#open = false
  }

  /**
   * Inside `replica(fn)` raw statements (and known reads) may go to a replica, but never one an adapter
   * marked `read: false` (a write or a locking read); inside `primary(fn)` none does.
   */
  query<R extends QueryResultRow = any>(config: string | QueryConfig, values?: unknown[], options?: QueryOptions): Promise<QueryResult<R>> {
    return autocommitQuery<R>(this.#access, this.key, config, values, this.to === 'replica' && options?.read !== false)
  }
}
