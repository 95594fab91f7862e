import { createHmac, randomBytes } from 'node:crypto'
import { inspect } from 'node:util'
import type { InspectOptions } from 'node:util'
import { SecretFormatError } from '../hyperconn-error.js'
import { redactText } from './secret-redaction.js'
import type { SecretValue } from './secret-source.js'

/**
 * Fingerprints are keyed with a per-process random key: stable within the process (enough to detect
 * rotation), but a fingerprint that ends up in a log cannot be used offline to confirm a guessed
 * password, as a plain sha256 of a low-entropy secret could.
 */
const FINGERPRINT_KEY = randomBytes(32)

const POSTGRES_PROTOCOLS: ReadonlySet<string> = new Set(['postgres:', 'postgresql:'])

/**
 * One parsed tenant secret, e.g. `{ "core-postgresql": "postgresql://…", "billing-postgresql": "…" }`.
 * The values live only in a `#private` field: `util.inspect`, `JSON.stringify`, `Object.keys` and
 * structured cloning show the secret's name and keys, never a value.
 */
export class SecretBundle {
  readonly name: string
  /** HMAC-SHA256 (per-process key) of the canonical JSON, 16 hex chars; changes when the secret does. */
  readonly fingerprint: string
  readonly #values: ReadonlyMap<string, unknown>

  private constructor(name: string, values: ReadonlyMap<string, unknown>, fingerprint: string) {
    this.name = name
    this.#values = values
    this.fingerprint = fingerprint
    Object.freeze(this)
  }

  /**
   * Parses what a `SecretSource` returned. Error messages never include the value or a
   * `JSON.parse` message: both can echo secret content.
   */
  static parse(secretName: string, value: SecretValue): SecretBundle {
    let parsed: unknown
    try {
      // Objects go through a JSON round trip too: a deep copy the caller cannot mutate later, and
      // the same canonical data whichever form the source used.
      parsed = JSON.parse(typeof value === 'string' ? value : JSON.stringify(value))
    } catch {
      throw new SecretFormatError(secretName, undefined, 'is not a JSON object')
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new SecretFormatError(secretName, undefined, 'is not a JSON object')
    }
    // A Map, not the parsed object: a "__proto__" key stays an ordinary key.
    const values = new Map<string, unknown>(Object.entries(parsed))
    const fingerprint = createHmac('sha256', FINGERPRINT_KEY)
      .update(canonicalJson(parsed))
      .digest('hex')
      .slice(0, 16)
    return new SecretBundle(secretName, values, fingerprint)
  }

