import type { IncomingHttpHeaders } from 'node:http'

export const TENANT_HEADER = 'x-org-id'

/** The request names no tenant at all (a malformed one is core's `InvalidTenantIdError`). */
export class MissingTenantHeaderError extends Error {
  readonly code = 'MISSING_TENANT_HEADER'

  constructor() {
    super(`Missing "${TENANT_HEADER}" header: every shop request needs the org id of its tenant.`)
  }

  override get name(): string {
    return 'MissingTenantHeaderError'
  }
}

/** The raw org id; its syntax is checked by the registry (one rule for the whole app). */
export function orgIdFromHeaders(headers: IncomingHttpHeaders): string {
  const value = headers[TENANT_HEADER]
  // Node joins repeated custom headers with ", ", which the registry then rejects as malformed.
  const orgId = Array.isArray(value) ? value.join(', ') : value
  if (orgId === undefined || orgId.trim() === '') throw new MissingTenantHeaderError()
  return orgId
}
