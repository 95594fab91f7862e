import { InvalidOptionsError } from '../hyperconn-error.js'

/** What `withRegistryScope` needs of a registry. */
export interface ScopeRunner {
  /** Runs `fn` as one unit of work (`registry.scope`): connections it still holds when it settles are destroyed and reported. */
  scope<T>(fn: () => Promise<T>): Promise<T>
}

/**
 * Wraps a handler (an AWS Lambda handler, a queue consumer, a route) so each invocation runs in
 * `registry.scope`: every connection it checked out and still holds when it returns or throws is
 * destroyed and reported (`connection:leak`, reason 'scope'), so nothing is held while the process is
 * frozen between invocations. Create the registry once, outside the handler, so warm invocations reuse
 * its secrets, pools and connections.
 *
 * ```ts
 * const registry = createRegistry({ ... })
 * export const handler = withRegistryScope(registry, async (event: SQSEvent) => { ... })
 * ```
 */
export function withRegistryScope<A extends unknown[], R>(
  registry: ScopeRunner,
  handler: (...args: A) => Promise<R> | R,
): (...args: A) => Promise<R> {
  if (typeof registry?.scope !== 'function') throw new InvalidOptionsError('withRegistryScope(registry, handler): registry must be a registry from createRegistry().')
  if (typeof handler !== 'function') throw new InvalidOptionsError('withRegistryScope(registry, handler): handler must be a function.')
  return (...args: A) => registry.scope(async () => handler(...args))
}