  /** The secret's top-level keys (not secret themselves). */
  get keys(): string[] {
    return [...this.#values.keys()]
  }

  has(key: string): boolean {
    return this.#values.has(key)
  }

  /** The PostgreSQL URL stored under `key`; throws `SecretFormatError` if absent or not a PostgreSQL URL. */
  connectionString(key: string): string {
    const value = this.#values.get(key)
    if (value === undefined || value === null) throw new SecretFormatError(this.name, key, 'is missing')
    if (typeof value !== 'string') throw new SecretFormatError(this.name, key, 'is not a string')
    let url: URL
    try {
      url = new URL(value)
    } catch {
      throw new SecretFormatError(this.name, key, 'is not a PostgreSQL URL')
    }
    if (!POSTGRES_PROTOCOLS.has(url.protocol) || url.hostname === '') {
      throw new SecretFormatError(this.name, key, 'is not a PostgreSQL URL')
    }
    return value
  }

  /**
   * The PostgreSQL URLs under `key`: one URL or a list of them; none when the key is absent. Each is
   * validated as `connectionString` validates one.
   */
  connectionStrings(key: string): string[] {
    const value = this.#values.get(key)
    if (value === undefined || value === null) return []
    if (typeof value === 'string') return [this.connectionString(key)]
    if (!Array.isArray(value)) throw new SecretFormatError(this.name, key, 'is not a URL or a list of URLs')
    return value.map((item: unknown, i) => {
      if (typeof item !== 'string') throw new SecretFormatError(this.name, `${key}[${i}]`, 'is not a string')
      let url: URL
      try {
        url = new URL(item)
      } catch {
        throw new SecretFormatError(this.name, `${key}[${i}]`, 'is not a PostgreSQL URL')
      }
      if (!POSTGRES_PROTOCOLS.has(url.protocol) || url.hostname === '') throw new SecretFormatError(this.name, `${key}[${i}]`, 'is not a PostgreSQL URL')
      return item
    })
  }

  /**
   * Every string worth redacting from text: each string value (nested ones too, and their JSON-escaped
   * form), plus the password of each URL both raw and percent-decoded, and `?password=` parameters.
   */
  secretValues(): string[] {
    const out = new Set<string>()
    const visit = (value: unknown): void => {
      if (typeof value === 'string') {
        addSecretString(out, value)
      } else if (Array.isArray(value)) {
        for (const item of value) visit(item)
      } else if (typeof value === 'object' && value !== null) {
        for (const item of Object.values(value)) visit(item)
      }
    }
    for (const value of this.#values.values()) visit(value)
    return [...out]
  }

  /** `SecretBundle { name, keys }`: safe to log. */
  toJSON(): { name: string; keys: string[] } {
    return { name: this.name, keys: this.keys }
  }

  [inspect.custom](_depth: number, options: InspectOptions): string {
    return `SecretBundle ${inspect(this.toJSON(), { ...options, showHidden: false, depth: 2 })}`
  }

  /** Redacts this bundle's values from `text` (and any URL credentials). */
  redact(text: string): string {
    return redactText(text, this.secretValues())
  }
}

function addSecretString(out: Set<string>, value: string): void {
  if (value === '') return
  out.add(value)
  const escaped = JSON.stringify(value).slice(1, -1)
  if (escaped !== value) out.add(escaped)
  if (!value.includes('://')) return
  let url: URL
  try {
    url = new URL(value)
  } catch {
    return
  }
  if (url.password !== '') {
    out.add(url.password)
    const decoded = safeDecode(url.password)
    if (decoded !== undefined && decoded !== '') out.add(decoded)
  }
  for (const [param, paramValue] of url.searchParams) {
    if (/^(?:password|sslpassword|sslkey)$/i.test(param) && paramValue !== '') out.add(paramValue)
  }
}

function safeDecode(text: string): string | undefined {
  try {
    return decodeURIComponent(text)
  } catch {
    return undefined
  }
}

/** JSON with object keys sorted at every level, so key order does not change the fingerprint. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  if (typeof value === 'object' && value !== null) {
    const keys = Object.keys(value).sort()
    return `{${keys
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`)
      .join(',')}}`
  }
  return JSON.stringify(value)
}

/**
 * A small plain `Error` standing in for a foreign error as a `cause`: name, redacted message and a
 * string `code` only, so SDK request/response objects or secret fragments don't travel with it.
 * (Shared by the secret sources and the cache.)
 */
export function safeCause(error: unknown, secrets: Iterable<string> = []): Error {
  const name = errorProperty(error, 'name') ?? 'Error'
  const message = errorProperty(error, 'message') ?? (typeof error === 'string' ? error : 'unknown error')
  const cause = new Error(redactText(message, secrets).slice(0, 500))
  cause.name = safeIdentifier(name) ?? 'Error'
  const code = errorProperty(error, 'code')
  if (code !== undefined && safeIdentifier(code) !== undefined) (cause as Error & { code?: string }).code = code
  return cause
}

function errorProperty(error: unknown, key: 'name' | 'message' | 'code'): string | undefined {
  if (typeof error !== 'object' || error === null) return undefined
  try {
    const value = (error as Record<string, unknown>)[key]
    return typeof value === 'string' ? value : undefined
  } catch {
    return undefined
  }
}

/** Error names and codes are identifiers; anything else is not trusted into a message. */
export function safeIdentifier(text: string): string | undefined {
  return /^[A-Za-z][A-Za-z0-9_.:-]{0,63}$/.test(text) ? text : undefined
}
