import type { QueryConfig } from 'pg'

/**
 * A tenant's session settings (`search_path`, `app.tenant_id`, `statement_timeout`, ...): what makes one
 * connection serve one tenant. Computed once per secret version, compared by `signature` per checkout.
 *
 * Settings are only ever sent as bound parameters of `set_config()`: names and values never enter SQL
 * text. A NULL value resets a setting to its default, which is how keys another tenant set are cleared.
 */
export class TenantSettings {
  static readonly none = new TenantSettings([], [])

  /** Sorted setting names (lower case). */
  readonly names: readonly string[]
  readonly values: readonly string[]
  /** Equal signatures mean equal settings; '' for none. */
  readonly signature: string

  private constructor(names: readonly string[], values: readonly string[]) {
    this.names = names
    this.values = values
    this.signature = names.length === 0 ? '' : JSON.stringify([names, values])
    // Not frozen: the two statements above are computed on first use.
    Object.seal(this)
  }

  /** From validated name → value pairs; the caller checked names with `settingNameProblem`. */
  static of(settings: ReadonlyMap<string, string>): TenantSettings {
    if (settings.size === 0) return TenantSettings.none
    const names = [...settings.keys()].sort()
    return new TenantSettings(
      names,
      names.map((name) => settings.get(name) as string),
    )
  }

  /**
   * The statement that moves a connection carrying `carried` to these settings: every name of ours with
   * its value, and every name `carried` has that we lack with NULL (reset to default). `local` applies
   * them to the current transaction only.
   */
  transitionFrom(carried: TenantSettings, local: boolean): QueryConfig {
    // The common case, from another tenant with the same setting names: one statement per settings object.
    if (carried.names.every((name) => this.names.includes(name))) {
      return local ? (this.#local ??= this.#statement(carried, true)) : (this.#session ??= this.#statement(carried, false))
    }
    return this.#statement(carried, local)
  }

  #session: QueryConfig | undefined
  #local: QueryConfig | undefined
  #literal: string | undefined

  /**
   * Behind a transaction pooler: `BEGIN ...; SELECT set_config(name, value, true), ...` as one simple
   * query (one round trip, no named statement). Names are validated identifiers and values are quoted
   * with `escape` (pg's `escapeLiteral`), so nothing caller-provided runs as SQL.
   */
  beginLocally(begin: string, escape: (value: string) => string): string {
    if (this.names.length === 0) return begin
    this.#literal ??= `SELECT ${this.names.map((name, i) => `set_config(${escape(name)}, ${escape(this.values[i] as string)}, true)`).join(', ')}`
    return `${begin}; ${this.#literal}`
  }

  #statement(carried: TenantSettings, local: boolean): QueryConfig {
    const values: (string | null)[] = []
    for (let i = 0; i < this.names.length; i++) values.push(this.names[i] as string, this.values[i] as string)
    for (const name of carried.names) if (!this.names.includes(name)) values.push(name, null)
    return { ...setConfigStatement(values.length / 2, local), values }
  }

  toJSON(): { names: readonly string[] } {
    return { names: this.names }
  }
}

/**
 * `select set_config($1, $2, false), set_config($3, $4, false), ...` for n settings (`true` for
 * transaction-local), as a named statement: each connection parses and plans it once, then every
 * checkout sends only the bound names and values — never SQL text built from them.
 */
function setConfigStatement(count: number, local: boolean): { name: string; text: string } {
  const cache = local ? LOCAL_STATEMENTS : SESSION_STATEMENTS
  let statement = cache[count]
  if (statement === undefined) {
    const calls = Array.from({ length: count }, (_, i) => `set_config($${2 * i + 1}, $${2 * i + 2}, ${local ? 'true' : 'false'})`)
    statement = { name: `hc_set_${local ? 'local' : 'session'}_${count}`, text: `select ${calls.join(', ')}` }
    cache[count] = statement
  }
  return statement
}

const SESSION_STATEMENTS: { name: string; text: string }[] = []
const LOCAL_STATEMENTS: { name: string; text: string }[] = []

// PostgreSQL GUC names: identifiers, custom ones with a dot ("app.tenant_id"); 63 bytes at most.
const SETTING_NAME = /^[A-Za-z_][A-Za-z0-9_$]*(?:\.[A-Za-z_][A-Za-z0-9_$]*)*$/
const MAX_VALUE_LENGTH = 8_192

/** Why `name` is not an acceptable setting name, or undefined when it is. */
export function settingNameProblem(name: unknown): string | undefined {
  if (typeof name !== 'string') return `a setting name must be a string, got ${typeof name}`
  if (name.length === 0 || name.length > 63 || !SETTING_NAME.test(name)) {
    return 'a setting name must be a PostgreSQL parameter name such as "search_path" or "app.tenant_id" (letters, digits, _ and $, dot-separated, at most 63 characters)'
  }
  return undefined
}

/** A setting value as PostgreSQL's text form, or a problem description. */
export function settingValueOf(value: unknown): { value: string } | { problem: string } {
  let text: string
  if (typeof value === 'string') text = value
  else if (typeof value === 'number' && Number.isFinite(value)) text = String(value)
  else if (typeof value === 'boolean') text = value ? 'on' : 'off'
  else return { problem: `values must be strings, finite numbers or booleans, got ${value === null ? 'null' : typeof value}` }
  if (text.length > MAX_VALUE_LENGTH) return { problem: `values must be at most ${MAX_VALUE_LENGTH} characters` }
  if (text.includes('\0')) return { problem: 'values must not contain NUL characters' }
  return { value: text }
}
