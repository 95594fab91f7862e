import type { QueryConfig, QueryResult, QueryResultRow } from 'pg'
import { TransactionClosedError, TransactionRolledBackError } from '../hyperconn-error.js'
import { QueryQueue } from './query-queue.js'
import type { IsolationLevel, PoolLease, TenantKey, TransactionOptions } from '../tenant-types.js'

/**
 * Lifecycle of a transaction (and, for `currentTransactionInfo`, of a savepoint scope).
 * `committing` / `rolling_back`: the callback has settled; statements queued before that still run
 * (committing) or are refused (rolling_back). `broken`: the connection died or a COMMIT, ROLLBACK,
 * SAVEPOINT or RELEASE failed; the client is destroyed at the end instead of returned to the pool.
 */
export type TransactionStatus = 'active' | 'committing' | 'rolling_back' | 'committed' | 'rolled_back' | 'broken'

/** What adapters may learn about the transaction scope of a tenant in the current async context. */
export interface TransactionInfo {
  readonly service: string
  readonly orgId: string
  readonly status: TransactionStatus
  /** 0 for the transaction itself, n inside the n-th nested savepoint. */
  readonly depth: number
  /** Savepoint name (`hc_sp_<depth>`) of a nested scope, undefined at depth 0. */
  readonly savepoint: string | undefined
  /** As requested at BEGIN, or as reported by PostgreSQL once a joining caller asked; undefined = server default. */
  readonly isolationLevel: string | undefined
  /** As requested at BEGIN, or as reported by PostgreSQL once a joining caller asked; undefined = server default. */
  readonly readOnly: boolean | undefined
  /** Backend process id of the transaction's connection, for diagnostics. */
  readonly processID: number | undefined
  /** Unique per transaction in this process; savepoints share their transaction's id. */
  readonly transactionId: number
}

let nextTransactionId = 1

type QueryInput = string | QueryConfig

const ISOLATION_SQL: Readonly<Record<IsolationLevel, string>> = {
  'read uncommitted': 'READ COMMITTED',
  'read committed': 'READ COMMITTED',
  'repeatable read': 'REPEATABLE READ',
  serializable: 'SERIALIZABLE',
}

/** BEGIN with options from fixed allow-lists only: nothing caller-provided is interpolated. */
export function beginStatement(options: TransactionOptions): string {
  let sql = 'BEGIN'
  if (options.isolationLevel !== undefined) sql += ` ISOLATION LEVEL ${ISOLATION_SQL[options.isolationLevel]}`
  if (options.readOnly !== undefined) sql += options.readOnly ? ' READ ONLY' : ' READ WRITE'
  return sql
}

// redactError returns unknown; pg only ever rejects with Errors, but keep the type honest.
function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error))
}

/**
 * One PostgreSQL transaction on one leased connection: the single source of truth for its status.
 * Statements reach the client only through the queues of its scopes (`TransactionScope`), so the
 * client never runs two queries at once.
 */
