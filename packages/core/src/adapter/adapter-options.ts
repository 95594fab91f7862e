import { InvalidOptionsError } from '../hyperconn-error.js'
import { TENANT_ID_PATTERN } from '../tenant-validation.js'

/** What `validateAdapterOptions` accepts for one adapter's options object. */
export interface AdapterOptionRules {
  /** Option keys the adapter understands. */
  readonly known: ReadonlySet<string>
  /** Keys an ORM user may carry over that can't apply here, each with the reason. */
  readonly refused?: Readonly<Record<string, string>>
}

/**
 * The same option rules for every hyperconn adapter: an options object, no unknown or refused keys, a
 * service name that can be one of the registry's (whether it is one is checked by the first getDb, with
 * `UnknownServiceError`), and `maxInstances` a positive safe integer. Throws `InvalidOptionsError`.
 */
export function validateAdapterOptions(factory: string, options: unknown, rules: AdapterOptionRules): void {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidOptionsError(`${factory}(registry, options): options must be an object with a service name.`)
  }
  for (const key of Object.keys(options)) {
    const refused = rules.refused?.[key]
    if (refused !== undefined) throw new InvalidOptionsError(`${factory}: option "${key}" is not supported: ${refused}.`)
    if (!rules.known.has(key)) {
      throw new InvalidOptionsError(`${factory}: unknown option "${key}". Known options: ${[...rules.known].join(', ')}.`)
    }
  }
  const { service, maxInstances } = options as { service?: unknown; maxInstances?: unknown }
  if (typeof service !== 'string' || !TENANT_ID_PATTERN.test(service)) {
    throw new InvalidOptionsError(
      `${factory}: options.service must be the name of one of the registry's services, e.g. "core" (1-64 characters from [A-Za-z0-9_-], starting with a letter or digit).`,
    )
  }
  if (maxInstances !== undefined && !(Number.isSafeInteger(maxInstances) && (maxInstances as number) >= 1)) {
    throw new InvalidOptionsError(
      `${factory}: maxInstances must be a positive safe integer; got ${typeof maxInstances === 'number' ? maxInstances : typeof maxInstances}.`,
    )
  }
}
