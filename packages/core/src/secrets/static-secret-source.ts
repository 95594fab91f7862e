import { inspect } from 'node:util'
import { InvalidOptionsError, SecretNotFoundError } from '../hyperconn-error.js'
import type { SecretSource, SecretValue } from './secret-source.js'

/**
 * In-memory secrets for tests and embedded use:
 * `staticSecrets({ 'martech-org1': { 'core-postgresql': 'postgresql://…' } })`.
 * Values may be objects or JSON strings. The map is copied (and frozen) up front, so later changes to
 * the caller's object have no effect; build a new source to "rotate".
 */
export function staticSecrets(map: Record<string, Readonly<Record<string, unknown>> | string>): SecretSource {
  return new StaticSecretSource(map)
}

class StaticSecretSource implements SecretSource {
  readonly kind = 'static'
  readonly #secrets: ReadonlyMap<string, SecretValue>

  constructor(map: Record<string, Readonly<Record<string, unknown>> | string>) {
    if (typeof map !== 'object' || map === null || Array.isArray(map)) {
      throw new InvalidOptionsError('staticSecrets(map) expects an object of { secretName: secret }.')
    }
    const secrets = new Map<string, SecretValue>()
    for (const [name, value] of Object.entries(map)) {
      secrets.set(name, copyValue(name, value))
    }
    this.#secrets = secrets
    Object.freeze(this)
  }

  get(name: string): Promise<SecretValue> {
    const value = this.#secrets.get(name)
    return value === undefined ? Promise.reject(new SecretNotFoundError(name)) : Promise.resolve(value)
  }

  /** The names of the map that start with `prefix`, in the map's order. */
  // eslint-disable-next-line @typescript-eslint/require-await -- in memory, but the same lazy AsyncIterable as the other sources
  async *list(prefix: string): AsyncGenerator<string, void, undefined> {
    assertPrefix(prefix)
    for (const name of this.#secrets.keys()) if (name.startsWith(prefix)) yield name
  }

  [inspect.custom](): string {
    return `StaticSecretSource { secrets: ${this.#secrets.size} }`
  }

  toJSON(): { kind: string; secrets: number } {
    return { kind: this.kind, secrets: this.#secrets.size }
  }
}

function assertPrefix(prefix: unknown): asserts prefix is string {
  if (typeof prefix !== 'string') throw new InvalidOptionsError('staticSecrets: list(prefix) expects a string prefix (\'\' for all names).')
}

function copyValue(name: string, value: unknown): SecretValue {
  if (typeof value === 'string') return value
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    let copy: unknown
    try {
      copy = JSON.parse(JSON.stringify(value))
    } catch {
      // Never echo the value: it is a secret.
      throw new InvalidOptionsError(`staticSecrets: secret "${name}" cannot be serialised as JSON.`)
    }
    return deepFreeze(copy as Record<string, unknown>)
  }
  throw new InvalidOptionsError(
    `staticSecrets: secret "${name}" must be an object or a JSON string, got ${value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value}.`,
  )
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const item of Object.values(value)) deepFreeze(item)
    Object.freeze(value)
  }
  return value
}
