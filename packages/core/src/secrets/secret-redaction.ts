/**
 * Redaction helpers. Anything that may reach a log, an event or an error message goes through these:
 * connection strings lose their password, and known secret values are replaced wholesale.
 */

const URL_CREDENTIALS = /\b(postgres(?:ql)?:\/\/)([^\s:@/]*)(?::[^\s@/]*)?@/gi
const PASSWORD_PARAM = /([?&](?:password|sslpassword|sslkey)=)[^&\s]*/gi
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
