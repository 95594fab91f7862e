import { HyperconnError } from '../hyperconn-error.js'

/**
 * Redaction helpers. Anything that may reach a log, an event or an error message goes through these:
 * connection strings lose their password, and known secret values are replaced wholesale.
 */

const URL_CREDENTIALS = /\b(postgres(?:ql)?:\/\/)([^\s:@/]*)(?::[^\s@/]*)?@/gi
// URL query parameters (`?password=...`) and libpq key=value strings (`host=h password=secret`, also quoted).
const PASSWORD_PARAM = /((?:^|[?&\s])(?:password|sslpassword|sslkey)\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*)/gi
const MASK = '****'

/** `postgresql://user:pw@host/db` → `postgresql://user:****@host/db`; password query params masked too. */
export function redactConnectionString(text: string): string {
  return text
    .replace(URL_CREDENTIALS, (_m, scheme: string, user: string) => `${scheme}${user}:${MASK}@`)
    .replace(PASSWORD_PARAM, `$1${MASK}`)
}

/**
 * Removes every given secret value (passwords, whole connection strings, raw secret JSON) from text,
 * then masks anything that still looks like URL credentials.
 */
export function redactText(text: string, secrets: Iterable<string> = []): string {
  let out = text
  for (const secret of secrets) {
    if (secret.length >= 4) out = out.split(secret).join(MASK)
    // pg and URL parsers may percent-encode the password
    const encoded = encodeURIComponent(secret)
    if (encoded !== secret && encoded.length >= 4) out = out.split(encoded).join(MASK)
  }
  return redactConnectionString(out)
}

/** The parts of a PostgreSQL URL that are safe to show: no password, no query string. */
export function describeConnectionString(connectionString: string): string {
  try {
    const url = new URL(connectionString)
    const user = url.username ? `${decodeURIComponent(url.username)}@` : ''
    return `${url.protocol}//${user}${url.host}${url.pathname}`
  } catch {
    return '<unparseable connection string>'
  }
}

// pg DatabaseError fields that may echo query text or values
const REDACTED_FIELDS = ['message', 'detail', 'hint', 'where', 'internalQuery'] as const

/**
 * Masks the given secrets in an error's text fields (pg DatabaseError echoes query text and values),
 * keeping its class and other fields; hyperconn's own errors are redacted already.
 */
export function redactInPlace(error: unknown, redactions: readonly string[]): unknown {
  if (!(error instanceof Error) || error instanceof HyperconnError) return error
  const fields = error as unknown as Record<string, unknown>
  let leaked = false
  for (const field of REDACTED_FIELDS) {
    const value = fields[field]
    if (typeof value !== 'string') continue
    const clean = redactText(value, redactions)
    if (clean !== value) {
      leaked = true
      fields[field] = clean
    }
  }
  if (leaked && typeof error.stack === 'string') error.stack = redactText(error.stack, redactions)
  return error
}
