import type { QueryConfig, QueryResult, QueryResultRow } from 'pg'
import { ConnectionError, ConnectionLeakError, HyperconnError, LifecycleHookError, RegistryClosedError, TransactionClosedError, UnsupportedError } from '../hyperconn-error.js'
import type { LeakReason } from '../hyperconn-error.js'
import { isStatementError, sqlStateOf } from '../pg-error.js'
import { redactInPlace, redactText } from '../secrets/secret-redaction.js'
import type { PoolLease } from '../tenant-types.js'
import type { HookConnection, LifecycleHooks } from './lease-hooks.js'
import type { LeaseScope } from './lease-scope.js'
import type { PooledConnection } from './target-pool.js'
import type { TenantBinding } from './tenant-binding.js'
import { TenantSettings } from './tenant-settings.js'

/** What a lease hands back to the lease point that made it. */
export interface LeaseOwner<U> {
  /** The checkout ended (released or taken back): stop watching it. Called once, before `checkIn`. */
  ended(lease: ConnectionLease<U>): void
  /** The connection is back: keep it idle, or destroy it; then serve the next waiter. */
  checkIn(lease: ConnectionLease<U>, destroy: boolean): void
  /** `onRelease` threw (the connection is destroyed). */
  releaseHookFailed(lease: ConnectionLease<U>, error: unknown): void
  /** A statement on a replica failed: a recovery conflict takes the replica out of rotation for a while. */
  replicaFailed(lease: ConnectionLease<U>, error: unknown): void
}

interface PgClientState {
  _txStatus?: string | null
  _activeQuery?: unknown
  _queryQueue?: unknown[]
}

/**
 * A checked-out connection of one tenant. The tenant's session settings are applied before its first
 * query (`query`, `prepare`) or transaction-locally right after BEGIN (`begin`).
 *
 * Release runs the checkout backwards: a connection with a statement still running, broken, or from a
 * failed settings round trip is destroyed; one left inside a transaction (open or failed) is rolled back
 * first, and destroyed if that fails; then `onRelease` runs, and a throwing hook destroys it too. A lease
 * taken back as a leak (`revoke`) refuses every later statement with `ConnectionLeakError`.
 */
export class ConnectionLease<U> implements PoolLease {
  readonly conn: PooledConnection
  readonly binding: TenantBinding
  /** The lease point's record of the tenant (opaque here). */
  readonly usage: U
  /** When it was checked out; set only when something watches it (leak detection, a scope). */
  acquiredAt = 0
  /** Where it was checked out (leak detection only): formatted on demand. */
  readonly origin: Error | undefined
  /** The `registry.scope` tracking it, if any. */
  scope: LeaseScope<ConnectionLease<U>> | undefined
  /** Checked out from one of the tenant's read replicas. */
  onReplica = false
  readonly #owner: LeaseOwner<U>
  readonly #hooks: LifecycleHooks | undefined
  #hookConnection: HookConnection | undefined
  /** SQL ran in a hook: without an onRelease to undo it, the session state is unknown afterwards. */
  #hookTouched = false
  /** The last settings round trip failed with a statement error (a bad setting), not a dead connection. */
  #settingsRejected = false
  /** onClaim ran: what it set (a SET ROLE) is this checkout's session, kept until release. */
  #claimed = false
  #prepared = false
  #inTransaction = false
  /** onRelease runs at release: always on a direct connection; behind a pooler once a transaction began. */
  #releaseHookDue: boolean
  #untrusted = false
  #released = false
  #revoked: LeakReason | undefined

  constructor(
    owner: LeaseOwner<U>,
    conn: PooledConnection,
    binding: TenantBinding,
    usage: U,
    hooks: LifecycleHooks | undefined,
    origin: Error | undefined,
  ) {
    this.#owner = owner
    this.conn = conn
    this.binding = binding
    this.usage = usage
    this.#hooks = hooks
    this.origin = origin
    this.#releaseHookDue = !binding.target.pooler
  }

