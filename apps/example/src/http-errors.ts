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
  /** Extra response headers (`Retry-After` on answers that invite a retry). */
  headers?: Readonly<Record<string, string>>
  /** Unexpected: worth an error-level log line with the cause. */
  unexpected: boolean
}

const INTERNAL: HttpError = { status: 500, body: { error: 'internal_error', message: 'Internal error.' }, unexpected: true }

const RETRY_SOON = Object.freeze({ 'retry-after': '1' })

/** The secret source or the tenant's database cannot serve the request right now; nothing was committed. */
const UNAVAILABLE: HttpError = {
  status: 503,
  body: { error: 'tenant_unavailable', message: 'The tenant database is unavailable; retry later.' },
  headers: RETRY_SOON,
  unexpected: true,
}

/** PostgreSQL rolled the transaction back to resolve a conflict (serialization failure, deadlock): safe to retry. */
const CONFLICT: HttpError = {
  status: 409,
  body: { error: 'transaction_conflict', message: 'The request conflicted with a concurrent one and was rolled back; retry it.' },
  headers: RETRY_SOON,
  unexpected: false,
}

/**
 * SQLSTATEs of a lost or refused database connection: class 08 (connection exception) plus admin/crash
 * shutdown, "cannot connect now" (starting up, shutting down, recovering) and too many connections.
 */
const UNAVAILABLE_SQLSTATES: ReadonlySet<string> = new Set(['57P01', '57P02', '57P03', '53300'])
const SQLSTATE = /^[0-9A-Z]{5}$/
const CONFLICT_SQLSTATES: ReadonlySet<string> = new Set(['40001', '40P01'])
/** pg's own errors for a socket that closed under a query carry no code at all, only these messages. */
const CONNECTION_TERMINATED: ReadonlySet<string> = new Set(['Connection terminated unexpectedly', 'Connection terminated'])

/**
 * Maps any error to an HTTP answer by its type and `code`; the only messages looked at are pg's code-less
 * "Connection terminated" errors. ORMs may wrap the errors their driver throws (Drizzle's
 * DrizzleQueryError, for one), so the `cause` chain is searched.
 */
export function toHttpError(error: unknown): HttpError {
  const shop = findInCauses(error, isShopError)
  if (shop !== undefined) return fromShopError(shop)
  const missing = findInCauses(error, (e): e is MissingTenantHeaderError => e instanceof MissingTenantHeaderError)
  if (missing !== undefined) return expected(400, 'missing_tenant', missing.message)
  const database = databaseFailure(error)
  if (database !== undefined) return database
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
      // Throttling, 5xx, timeouts: retry. Access denied, KMS failure: our configuration, not the client's.
      return (error as { transient?: unknown }).transient === true ? UNAVAILABLE : INTERNAL
    case 'HC_CONNECTION':
    case 'HC_POOL_SATURATED':
    case 'HC_REGISTRY_CLOSED':
      return UNAVAILABLE
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

/**
 * A lost database connection (503) or a conflict PostgreSQL resolved by rolling back (409), wherever it
 * sits in the cause chain: ORMs wrap pg's errors, and core reports a transaction that a failed statement
 * rolled back as TransactionRolledBackError with that statement's error as `cause`. Other hyperconn errors
 * end the search: their causes (a secret source's SDK error, say) are theirs to classify.
 */
function databaseFailure(error: unknown): HttpError | undefined {
  let current: unknown = error
  for (let depth = 0; depth < 8 && typeof current === 'object' && current !== null; depth++) {
    if (isHyperconnError(current)) {
      if (current.code === 'HC_CONNECTION') return UNAVAILABLE
      if (current.code !== 'HC_TRANSACTION_ROLLED_BACK') return undefined
    } else {
      const code = (current as { code?: unknown }).code
      if (typeof code === 'string') {
        if (SQLSTATE.test(code) && (code.startsWith('08') || UNAVAILABLE_SQLSTATES.has(code))) return UNAVAILABLE
        if (CONFLICT_SQLSTATES.has(code)) return CONFLICT
      } else if (current instanceof Error && CONNECTION_TERMINATED.has(current.message)) {
        return UNAVAILABLE
      }
    }
    current = (current as { cause?: unknown }).cause
  }
  return undefined
}

function findInCauses<T>(error: unknown, match: (e: unknown) => e is T): T | undefined {
  let current: unknown = error
  for (let depth = 0; depth < 5 && current !== undefined && current !== null; depth++) {
    if (match(current)) return current
    current = (current as { cause?: unknown }).cause
  }
  return undefined
}
