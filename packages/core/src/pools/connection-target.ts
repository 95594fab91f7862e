import { createHmac, randomBytes } from 'node:crypto'
import { inspect } from 'node:util'
import type { ClientConfig } from 'pg'
import { parse as parseConnectionString } from 'pg-connection-string'
import { SecretFormatError } from '../hyperconn-error.js'
import type { ConnectionAuth, ConnectionEndpoint } from '../secrets/rds-iam-auth.js'
import { settingNameProblem } from './tenant-settings.js'

// Identities are HMACs with a per-process key: a Map key that never holds a password or a TLS key.
const IDENTITY_KEY = randomBytes(32)

// Per-tenant session settings, not part of what the physical connection is.
const SESSION_KEYS: ReadonlySet<string> = new Set(['options', 'application_name', 'fallback_application_name'])
// pg sends these as startup parameters, which a transaction pooler refuses (PgBouncer: "unsupported
// startup parameter") or drops: behind one they become transaction-local settings instead.
const STARTUP_SETTINGS = ['statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout'] as const

/**
 * Where a physical connection goes and with what credentials: host, port, database, user, password and
 * connection options (TLS, timeouts, keepalives). Tenants whose URLs differ only in session settings
 * (`options=-c name=value`, `application_name`) have equal `identity` and share one pool.
 */
export class ConnectionTarget {
  /** HMAC of every field that shapes the physical connection, password included. */
  readonly identity: string
  /** `host:port`: what the connection budget counts against. */
  readonly server: string
  /** `host:port/database@user`: safe to show (not unique: credentials and TLS options are left out). */
  readonly label: string
  /** For `new pg.Client()`, without the password (given by `password()` per connection). */
  readonly clientConfig: Readonly<ClientConfig>
  /** Reached through a transaction pooler (PgBouncer, RDS Proxy): no startup parameters, no session state. */
  readonly pooler: boolean
  readonly #password: string
  readonly #auth: { readonly auth: ConnectionAuth; readonly endpoint: ConnectionEndpoint } | undefined

  private constructor(
    identity: string,
    server: string,
    label: string,
    clientConfig: ClientConfig,
    password: string,
    pooler: boolean,
    auth: { readonly auth: ConnectionAuth; readonly endpoint: ConnectionEndpoint } | undefined,
  ) {
    this.identity = identity
    this.server = server
    this.label = label
    this.clientConfig = Object.freeze(clientConfig)
    this.pooler = pooler
    this.#password = password
    this.#auth = auth
    Object.freeze(this)
  }

  /**
   * Parses a tenant's PostgreSQL URL: the target, and the session settings the URL carries (each
   * `-c name=value` / `--name=value` of `options`, and `application_name`). Throws `SecretFormatError`
   * (naming the secret and key, never the value) for options it cannot apply safely. Behind a
   * transaction `pooler`, no startup parameter is sent: timeouts (`statement_timeout`, ...) of the pool
   * options or the URL become settings too, and application names are left out.
   */
  static parse(
    connectionString: string,
    base: Readonly<ClientConfig>,
    secretName: string,
    secretKey: string,
    pooler = false,
    auth?: ConnectionAuth,
  ): { target: ConnectionTarget; settings: Map<string, string> } {
    const parsed = parseConnectionString(connectionString) as Record<string, unknown>
    const settings = new Map<string, string>()
    if (pooler) {
      if (parsed.replication !== undefined) throw new SecretFormatError(secretName, secretKey, 'a replication connection cannot go through a transaction pooler')
      for (const name of STARTUP_SETTINGS) {
        const value = parsed[name] ?? (base as Record<string, unknown>)[name]
        // Milliseconds, as pg takes them (a number in the pool options, a string in a URL).
        if ((typeof value === 'number' && value > 0) || (typeof value === 'string' && value !== '' && value !== '0')) settings.set(name, String(value))
      }
    }
    if (typeof parsed.options === 'string') {
      for (const [name, value] of parseStartupOptions(parsed.options, secretName, secretKey)) settings.set(name, value)
    }
    if (!pooler && typeof parsed.application_name === 'string' && parsed.application_name !== '') {
      settings.set('application_name', parsed.application_name)
    }
    const config: Record<string, unknown> = { ...base }
    const shape: [string, unknown][] = []
    for (const [name, value] of Object.entries(parsed)) {
      if (value === undefined || value === null || value === '' || name === 'password' || SESSION_KEYS.has(name)) continue
      const normalised = name === 'port' ? Number(value) : value
      config[name] = normalised
      shape.push([name, normalised])
    }
    if (pooler) {
      for (const name of [...STARTUP_SETTINGS, 'application_name', 'fallback_application_name', 'options']) delete config[name]
      shape.push(['(pooler)', 'transaction'])
    }
    // Another way to authenticate is another physical connection, even to the same URL.
    if (auth !== undefined) shape.push(['(auth)', authIdentity(auth)])
    const host = typeof parsed.host === 'string' && parsed.host !== '' ? parsed.host : 'localhost'
    const port = typeof config.port === 'number' && Number.isFinite(config.port) ? config.port : 5432
    const password = typeof parsed.password === 'string' ? parsed.password : ''
    shape.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    const identity = createHmac('sha256', IDENTITY_KEY)
      .update(JSON.stringify([shape, password]))
      .digest('base64url')
    const text = (value: unknown): string => (typeof value === 'string' ? value : '')
    const label = `${host}:${port}/${text(parsed.database)}@${text(parsed.user)}`
    const endpoint = { host, port, user: text(parsed.user) }
    const authenticated = auth === undefined ? undefined : { auth, endpoint }
    return { target: new ConnectionTarget(identity, `${host}:${port}`, label, config, password, pooler, authenticated), settings }
  }

