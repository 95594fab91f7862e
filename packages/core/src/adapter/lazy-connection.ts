import type { TenantConnection } from '../tenant-types.js'

/**
 * A tenant connection an adapter acquires on first need: until then, statements it knows are reads can go
 * out with `tenant.query(…, { read: true })` (a replica may serve them). `get()` acquires once (a failed
 * acquire may be tried again); `release(giveBack)` gives the handle back now, or as soon as it arrives.
 */
export class LazyConnection {
  readonly #acquire: () => Promise<TenantConnection>
  #connection: TenantConnection | undefined
  #acquiring: Promise<TenantConnection> | undefined
  #giveBack: ((connection: TenantConnection) => void) | undefined

  /** `connection`: one acquired already (a transaction's); otherwise `acquire` runs on the first `get()`. */
  constructor(acquire: () => Promise<TenantConnection>, connection?: TenantConnection) {
    this.#acquire = acquire
    if (connection !== undefined) {
      this.#connection = connection
      this.#acquiring = Promise.resolve(connection)
    }
  }

  /** The handle once it arrived. */
  get current(): TenantConnection | undefined {
    return this.#connection
  }

  /** Acquired or being acquired: every later statement must run on it, in order. */
  get started(): boolean {
    return this.#acquiring !== undefined
  }

  /** The handle: acquired on the first call, the same promise afterwards. */
  get(): Promise<TenantConnection> {
    if (this.#acquiring !== undefined) return this.#acquiring
    const acquiring = this.#acquire().then(
      (connection) => {
        this.#connection = connection
        // Released while acquiring: give it back right away rather than keep it leased.
        this.#giveBack?.(connection)
        return connection
      },
      (error: unknown) => {
        if (this.#acquiring === acquiring) this.#acquiring = undefined
        throw error
      },
    )
    this.#acquiring = acquiring
    return acquiring
  }

  /** Idempotent. `giveBack` (default: `release()`) runs on the handle now, or once it arrives. */
  release(giveBack: (connection: TenantConnection) => void = (connection) => connection.release()): void {
    if (this.#giveBack !== undefined) return
    this.#giveBack = giveBack
    if (this.#connection !== undefined) giveBack(this.#connection)
  }
}