export class TransactionState {
  readonly key: TenantKey
  readonly root: TransactionScope
  readonly id = nextTransactionId++
  readonly #lease: PoolLease
  #status: TransactionStatus = 'active'
  #broken: Error | undefined
  #released = false
  #isolationLevel: string | undefined
  #readOnly: boolean | undefined
  // Marks the transaction broken the moment its connection dies, not at the next statement.
  readonly #onClientError = (error: Error): void => {
    this.#break(this.#lease.redact(error))
  }

  private constructor(key: TenantKey, lease: PoolLease, options: TransactionOptions) {
    this.key = key
    this.#lease = lease
    this.#isolationLevel = options.isolationLevel
    this.#readOnly = options.readOnly
    this.root = new TransactionScope(this, undefined)
  }

  /**
   * Leases a client (`acquire`: from the pool, or the pinned connection) and runs BEGIN (with the tenant's
   * settings); a failed BEGIN destroys the client and rethrows.
   */
  static async begin(acquire: () => Promise<PoolLease>, key: TenantKey, options: TransactionOptions): Promise<TransactionState> {
    const lease = await acquire()
    const state = new TransactionState(key, lease, options)
    lease.client.on('error', state.#onClientError)
    let begun = false
    try {
      await lease.begin(beginStatement(options))
      begun = true
    } catch (error) {
      state.#break(lease.redact(error))
      throw state.closedError()
    } finally {
      if (!begun) state.#release()
    }
    return state
  }

  get status(): TransactionStatus {
    return this.#status
  }

  get isolationLevel(): string | undefined {
    return this.#isolationLevel
  }

  get readOnly(): boolean | undefined {
    return this.#readOnly
  }

  get processID(): number | undefined {
    return this.#lease.processID
  }

  /** Queued statements may still start: the callback is running, or it returned and COMMIT is pending. */
  get runnable(): boolean {
    return this.#status === 'active' || this.#status === 'committing'
  }

  /** The error for work that arrives too late: the connection's error if it broke, else TransactionClosedError. */
  closedError(): Error {
    if (this.#broken !== undefined) return this.#broken
    return new TransactionClosedError(
      `the transaction for service "${this.key.service}", org "${this.key.orgId}" is ${this.#status.replace('_', ' ')}`,
    )
  }

  redact(error: unknown): unknown {
    return this.#lease.redact(error)
  }

  /** Sends one statement. Only ever called from a queue task, so never concurrently. QueryConfig passes untouched. */
  exec<R extends QueryResultRow>(config: QueryInput, values: unknown[] | undefined): Promise<QueryResult<R>> {
    if (!this.runnable) return Promise.reject(this.closedError())
    return this.#lease.query<R>(config, values)
  }

  /** SAVEPOINT / RELEASE / ROLLBACK TO: if one fails the connection is no longer trusted (destroyed at the end). */
  async control(sql: string): Promise<void> {
    try {
      await this.#lease.client.query(sql)
    } catch (error) {
      this.#break(this.redact(error))
      throw this.closedError()
    }
  }

  /** Learns the isolation level from PostgreSQL when BEGIN used the server default. */
  async isolationLevelVia(scope: TransactionScope): Promise<string | undefined> {
    if (this.#isolationLevel === undefined) {
      const result = await scope.query<{ transaction_isolation: string }>('SHOW transaction_isolation')
      this.#isolationLevel = result.rows[0]?.transaction_isolation
    }
    return this.#isolationLevel
  }

  /** Learns the access mode from PostgreSQL when BEGIN used the server default. */
  async readOnlyVia(scope: TransactionScope): Promise<boolean | undefined> {
    if (this.#readOnly === undefined) {
      const result = await scope.query<{ transaction_read_only: string }>('SHOW transaction_read_only')
      const value = result.rows[0]?.transaction_read_only
      this.#readOnly = value === undefined ? undefined : value === 'on'
    }
    return this.#readOnly
  }

  /**
   * The callback returned. Statements queued before now still run, then COMMIT. Rejects (never resolves)
   * when a statement failed (TransactionRolledBackError, ROLLBACK is sent), when PostgreSQL answers
   * COMMIT with ROLLBACK, or when the connection broke.
   */
  async commit(): Promise<void> {
    if (this.#status === 'active') this.#status = 'committing'
    this.root.beginEnding()
    try {
      await this.root.queue.run(() => this.#commitNow())
    } finally {
      this.root.markEnded()
      this.#release()
    }
  }

  async #commitNow(): Promise<void> {
    if (this.#status === 'broken') throw this.closedError()
    const failure = this.root.failure
    if (failure !== undefined) {
      // PostgreSQL would answer COMMIT with ROLLBACK anyway; say so explicitly.
      await this.control('ROLLBACK')
      this.#status = 'rolled_back'
      throw new TransactionRolledBackError({ cause: failure.error })
    }
    let result: QueryResult
    try {
      result = await this.#lease.client.query('COMMIT')
    } catch (error) {
      this.#break(this.redact(error))
      throw this.closedError()
    }
    if (result.command !== 'COMMIT') {
      this.#status = 'rolled_back'
      throw new TransactionRolledBackError()
    }
    this.#status = 'committed'
  }

  /** The callback threw. Statements not yet started are refused; ROLLBACK unless the connection broke. Never rejects. */
  async rollback(): Promise<void> {
    if (this.#status === 'active' || this.#status === 'committing') this.#status = 'rolling_back'
    this.root.beginAborting()
    try {
      await this.root.queue.run(async () => {
        if (this.#status !== 'rolling_back') return
        try {
          await this.#lease.client.query('ROLLBACK')
          this.#status = 'rolled_back'
        } catch (error) {
          this.#break(this.redact(error))
        }
      })
    } finally {
      this.root.markEnded()
      this.#release()
    }
  }

  #break(error: unknown): void {
    if (this.#status === 'committed' || this.#status === 'rolled_back' || this.#status === 'broken') return
    this.#status = 'broken'
    this.#broken = asError(error)
  }

  // Exactly once: remove our listener, then return the client, or destroy it if it cannot be trusted.
  #release(): void {
    if (this.#released) return
    this.#released = true
    this.#lease.client.removeListener('error', this.#onClientError)
    this.#lease.release(this.#broken)
  }
}

type ScopePhase = 'open' | 'ending' | 'aborting' | 'ended'

/**
 * Where queries of one async frame run: the transaction itself (depth 0) or a savepoint inside it.
 * Each scope has its own FIFO queue; a savepoint scope holds its parent's queue while it is open, so
 * the scopes form a stack and only the innermost open one reaches the connection.
 */
export class TransactionScope {
  readonly kind = 'transaction'
  readonly tx: TransactionState
  readonly parent: TransactionScope | undefined
  readonly depth: number
  readonly savepoint: string | undefined
  readonly queue = new QueryQueue()
  #phase: ScopePhase = 'open'
  #failure: { readonly error: unknown } | undefined
  #outcome: 'committed' | 'rolled_back' | undefined

  constructor(tx: TransactionState, parent: TransactionScope | undefined) {
    this.tx = tx
    this.parent = parent
    this.depth = parent === undefined ? 0 : parent.depth + 1
    // Names only need to be unique along the open stack: siblings are serialised by the parent's queue.
    this.savepoint = parent === undefined ? undefined : `hc_sp_${this.depth}`
  }

  get key(): TenantKey {
    return this.tx.key
  }

  /**
   * New work may be queued: the callbacks of this scope and of every enclosing scope are still
   * running. Once a callback returns, work from its frame or from scopes it left behind is refused.
   */
  get active(): boolean {
    if (this.#phase !== 'open') return false
    return this.parent === undefined ? this.tx.status === 'active' : this.parent.active
  }

  /** Work queued while the scope was active may still start: no scope on the stack is rolling back. */
  get startable(): boolean {
    if (this.#phase !== 'open' && this.#phase !== 'ending') return false
    return this.parent === undefined ? this.tx.runnable : this.parent.startable
  }

  /** First failure seen in this scope: a failed statement, or a joined callback that threw. */
  get failure(): { readonly error: unknown } | undefined {
    return this.#failure
  }

  get status(): TransactionStatus {
    if (this.parent === undefined || this.tx.status === 'broken') return this.tx.status
    if (this.#outcome !== undefined) return this.#outcome
    if (this.#phase === 'ending') return 'committing'
    if (this.#phase === 'aborting') return 'rolling_back'
    return this.tx.status
  }

  /** Marks the scope as failed: the transaction (or savepoint) will be rolled back, never committed. */
  markFailed(error: unknown): void {
    this.#failure ??= { error }
  }

  closedError(): Error {
    if (this.parent === undefined || this.tx.status !== 'active') return this.tx.closedError()
    return new TransactionClosedError(
      `the nested transaction (savepoint ${this.savepoint}) for service "${this.key.service}", org "${this.key.orgId}", or the scope around it, has already ended`,
    )
  }

  assertActive(): void {
    if (!this.active) throw this.closedError()
  }

  /** Runs a statement in this scope's queue. Rejects with TransactionClosedError once the scope ended; never touches the connection then. */
  query<R extends QueryResultRow = any>(config: QueryInput, values?: unknown[]): Promise<QueryResult<R>> {
    if (!this.active) return Promise.reject(this.closedError())
    return this.queue.run(() => this.#execute<R>(config, values))
  }

  async #execute<R extends QueryResultRow>(config: QueryInput, values: unknown[] | undefined): Promise<QueryResult<R>> {
    if (!this.startable) throw this.closedError()
    try {
      return await this.tx.exec<R>(config, values)
    } catch (error) {
      const redacted = this.tx.redact(error)
      // PostgreSQL aborts the (sub)transaction on any error; remember it even if the caller swallows it.
      this.markFailed(redacted)
      throw redacted
    }
  }

  /**
   * Opens a savepoint below this scope. The caller holds this scope's queue. Refused once this scope's
   * callback returned: the nested callback could not run a single query anyway.
   */
  async openChild(): Promise<TransactionScope> {
    if (!this.active) throw this.closedError()
    const child = new TransactionScope(this.tx, this)
    await this.tx.control(`SAVEPOINT ${child.savepoint}`)
    return child
  }

  /**
   * Ends a savepoint scope whose callback returned: RELEASE after its queued statements, or, if one of
   * them failed, ROLLBACK TO + RELEASE and reject with TransactionRolledBackError.
   */
  async release(): Promise<void> {
    this.#phase = 'ending'
    try {
      await this.queue.run(async () => {
        if (!this.tx.runnable) throw this.tx.closedError()
        const failure = this.#failure
        if (failure !== undefined) {
          await this.tx.control(`ROLLBACK TO SAVEPOINT ${this.savepoint}; RELEASE SAVEPOINT ${this.savepoint}`)
          this.#outcome = 'rolled_back'
          throw new TransactionRolledBackError({ cause: failure.error })
        }
        await this.tx.control(`RELEASE SAVEPOINT ${this.savepoint}`)
        this.#outcome = 'committed'
      })
    } finally {
      this.#phase = 'ended'
    }
  }

  /** Ends a savepoint scope whose callback threw: ROLLBACK TO + RELEASE. Never rejects (a failure breaks the transaction). */
  async abort(): Promise<void> {
    this.#phase = 'aborting'
    try {
      await this.queue.run(async () => {
        if (!this.tx.runnable) return
        await this.tx.control(`ROLLBACK TO SAVEPOINT ${this.savepoint}; RELEASE SAVEPOINT ${this.savepoint}`)
      })
    } catch {
      // control() marked the transaction broken; the outer transaction reports it.
    } finally {
      this.#outcome = 'rolled_back'
      this.#phase = 'ended'
    }
  }

  /** Root scope only: the callback returned, COMMIT is queued. */
  beginEnding(): void {
    if (this.#phase === 'open') this.#phase = 'ending'
  }

  /** Root scope only: the callback threw, ROLLBACK is queued; statements not yet started are refused. */
  beginAborting(): void {
    this.#phase = 'aborting'
  }

  markEnded(): void {
    this.#phase = 'ended'
  }

  info(): TransactionInfo {
    return {
      service: this.key.service,
      orgId: this.key.orgId,
      status: this.status,
      depth: this.depth,
      savepoint: this.savepoint,
      isolationLevel: this.tx.isolationLevel,
      readOnly: this.tx.readOnly,
      processID: this.tx.processID,
      transactionId: this.tx.id,
    }
  }
}
