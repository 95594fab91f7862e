import { InvalidTenantIdError } from './hyperconn-error.js'

/**
 * Org ids and service names end up in secret names, pool keys and log lines, so they are restricted
 * to a conservative alphabet: 1-64 characters of [A-Za-z0-9_-], starting with a letter or digit.
 * This rules out `..`, `/`, whitespace, control characters and unicode look-alikes.
 */
export const TENANT_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/
export const TENANT_ID_MAX_LENGTH = 64

export function assertValidId(value: unknown, field: 'orgId' | 'service'): asserts value is string {
  if (typeof value !== 'string') throw new InvalidTenantIdError(field, `expected a string, got ${typeof value}`)
  if (value.length === 0) throw new InvalidTenantIdError(field, 'it is empty')
  if (value.length > TENANT_ID_MAX_LENGTH)
    throw new InvalidTenantIdError(field, `it is ${value.length} characters long (max ${TENANT_ID_MAX_LENGTH})`)
  if (!TENANT_ID_PATTERN.test(value)) {
    // Never echo the raw value: it may be hostile (control characters, huge, log injection).
    throw new InvalidTenantIdError(field, 'it contains characters outside [A-Za-z0-9_-] or starts with "-" or "_"')
  }
}
