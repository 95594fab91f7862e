import type { Clock } from '../clock.js'
import type { ConnectionTarget } from './connection-target.js'
import type { TenantBinding } from './tenant-binding.js'

/** What the router tells the registry. */
export interface ReplicaEvents {
  down(replica: ConnectionTarget, reason: string, retryAfterMs: number): void
  up(replica: ConnectionTarget): void
}

interface ReplicaState {
  /** `host:port/database@user`: safe to show. */
  readonly label: string
  /** Skipped until then (a failure, a recovery conflict, or lag beyond maxLagMs). */
  downUntil: number
  down: boolean
  reason: string | undefined
  lagMs: number | undefined
  lagCheckedAt: number
}

/** Replay lag is measured at most this often per replica (on a connection being handed out), never per query. */
const LAG_CHECK_MS = 1_000
const MAX_STATES = 10_000

/**
 * Which replica a read goes to: round-robin over the tenant's replicas that are not skipped. A replica
 * that fails to connect, answers with a recovery conflict, or lags beyond `maxLagMs` is skipped for
 * `retryAfterMs`, then tried again; reads go to the primary meanwhile.
 */
export class ReplicaRouter {
  readonly #clock: Clock
  readonly #events: ReplicaEvents
  readonly #states = new Map<string, ReplicaState>()
  /** `host:port` of every replica seen (for health: a replica down does not make the registry unready). */
  readonly #servers = new Set<string>()
  #next = 0

  constructor(clock: Clock, events: ReplicaEvents) {
    this.#clock = clock
    this.#events = events
  }

  /** A replica of the tenant to read from now, or undefined: read from the primary. */
  pick(binding: TenantBinding): ConnectionTarget | undefined {
    const replicas = binding.replicas
    const now = this.#clock.now()
    for (const replica of replicas) if (!this.#servers.has(replica.server) && this.#servers.size < MAX_STATES) this.#servers.add(replica.server)
    for (let i = 0; i < replicas.length; i++) {
      const replica = replicas[this.#next++ % replicas.length] as ConnectionTarget
      const state = this.#states.get(replica.identity)
      if (state === undefined || state.downUntil <= now) return replica
    }
    return undefined
  }

  /** The replica failed (connect error, recovery conflict, lag): skipped for `retryAfterMs`. */
  failed(replica: ConnectionTarget, reason: string, retryAfterMs: number): void {
    const state = this.#state(replica)
    const wasDown = state.down
    state.down = true
    state.reason = reason
    state.downUntil = this.#clock.now() + retryAfterMs
    if (!wasDown) this.#events.down(replica, reason, retryAfterMs)
  }

  /** A connection to it opened (or was reused) and passed: back in rotation if it was down. */
  succeeded(replica: ConnectionTarget): void {
    const state = this.#states.get(replica.identity)
    // A checkout that picked it before another one found it failing does not bring it back early.
    if (state === undefined || !state.down || this.#clock.now() < state.downUntil) return
    state.down = false
    state.reason = undefined
    this.#events.up(replica)
  }

  /** Whether its replay lag should be measured now (only with maxLagMs). */
  lagDue(replica: ConnectionTarget): boolean {
    return this.#clock.now() - (this.#states.get(replica.identity)?.lagCheckedAt ?? -Infinity) >= LAG_CHECK_MS
  }

  lagged(replica: ConnectionTarget, lagMs: number): void {
    const state = this.#state(replica)
    state.lagMs = lagMs
    state.lagCheckedAt = this.#clock.now()
  }

  /** Servers reached as replicas. */
  get servers(): ReadonlySet<string> {
    return this.#servers
  }

  /** Plain JSON for stats(): each replica seen, by label. */
  stats(): { replica: string; down: boolean; reason: string | null; lagMs: number | null }[] {
    return [...this.#states.values()].map((s) => ({ replica: s.label, down: s.down, reason: s.reason ?? null, lagMs: s.lagMs ?? null }))
  }

  #state(replica: ConnectionTarget): ReplicaState {
    let state = this.#states.get(replica.identity)
    if (state === undefined) {
      if (this.#states.size >= MAX_STATES) for (const [id, s] of this.#states) if (!s.down) this.#states.delete(id)
      state = { label: replica.label, downUntil: 0, down: false, reason: undefined, lagMs: undefined, lagCheckedAt: -Infinity }
      this.#states.set(replica.identity, state)
      if (this.#servers.size < MAX_STATES) this.#servers.add(replica.server)
    }
    return state
  }
}

/** Replay lag in ms: 0 when everything received is replayed. */
export const REPLICA_LAG_QUERY =
  "SELECT CASE WHEN pg_last_wal_receive_lsn() IS NULL OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 ELSE COALESCE((EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000)::float8, 0) END AS lag_ms"

/** A statement a hot standby canceled because of WAL replay. */
export function isRecoveryConflict(error: unknown): boolean {
  const message = error instanceof Error ? error.message : ''
  return /conflict with recovery/i.test(message)
}
