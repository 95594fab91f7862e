// Clauses that make a SELECT more than a read: row locks, sequence changes, CTEs (which may modify data),
// SELECT INTO, advisory locks and session settings. Conservative: a false match only costs a replica.
const NOT_A_READ = /\bfor\s+(?:update|no\s+key\s+update|share|key\s+share)\b|\b(?:nextval|setval|set_config)\s*\(|\bpg_(?:try_)?advisory|\bwith\b|\binto\b/i

/**
 * Whether the compiled text of a statement an adapter built as a SELECT may run on a read replica
 * (`tenant.query(..., { read: true })`). One rule for every adapter, so Drizzle, Kysely and Knex route alike.
 */
export function isReadOnlySelectText(text: string): boolean {
  return !NOT_A_READ.test(text)
}

// Statements that change data, schema or locks: never a replica's, also inside tenant.replica(fn).
const WRITE = /^\s*(?:insert|update|delete|merge|create|alter|drop|truncate|grant|revoke|comment|copy|call|lock|refresh|reindex|vacuum|analyze|cluster)\b/i

/**
 * Whether the compiled text of a statement an adapter built is a write (`tenant.query(..., { read: false })`):
 * inside `tenant.replica(fn)` it must still go to the primary.
 */
export function isWriteText(text: string): boolean {
  return WRITE.test(text)
}