  /** For pg's per-connection password callback: the URL's, or a fresh one from the service's `auth`. */
  password(): string | Promise<string> {
    return this.#auth === undefined ? this.#password : this.#auth.auth.password(this.#auth.endpoint)
  }

  /** Strings that must never reach output: the password (raw and as pg may encode it). */
  redactions(): string[] {
    return this.#password === '' ? [] : [this.#password]
  }

  toJSON(): { label: string } {
    return { label: this.label }
  }

  [inspect.custom](): string {
    return `ConnectionTarget ${this.label}`
  }
}

const authIds = new WeakMap<object, number>()
let nextAuthId = 1

/** One id per auth object, so two services with different auth never share connections. */
function authIdentity(auth: ConnectionAuth): string {
  let id = authIds.get(auth)
  if (id === undefined) authIds.set(auth, (id = nextAuthId++))
  return `${auth.kind}#${id}`
}

// PgBouncer's default port, RDS Proxy endpoints, Supabase's Supavisor, hosts named after PgBouncer.
const POOLER_HOSTS = [/\.proxy-[a-z0-9]+\.[a-z0-9-]+\.rds\.amazonaws\.com(\.cn)?$/i, /(^|\.)pooler\.supabase\.com$/i, /pgbouncer/i]

/**
 * A guess from the address alone (a pooler answers the protocol exactly like PostgreSQL): PgBouncer's
 * port 6432, an RDS Proxy or Supavisor endpoint, a host named after PgBouncer. Used to warn only.
 */
export function looksLikePooler(server: string): boolean {
  const colon = server.lastIndexOf(':')
  const host = server.slice(0, colon)
  return server.slice(colon + 1) === '6432' || POOLER_HOSTS.some((pattern) => pattern.test(host))
}

/**
 * The `options` startup parameter as libpq reads it: whitespace-separated, backslash escapes, each
 * token `-c name=value`, `-cname=value` or `--name=value`. Anything else would change the server
 * process in ways a shared connection cannot undo, so it is refused.
 */
function parseStartupOptions(options: string, secretName: string, secretKey: string): [string, string][] {
  const tokens: string[] = []
  let current = ''
  let escaped = false
  let inToken = false
  for (const ch of options) {
    if (escaped) {
      current += ch
      escaped = false
      inToken = true
    } else if (ch === '\\') {
      escaped = true
      inToken = true
    } else if (/\s/.test(ch)) {
      if (inToken) tokens.push(current)
      current = ''
      inToken = false
    } else {
      current += ch
      inToken = true
    }
  }
  if (inToken) tokens.push(current)

  const fail = (problem: string): never => {
    throw new SecretFormatError(secretName, secretKey, `${problem}. Use options=-c name=value pairs only (e.g. -c search_path=org1)`)
  }
  const pairs: [string, string][] = []
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i] as string
    let assignment: string
    if (token === '-c') {
      const next = tokens[++i]
      if (next === undefined) fail('the URL\'s "options" ends with "-c" and no setting')
      assignment = next as string
    } else if (token.startsWith('-c')) assignment = token.slice(2)
    else if (token.startsWith('--')) assignment = token.slice(2)
    else return fail('the URL\'s "options" has a flag other than -c')
    const eq = assignment.indexOf('=')
    if (eq <= 0) fail('a setting in the URL\'s "options" is not name=value')
    const name = assignment.slice(0, eq).toLowerCase().replaceAll('-', '_')
    if (settingNameProblem(name) !== undefined) fail('a setting name in the URL\'s "options" is not a PostgreSQL parameter name')
    pairs.push([name, assignment.slice(eq + 1)])
  }
  return pairs
}
