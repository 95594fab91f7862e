import { open, stat } from 'node:fs/promises'
import type { BigIntStats } from 'node:fs'
import { resolve } from 'node:path'
import { inspect } from 'node:util'
import { InvalidOptionsError, SecretNotFoundError, SecretSourceError } from '../hyperconn-error.js'
import { safeCause, safeIdentifier } from './secret-bundle.js'
import type { SecretSource, SecretValue } from './secret-source.js'

/**
 * Secrets from a local JSON file `{ "<secretName>": { ...secret JSON... } }`. The file is re-read when
 * its mtime, size or inode changes, so editing (or atomically replacing) it rotates secrets.
 */
export function fileSecrets(path: string): SecretSource {
  return new FileSecretSource(path)
}

interface Snapshot {
  /** mtime (ns), size and inode: an atomic rename within one mtime tick still changes the inode. */
  readonly version: string
  readonly secrets: ReadonlyMap<string, SecretValue>
}

/** errno codes that will not fix themselves; anything else (ENOENT during a rename, EIO…) is retried. */
const PERMANENT_FS_CODES: ReadonlySet<string> = new Set(['EACCES', 'EPERM', 'EISDIR', 'ENOTDIR', 'ELOOP', 'ENAMETOOLONG'])

class FileSecretSource implements SecretSource {
  readonly kind = 'file'
  readonly #path: string
  #snapshot: Snapshot | undefined
  /** Single-flight re-read: concurrent callers after a change share one read. */
  #loading: Promise<Snapshot> | undefined

  constructor(path: string) {
    if (typeof path !== 'string' || path === '') {
      throw new InvalidOptionsError('fileSecrets(path) expects the path of a JSON file.')
    }
    this.#path = resolve(path)
  }

  async get(name: string): Promise<SecretValue> {
    const snapshot = await this.#current(name)
    const value = snapshot.secrets.get(name)
    if (value === undefined) throw new SecretNotFoundError(name)
    return value
  }

  /** The file's secret names that start with `prefix`, read (or re-read after a change) as `get` does. */
  async *list(prefix: string): AsyncGenerator<string, void, undefined> {
    if (typeof prefix !== 'string') throw new InvalidOptionsError("fileSecrets: list(prefix) expects a string prefix ('' for all names).")
    const snapshot = await this.#current(`${prefix}*`)
    for (const name of snapshot.secrets.keys()) if (name.startsWith(prefix)) yield name
  }

  /** The file's secrets now; a failure is reported for `name` (a secret name, or `<prefix>*` when listing). */
  async #current(name: string): Promise<Snapshot> {
    let stats: BigIntStats
    try {
      stats = await stat(this.#path, { bigint: true })
    } catch (error) {
      throw this.#fsError(name, error)
    }
    const snapshot = this.#snapshot
    if (snapshot !== undefined && snapshot.version === versionOf(stats)) return snapshot
    try {
      return await this.#load()
    } catch (problem) {
      // The read is shared between callers, so each maps the problem with its own secret name.
      if (problem instanceof FileProblem) {
        throw problem.invalid === undefined ? this.#fsError(name, problem.error) : this.#badFile(name, problem.invalid)
      }
      throw problem
    }
  }

  #load(): Promise<Snapshot> {
    this.#loading ??= this.#read().finally(() => {
      this.#loading = undefined
    })
    return this.#loading
  }

  async #read(): Promise<Snapshot> {
    let text: string
    let version: string
    try {
      // Read through one handle so the version we record belongs to the bytes we read.
      const handle = await open(this.#path, 'r')
      try {
        version = versionOf(await handle.stat({ bigint: true }))
        text = await handle.readFile('utf8')
      } finally {
        await handle.close()
      }
    } catch (error) {
      throw new FileProblem(error, undefined)
    }
    let parsed: unknown
    try {
      parsed = JSON.parse(text)
    } catch {
      // No JSON.parse message: it quotes the file's content.
      throw new FileProblem(undefined, 'is not valid JSON')
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new FileProblem(undefined, 'is not a JSON object of { "<secretName>": { ... } }')
    }
    const secrets = new Map<string, SecretValue>()
    for (const [secretName, value] of Object.entries(parsed)) {
      // Strings and objects are handed on; SecretBundle.parse reports anything else as a format error.
      secrets.set(secretName, deepFreeze(value) as SecretValue)
    }
    const snapshot: Snapshot = Object.freeze({ version, secrets })
    // Drop the previous plaintext only once the new file parsed: a half-written file keeps failing
    // until it is complete (its mtime changes again when it is).
    this.#snapshot = snapshot
    return snapshot
  }

  #fsError(name: string, error: unknown): SecretSourceError {
    const code = (error as { code?: unknown } | null)?.code
    const errno = typeof code === 'string' ? safeIdentifier(code) : undefined
    const transient = errno === undefined || !PERMANENT_FS_CODES.has(errno)
    return new SecretSourceError(name, transient, errno ?? 'FileReadError', {
      cause: safeCause(error),
      message: `Could not read secret "${name}": the secrets file ${this.#path} cannot be read (${errno ?? 'unknown error'}). Check that it exists and is readable by this process.`,
    })
  }

  #badFile(name: string, problem: string): SecretSourceError {
    return new SecretSourceError(name, false, 'InvalidSecretsFile', {
      message: `Could not read secret "${name}": the secrets file ${this.#path} ${problem}. Fix the file; it is re-read when it changes.`,
    })
  }

  [inspect.custom](): string {
    return `FileSecretSource { path: ${JSON.stringify(this.#path)} }`
  }

  toJSON(): { kind: string; path: string } {
    return { kind: this.kind, path: this.#path }
  }
}

/** Why a read failed, before it is turned into a `SecretSourceError` for a particular secret. */
class FileProblem extends Error {
  readonly error: unknown
  readonly invalid: string | undefined
  constructor(error: unknown, invalid: string | undefined) {
    super('secrets file problem')
    this.error = error
    this.invalid = invalid
  }
}

function versionOf(stats: BigIntStats): string {
  return `${stats.mtimeNs}:${stats.size}:${stats.ino}:${stats.dev}`
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const item of Object.values(value)) deepFreeze(item)
    Object.freeze(value)
  }
  return value
}
