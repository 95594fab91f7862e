/** The SQLSTATE (or Node errno code) carried by an error from pg, if any. */
export function sqlStateOf(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null) return undefined
  const code = (error as { code?: unknown }).code
  return typeof code === 'string' ? code : undefined
}

/**
 * An error PostgreSQL reported for the statement alone (severity ERROR): the session goes on. FATAL and
 * PANIC errors, and errors without a server answer (a dead socket), end the connection.
 */
export function isStatementError(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { severity?: unknown }).severity === 'ERROR'
}
