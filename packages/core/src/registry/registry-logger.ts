/** Anything with pino/console-style level methods. The registry is silent unless one is given. */
export interface Logger {
  /** Pools created and evicted, secrets fetched. */
  debug(obj: object, msg?: string): void
  /** The connection budget read for `connections.max: 'auto'`. */
  info(obj: object, msg?: string): void
  /** Stale secrets served, connection errors, connections closed at the close deadline, 'auto' budget fallbacks. */
  warn(obj: object, msg?: string): void
  /** An event listener threw. */
  error(obj: object, msg?: string): void
}

const noop = (): void => {}
export const silentLogger: Logger = Object.freeze({ debug: noop, info: noop, warn: noop, error: noop })
