import { createRequire } from 'node:module'
import type { EventEmitter } from 'node:events'
import type { Knex } from 'knex'
import { InvalidOptionsError } from '@hyperconn/core'

/**
 * The members of knex's PostgreSQL client (`knex/lib/dialects/postgres/index.js`, `Client_PG`, and its
 * base `knex/lib/client.js`) that this adapter calls or overrides. knex's public types only describe
 * part of it, so the shape is spelled out here and checked once at runtime (`assertKnexShape`).
 */
export interface KnexPgClient extends EventEmitter {
  config: Knex.Config
  version?: string
  /** knex's marker for a transaction's client: `builder.transacting(trx)` only accepts a client with it. */
  transacting?: boolean
  pool: unknown
  initializePool(config?: unknown): void
  acquireRawConnection(): Promise<unknown>
  acquireConnection(): Promise<unknown>
  releaseConnection(connection: unknown): Promise<void>
  destroy(callback?: (error?: unknown) => void): Promise<void>
  transaction(...args: unknown[]): unknown
  runner(builder: unknown): KnexRunner
  cancelQuery(connection?: unknown): Promise<unknown>
  /** Runs one compiled statement on a connection (emits knex's query events, then `_query`). */
  query(connection: unknown, obj: unknown): Promise<unknown>
  _stream(...args: unknown[]): unknown
}

/** `knex/lib/execution/runner.js`: one per executed builder. */
export interface KnexRunner {
  stream(...args: unknown[]): unknown
  pipe(...args: unknown[]): unknown
}

type KnexPgClientClass = new (config: Knex.Config) => KnexPgClient

// knex is CommonJS without an exports map: deep paths resolve, and createRequire gives the very module
// instance that `import knex from 'knex'` loaded (both go through Node's CommonJS cache).
const require = createRequire(import.meta.url)

export const ClientPG = require('knex/lib/dialects/postgres/index.js') as KnexPgClientClass

const KNEX_VERSION = (require('knex/package.json') as { version: string }).version

// Methods whose behaviour the adapter relies on (see README "How it works"); checked, not assumed.
const REQUIRED_METHODS = [
  'acquireConnection',
  'releaseConnection',
  'initializePool',
  'acquireRawConnection',
  'destroy',
  'transaction',
  'runner',
  'cancelQuery',
  'query',
  '_query',
  '_stream',
  'processResponse',
] as const

let checked = false

/**
 * Fails fast with a clear message when the installed knex is not the 3.x line this adapter was built
 * against, or its PostgreSQL client lost a method the adapter overrides (an internal refactor).
 */
export function assertKnexShape(): void {
  if (checked) return
  const major = Number.parseInt(KNEX_VERSION, 10)
  const proto = ClientPG.prototype as unknown as Record<string, unknown>
  const missing = REQUIRED_METHODS.filter((name) => typeof proto[name] !== 'function')
  if (major !== 3 || missing.length > 0) {
    throw new InvalidOptionsError(
      `@hyperconn/knex supports knex 3.x, but knex ${KNEX_VERSION} is installed` +
        (missing.length > 0 ? ` and its PostgreSQL client lacks ${missing.join(', ')}` : '') +
        '. Install a knex version within the peerDependencies range of @hyperconn/knex.',
    )
  }
  checked = true
}
