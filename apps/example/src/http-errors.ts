import { isHyperconnError } from '@hyperconn/core'
import type { HyperconnError } from '@hyperconn/core'
import { isShopError } from './shop-errors.js'
import type { ShopError } from './shop-errors.js'
import { MissingTenantHeaderError } from './tenant-header.js'

export interface HttpErrorBody {
  error: string
  message: string
  [detail: string]: unknown
}

export interface HttpError {
  status: number
  body: HttpErrorBody
  /** Unexpected: worth an error-level log line with the cause. */
  unexpected: boolean
}

const INTERNAL: HttpError = { status: 500, body: { error: 'internal_error', message: 'Internal error.' }, unexpected: true }

/**
 * Maps any error to an HTTP answer by its type and `code`, never by its message. ORMs may wrap the
 * errors their driver throws (Drizzle's DrizzleQueryError, for one), so the `cause` chain is searched.
 */
export function toHttpError(error: unknown): HttpError {
  const shop = findInCauses(error, isShopError)
  if (shop !== undefined) return fromShopError(shop)
  const missing = findInCauses(error, (e): e is MissingTenantHeaderError => e instanceof MissingTenantHeaderError)
  if (missing !== undefined) return expected(400, 'missing_tenant', missing.message)
  const hyperconn = findInCauses(error, isHyperconnError)
  if (hyperconn !== undefined) return fromHyperconnError(hyperconn)
  const client = clientError(error)
  if (client !== undefined) return client
  return INTERNAL
}

function fromShopError(error: ShopError): HttpError {
  switch (error.code) {
    case 'INSUFFICIENT_STOCK':
      return expected(409, 'insufficient_stock', error.message, error)
    case 'UNKNOWN_PRODUCT':
      return expected(422, 'unknown_product', error.message, error)
  }
}

function fromHyperconnError(error: HyperconnError): HttpError {
  // Core's messages are written for callers and never contain secrets, so they can be passed on.
  switch (error.code) {
    case 'HC_INVALID_TENANT_ID':
      return expected(400, 'invalid_tenant', error.message)
    case 'HC_SECRET_NOT_FOUND':
      // Not core's message: that one names the secret, an internal detail the client has no use for.
      return expected(404, 'unknown_tenant', 'Unknown tenant: no organisation with this x-org-id exists.')
    case 'HC_SECRET_SOURCE':
    case 'HC_CONNECTION':
    case 'HC_POOL_CAPACITY':
    case 'HC_REGISTRY_CLOSED':
      return { status: 503, body: { error: 'tenant_unavailable', message: 'The tenant database is unavailable; retry later.' }, unexpected: true }
    default:
      // Misconfiguration (bad secret format, unknown service) or a transaction bug: ours, not the client's.
      return INTERNAL
  }
}

function expected(status: number, error: string, message: string, details?: ShopError): HttpError {
  const body: HttpErrorBody = { error, message }
  if (details !== undefined && 'sku' in details) body.sku = details.sku
  if (details !== undefined && 'available' in details) body.available = details.available
  return { status, body, unexpected: false }
}

/** Fastify's own 4xx errors: schema validation (`validation`), malformed JSON, wrong content type, too large. */
function clientError(error: unknown): HttpError | undefined {
  if (!(error instanceof Error)) return undefined
  const status = (error as { statusCode?: unknown }).statusCode
  if (typeof status !== 'number' || status < 400 || status > 499) return undefined
  return expected(status, 'validation' in error ? 'invalid_request' : 'bad_request', error.message)
}

function findInCauses<T>(error: unknown, match: (e: unknown) => e is T): T | undefined {
  let current: unknown = error
  for (let depth = 0; depth < 5 && current !== undefined && current !== null; depth++) {
    if (match(current)) return current
    current = (current as { cause?: unknown }).cause
  }
  return undefined
}
