import type { QueryConfig, QueryResult, QueryResultRow } from 'pg'
import type { TenantKey, TenantPoolAccess } from '../tenant-types.js'

/** Autocommit: lease, one query, release. No allocation beyond that on this path. */
export async function autocommitQuery<R extends QueryResultRow>(
  access: TenantPoolAccess,
  key: TenantKey,
  config: string | QueryConfig,
  values: unknown[] | undefined,
  read = false,
): Promise<QueryResult<R>> {
  // The client's lifelong 'error' listener (TenantPoolAccess contract) keeps a dying backend from crashing
  // the process; the query itself rejects and pg-pool drops the unqueryable client on release.
  const lease = await access.acquire(key, read)
  try {
    return await lease.query<R>(config, values)
  } catch (error) {
    throw lease.redact(error)
  } finally {
    lease.release()
  }
}
