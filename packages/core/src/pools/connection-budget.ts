/**
 * How many connections this registry may open to one server (`host:port`), across every pool and
 * service, connections of draining pools included. Counts what is open or opening; the lease point asks
 * `hasRoom()` before opening one, and pools report every connection they open and close here.
 */
export class ConnectionBudget {
  readonly server: string
  /** undefined while 'auto' has not been read from the server yet: one connection may open to read it. */
  #max: number | undefined
  #open = 0
  #idle = 0
  #peak = 0
  readonly #onRoom: () => void

  constructor(server: string, max: number | undefined, onRoom: () => void) {
    this.server = server
    this.#max = max
    this.#onRoom = onRoom
  }

  get max(): number | undefined {
    return this.#max
  }

  get open(): number {
    return this.#open
  }

  /** Most connections open at once since creation. */
  get peak(): number {
    return this.#peak
  }

  /** True while `connections.max: 'auto'` still needs reading from the server. */
  get discovering(): boolean {
    return this.#max === undefined
  }

  hasRoom(): boolean {
    return this.#open < (this.#max ?? 1)
  }

  /** Idle connections across the server's pools. */
  get idle(): number {
    return this.#idle
  }

  /** Pools report connections entering and leaving their idle lists. */
  idleChanged(delta: 1 | -1): void {
    this.#idle += delta
  }

  /** 'auto' resolved (or fell back): waiters may now use the rest of the budget. */
  setMax(max: number): void {
    this.#max = max
    this.#onRoom()
  }

  opened(): void {
    this.#open++
    if (this.#open > this.#peak) this.#peak = this.#open
  }

  /** A connection is gone (closed, failed to open, or died): its slot is free for a waiter. */
  closed(): void {
    this.#open--
    this.#onRoom()
  }
}

/** `connections.max: 'auto'`: floor(0.8 × (max_connections − reserved) / instances), at least 1. */
export function autoBudget(maxConnections: number, reserved: number, instances: number): number {
  return Math.max(1, Math.floor((0.8 * (maxConnections - reserved)) / instances))
}

export const AUTO_BUDGET_QUERY =
  "select current_setting('max_connections')::int as max, current_setting('superuser_reserved_connections')::int " +
  "+ coalesce(nullif(current_setting('reserved_connections', true), ''), '0')::int as reserved"
