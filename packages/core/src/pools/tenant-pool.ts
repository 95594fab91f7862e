import { inspect } from 'node:util'
import pg from 'pg'
import type { PoolClient, PoolConfig } from 'pg'
import type { TenantKey } from '../tenant-types.js'

type ConnectCallback = (err: Error | undefined, client: PoolClient | undefined, done: (release?: unknown) => void) => void

/**
 * The `pg.Pool` handed to callers. The registry owns its lifetime:
 * - `end()` from outside is a no-op, so an ORM's `destroy()` or a stray `pool.end()` can't end a shared pool;
 * - once the registry retires it (eviction, rotation), `connect()` and therefore `query()` are routed to the
 *   tenant's current pool, so a caller still holding this object never sees "Cannot use a pool after calling end".
 */
export class TenantPool extends pg.Pool {
  readonly tenant: TenantKey
  #retired = false
  #ended: Promise<void> | undefined
  readonly #reroute: () => Promise<PoolClient>

  constructor(tenant: TenantKey, config: PoolConfig, reroute: () => Promise<PoolClient>) {
    super(config)
    this.tenant = tenant
    this.#reroute = reroute
  }

  get retired(): boolean {
    return this.#retired
  }

  /** Stop routing new work here; `connect()` goes to the tenant's current pool from now on. */
  retire(): void {
    this.#retired = true
  }

  override connect(): Promise<PoolClient>
  override connect(callback: ConnectCallback): void
  override connect(callback?: ConnectCallback): Promise<PoolClient> | void {
    if (!this.#retired) return callback ? super.connect(callback) : super.connect()
    const client = this.#reroute()
    if (!callback) return client
    client.then(
      (c) => callback(undefined, c, (err?: unknown) => c.release(err as Error | boolean | undefined)),
      (err: Error) => callback(err, undefined, () => {}),
    )
  }

  /** Ending is the registry's job (`registry.evict()` / `registry.close()`); this is deliberately a no-op. */
  override end(): Promise<void>
  override end(callback: () => void): void
  override end(callback?: () => void): Promise<void> | void {
    if (callback) {
      queueMicrotask(callback)
      return
    }
    return Promise.resolve()
  }

  /** Really end the pool: waits for checked-out clients to come back (pg semantics). Idempotent. */
  shutdown(): Promise<void> {
    this.#retired = true
    this.#ended ??= super.end()
    return this.#ended
  }

  toJSON(): object {
    return {
      service: this.tenant.service,
      orgId: this.tenant.orgId,
      totalCount: this.totalCount,
      idleCount: this.idleCount,
      waitingCount: this.waitingCount,
    }
  }

  [inspect.custom](): string {
    return `TenantPool ${inspect(this.toJSON())}`
  }
}