  get client(): PooledConnection['client'] {
    return this.conn.client
  }

  get processID(): number | undefined {
    return (this.conn.client as unknown as { processID?: number | null }).processID ?? undefined
  }

  /** The error a holder gets once the lease was taken back as a leak; undefined otherwise. */
  get revokedError(): ConnectionLeakError | undefined {
    const reason = this.#revoked
    if (reason === undefined) return undefined
    return new ConnectionLeakError(this.binding.key.service, this.binding.key.orgId, reason)
  }

  /** The stack lines of `origin`, without the error line. */
  get stack(): string | undefined {
    const stack = this.origin?.stack
    if (stack === undefined) return undefined
    const newline = stack.indexOf('\n')
    return newline === -1 ? stack : stack.slice(newline + 1)
  }

  async query<R extends QueryResultRow = any>(config: string | QueryConfig, values?: unknown[]): Promise<QueryResult<R>> {
    this.#assertUsable()
    if (this.binding.target.pooler) return this.#poolerQuery<R>(config, values)
    if (!this.#prepared && !this.#inTransaction) {
      await this.prepare()
      // Released meanwhile: the connection may already serve someone else.
      this.#assertUsable()
    }
    return this.#send<R>(config, values)
  }

  async #send<R extends QueryResultRow>(config: string | QueryConfig, values: unknown[] | undefined): Promise<QueryResult<R>> {
    let result: QueryResult<R>
    if (holdsSessionState(config)) this.conn.carry(undefined)
    try {
      result = await this.conn.client.query<R>(config, values)
    } catch (error) {
      // A failed multi-statement query may have run a SET before failing: assume the worst.
      this.conn.carry(undefined)
      // FATAL (a terminated backend, 57P01) or no server answer at all: the socket may look open until
      // its 'end' event is processed, so the connection must not go back to the pool meanwhile.
      if (!isStatementError(error)) this.#untrusted = true
      if (this.onReplica) this.#owner.replicaFailed(this, error)
      throw error
    }
    observe(this.conn, result)
    return result
  }

  /**
   * Behind a transaction pooler the server connection may change between transactions, so nothing is
   * kept at session level: a statement of a tenant with settings or hooks runs in its own short
   * transaction (BEGIN and the settings in one round trip, onClaim, the statement, onRelease, COMMIT).
   * Statement names are dropped: a named prepared statement would live on one server connection only.
   */
  async #poolerQuery<R extends QueryResultRow>(config: string | QueryConfig, values: unknown[] | undefined): Promise<QueryResult<R>> {
    const statement = unnamed(config)
    if (this.#inTransaction || (this.binding.settings.names.length === 0 && this.#hooks === undefined)) return this.#send<R>(statement, values)
    refuseTransactionControl(statement)
    await this.#beginLocally('BEGIN')
    try {
      const onClaim = this.#hooks?.onClaim
      if (onClaim !== undefined) {
        try {
          await onClaim(this.#hookConn(), this.binding.key)
        } catch (error) {
          throw hookFailed('onClaim', this.binding, error)
        }
      }
      const result = await this.#send<R>(statement, values)
      const onRelease = this.#hooks?.onRelease
      if (onRelease !== undefined) {
        try {
          await onRelease(this.#hookConn(), this.binding.key)
        } catch (error) {
          throw hookFailed('onRelease', this.binding, error)
        }
      }
      await this.conn.client.query('COMMIT')
      return result
    } catch (error) {
      await this.conn.client.query('ROLLBACK').catch(() => {
        this.#untrusted = true
      })
      throw error
    } finally {
      this.#inTransaction = false
    }
  }

  /** `begin` (BEGIN, possibly with options) and the settings transaction-locally, in one round trip. */
  async #beginLocally(begin: string): Promise<void> {
    const client = this.conn.client
    try {
      await client.query(this.binding.settings.beginLocally(begin, (value) => client.escapeLiteral(value)))
    } catch (error) {
      throw this.#settingsFailed(error)
    }
    this.#inTransaction = true
  }

  /** Session level: the connection carries the tenant's settings from now on (skipped if it already does). */
  async prepare(): Promise<void> {
    if (this.#prepared) return
    this.#assertUsable()
    if (this.binding.target.pooler) {
      if (this.binding.settings.names.length > 0 || this.#hooks !== undefined) throw poolerSession(this.binding)
      this.#prepared = true
      return
    }
    const target = this.binding.settings
    const carried = this.conn.carried
    if (carried?.signature !== target.signature) {
      try {
        const known = carried ?? (await this.#reset())
        if (known.signature !== target.signature) {
          await this.conn.client.query(target.transitionFrom(known, false))
          this.conn.carry(target)
        }
      } catch (error) {
        throw this.#settingsFailed(error)
      }
    }
    this.#prepared = true
  }

  /**
   * For a connection that sat idle a while (the server may have restarted meanwhile): the settings round
   * trip if one is due anyway, else an empty query. Neither is the caller's statement, so on failure the
   * connection is destroyed and the caller gets another: false.
   */
  async validate(): Promise<boolean> {
    try {
      if (this.binding.target.pooler || this.conn.carried?.signature === this.binding.settings.signature) {
        // Bounded: a server that vanished without closing the socket must not hang the caller.
        const timeout = this.conn.pool.target.clientConfig.connectionTimeoutMillis ?? 0
        await this.conn.client.query(timeout > 0 ? ({ text: '', query_timeout: timeout } as QueryConfig) : '')
      } else await this.prepare()
      return true
    } catch (error) {
      this.release(true)
      // A setting the server refused is the tenant's problem, not a dead connection: no other idle one is tried.
      if (this.#settingsRejected) throw error
      return false
    }
  }

  /** `onClaim`, after the settings: a throwing hook destroys the connection (the caller rethrows). */
  async claim(): Promise<void> {
    const onClaim = this.#hooks?.onClaim
    if (onClaim === undefined) return
    await this.prepare()
    await onClaim(this.#hookConn(), this.binding.key)
    this.#claimed = true
  }

  /**
   * BEGIN, then the tenant's settings transaction-locally (skipped if the connection carries them). The
   * lease then belongs to that transaction: its statements need no session-level settings, and the
   * transaction releases it when it ends.
   */
  async begin(sql: string): Promise<void> {
    this.#assertUsable()
    if (this.binding.target.pooler) {
      await this.#beginLocally(sql)
      const onClaim = this.#hooks?.onClaim
      if (onClaim !== undefined) {
        try {
          await onClaim(this.#hookConn(), this.binding.key)
        } catch (error) {
          this.#untrusted = true
          throw hookFailed('onClaim', this.binding, error)
        }
      }
      this.#releaseHookDue = true
      return
    }
    const target = this.binding.settings
    let carried: TenantSettings
    try {
      // After onClaim the settings are applied and whatever the hook changed stays for this checkout.
      carried = this.conn.carried ?? (this.#claimed ? target : await this.#reset())
    } catch (error) {
      throw this.#settingsFailed(error)
    }
    await this.conn.client.query(sql)
    this.#inTransaction = true
    if (carried.signature === target.signature) return
    try {
      await this.conn.client.query(target.transitionFrom(carried, true))
    } catch (error) {
      throw this.#settingsFailed(error)
    }
  }

  /**
   * The raw connection has been handed to code that sends statements around `query` (a `getPool()`
   * client): what it carries afterwards is unknown, so the next checkout resets it.
   */
  forgetCarried(): void {
    this.conn.carry(undefined)
  }

  /**
   * Rewrites an error from this connection so it carries no secret of the tenant, keeping its class and
   * fields (users branch on them). A connection the registry ended (close deadline, leak) reports that.
   */
  redact(error: unknown): unknown {
    const revoked = this.revokedError
    if (revoked !== undefined && !(error instanceof HyperconnError)) return revoked
    if (this.conn.closedByRegistry && !(error instanceof HyperconnError)) {
      return new RegistryClosedError(
        `The registry was closed (registry.close() reached its timeoutMs) while this connection of service "${this.binding.key.service}", org "${this.binding.key.orgId}" was in use; its work did not complete.`,
        { cause: redactInPlace(error, this.binding.redactions) },
      )
    }
    return redactInPlace(error, this.binding.redactions)
  }

  release(destroy?: Error | boolean): void {
    if (this.#released) return
    this.#released = true
    // Taken back as a leak: the lease point freed it then.
    if (this.#revoked !== undefined) return
    this.#owner.ended(this)
    const conn = this.conn
    const client = conn.client as unknown as PgClientState
    const busy = client._activeQuery != null || (client._queryQueue?.length ?? 0) > 0
    if (destroy === true || destroy instanceof Error || this.#untrusted || conn.dead || busy) {
      this.#owner.checkIn(this, true)
      return
    }
    // A hook's set_config is invisible to `observe`; onRelease is the contract that undoes onClaim.
    if (this.#hookTouched && this.#hooks?.onRelease === undefined) conn.carry(undefined)
    const inTransaction = client._txStatus != null && client._txStatus !== 'I'
    if (!inTransaction && (this.#hooks?.onRelease === undefined || !this.#releaseHookDue)) {
      this.#owner.checkIn(this, false)
      return
    }
    void this.#settle(inTransaction)
  }

  /** Taken back from its holder (a leak): destroyed now; the holder's next statement is refused. */
  revoke(reason: LeakReason): void {
    if (this.#released || this.#revoked !== undefined) return
    this.#revoked = reason
    this.#owner.ended(this)
    this.#owner.checkIn(this, true)
  }

  /** The slow release: ROLLBACK a transaction left open, then `onRelease`; any failure destroys. */
  async #settle(inTransaction: boolean): Promise<void> {
    let destroy = false
    try {
      if (inTransaction) await this.conn.client.query('ROLLBACK')
    } catch {
      destroy = true
    }
    const onRelease = this.#releaseHookDue ? this.#hooks?.onRelease : undefined
    if (!destroy && onRelease !== undefined) {
      try {
        await onRelease(this.#hookConn(), this.binding.key)
      } catch (error) {
        destroy = true
        this.#owner.releaseHookFailed(this, error)
      }
    }
    this.#owner.checkIn(this, destroy)
  }

  #hookConn(): HookConnection {
    this.#hookConnection ??= Object.freeze({
      query: <R extends QueryResultRow = any>(text: string | QueryConfig, values?: unknown[]): Promise<QueryResult<R>> => this.#hookQuery<R>(text, values),
      processID: this.processID,
    })
    return this.#hookConnection
  }

  async #hookQuery<R extends QueryResultRow>(text: string | QueryConfig, values: unknown[] | undefined): Promise<QueryResult<R>> {
    const revoked = this.revokedError
    if (revoked !== undefined) throw revoked
    this.#hookTouched = true
    try {
      const result = await this.conn.client.query<R>(text, values)
      observe(this.conn, result)
      return result
    } catch (error) {
      this.conn.carry(undefined)
      if (!isStatementError(error)) this.#untrusted = true
      throw redactInPlace(error, this.binding.redactions)
    }
  }

  #assertUsable(): void {
    const revoked = this.revokedError
    if (revoked !== undefined) throw revoked
    if (this.#released) throw new TransactionClosedError('this connection was already released')
  }

  /** Settings never half-applied: any failure makes the connection untrusted (destroyed on release). */
  #settingsFailed(error: unknown): ConnectionError {
    this.#untrusted = true
    this.#settingsRejected = isStatementError(error)
    const { service, orgId } = this.binding.key
    const sqlState = sqlStateOf(error)
    const message = redactText(error instanceof Error ? error.message : String(error), this.binding.redactions)
    return new ConnectionError(
      `Could not apply the session settings of service "${service}", org "${orgId}" (${this.binding.settings.names.join(', ') || 'reset'}): ${message}. ` +
        "Check the setting names and values in the secret's options=-c ..., the service's tenantSettings and isolation.",
      sqlState,
      { cause: new Error(message) },
    )
  }

  /**
   * A connection whose state a caller changed is reset to its defaults first (one extra round trip).
   * RESET ALL leaves the role, session authorization, advisory locks, cursors, LISTENs and temporary
   * tables alone: those are reset explicitly. (Not DISCARD ALL: it would drop the prepared settings
   * statements pg still believes exist.)
   */
  async #reset(): Promise<TenantSettings> {
    await this.conn.client.query(RESET_SESSION)
    this.conn.carry(TenantSettings.none)
    return TenantSettings.none
  }
}

/** A hook threw: typed, with its message redacted of the tenant's secrets. */
export function hookFailed(hook: 'onClaim' | 'onRelease', binding: TenantBinding, error: unknown): unknown {
  // A settings failure is the lease point's own error, already typed and redacted.
  if (error instanceof HyperconnError) return error
  const redacted = redactInPlace(error, binding.redactions)
  const message = redactText(redacted instanceof Error ? redacted.message : String(redacted), binding.redactions)
  // A thrown non-Error (a string) may hold anything: only the redacted text is kept.
  return new LifecycleHookError(hook, binding.key.service, binding.key.orgId, message, { cause: redacted instanceof Error ? redacted : new Error(message) })
}

function poolerSession(binding: TenantBinding): UnsupportedError {
  return new UnsupportedError(
    `Service "${binding.key.service}" is behind a transaction pooler (pooler: 'transaction'): a raw client cannot carry org "${binding.key.orgId}"'s settings or hooks across statements, ` +
      'because the pooler may move it to another server connection between transactions. Use tenant.query, tenant.transaction or an adapter\'s getDb(orgId).',
  )
}

// BEGIN/COMMIT sent as plain statements would nest in (or end) the short transaction a statement runs in.
const TRANSACTION_CONTROL = /^\s*(begin|start\s+transaction|commit|end|rollback|abort|savepoint|release|prepare\s+transaction)\b/i

function refuseTransactionControl(statement: string | QueryConfig): void {
  const text = typeof statement === 'string' ? statement : statement.text
  if (TRANSACTION_CONTROL.test(text)) {
    throw new UnsupportedError(
      'Behind a transaction pooler (pooler: \'transaction\'), each statement of a tenant with settings or hooks runs in its own short transaction, so transaction control sent as SQL is refused. Use tenant.transaction(fn) or the adapter\'s transaction().',
    )
  }
}

/** The statement without its name: behind a pooler, a named prepared statement exists on one server connection only. */
function unnamed(config: string | QueryConfig): string | QueryConfig {
  if (typeof config === 'string' || config.name === undefined) return config
  const { name: _name, ...rest } = config
  return rest
}

const RESET_SESSION =
  'SET SESSION AUTHORIZATION DEFAULT; RESET ROLE; RESET ALL; SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; DISCARD TEMP; DISCARD SEQUENCES'


/** A SET/RESET/DISCARD a caller ran changes what the connection carries in ways we cannot see. */
function observe(conn: PooledConnection, result: QueryResult | QueryResult[]): void {
  if (Array.isArray(result)) {
    for (const one of result) observe(conn, one)
    return
  }
  const command = result.command
  if (command === 'SET' || command === 'RESET' || command === 'DISCARD' || command === 'LISTEN' || command === 'DECLARE') conn.carry(undefined)
}

// A session-level advisory lock outlives the checkout: the next one must release it.
const SESSION_LOCK = /advisory_(?!xact_)\w*lock/i

/** Statements whose effect outlives the checkout although their command tag does not say so. */
function holdsSessionState(config: string | QueryConfig): boolean {
  return SESSION_LOCK.test(typeof config === 'string' ? config : config.text)
}
