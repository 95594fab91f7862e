/** Exit statuses of `hyperconn migrate`. */
export const EXIT_CODES = Object.freeze({
  /** Every tenant migrated (or skipped because another runner held its lock), or a dry run. */
  ok: 0,
  /** At least one tenant's migration failed, or the run could not start (listing the tenants failed). */
  failed: 1,
  /** Bad flags, or a config module that cannot be loaded or is not a valid config. Nothing was migrated. */
  usage: 2,
  /** Interrupted by Ctrl-C (SIGINT): running tenants finished, the rest were not started. */
  interrupted: 130,
} as const)

/** One of the `EXIT_CODES` values. */
export type ExitCode = (typeof EXIT_CODES)[keyof typeof EXIT_CODES]

/** A usage or configuration problem: the CLI prints its message and exits with status 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError'
}
