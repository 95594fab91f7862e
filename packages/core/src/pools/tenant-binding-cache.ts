import type { ClientConfig } from 'pg'
import type { Clock } from '../clock.js'
import { HyperconnError } from '../hyperconn-error.js'
import type { ResolvedService } from '../registry/registry-options.js'
import type { SecretBundle } from '../secrets/secret-bundle.js'
import type { SecretCache } from '../secrets/secret-cache.js'
import type { TenantKey } from '../tenant-types.js'
import type { ConnectionTarget } from './connection-target.js'
import { bindTenant } from './tenant-binding.js'
import type { TenantBinding } from './tenant-binding.js'

export interface BindingCacheLimits {
  /** Most cached tenant bindings; the least recently used go first. */
  readonly maxTenants: number
  /** A binding unused for this long is dropped by the sweep. */
  readonly idleTtlMs: number
}

export interface BindingResolution {
  readonly secrets: SecretCache
  readonly secretName: (orgId: string) => string
  readonly secretKey: (service: string) => string
  readonly service: (name: string) => ResolvedService
  readonly clientBase: Readonly<ClientConfig>
  /** A tenant's secret could not be turned into a binding (not found, source down, malformed). */
  readonly onError: (secretName: string, error: HyperconnError) => void
}

const MAX_INTERNED_TARGETS = 1_024
const TOUCH_INTERVAL_MS = 1_000

interface Entry {
  readonly binding: TenantBinding
  lastUsedAt: number
}

/**
 * Tenant bindings by (service, orgId) in nested maps (no key joining), least recently used first.
 * Only a successful resolution is cached: an unknown or failing org takes no slot. A binding whose
 * secret went stale keeps serving while one refresh runs in the background (stale-while-revalidate).
 */
export class TenantBindingCache {
  readonly #entries = new Map<string, Map<string, Entry>>()
  readonly #inFlight = new Map<string, Map<string, Promise<TenantBinding>>>()
  /** One object per connection target, most recently bound last; bounded, a miss only costs memory. */
  readonly #targets = new Map<string, ConnectionTarget>()
  readonly #intern = (target: ConnectionTarget): ConnectionTarget => {
    const known = this.#targets.get(target.identity)
    if (known !== undefined) return known
    this.#targets.set(target.identity, target)
    if (this.#targets.size > MAX_INTERNED_TARGETS) this.#targets.delete(this.#targets.keys().next().value as string)
    return target
  }
  readonly #limits: BindingCacheLimits
  readonly #resolution: BindingResolution
  readonly #clock: Clock
  #size = 0

  constructor(limits: BindingCacheLimits, resolution: BindingResolution, clock: Clock) {
    this.#limits = limits
    this.#resolution = resolution
    this.#clock = clock
  }

  get size(): number {
    return this.#size
  }

  get resolving(): number {
    let n = 0
    for (const byOrg of this.#inFlight.values()) n += byOrg.size
    return n
  }

  /** Hot path: the cached binding, marked recently used; a stale secret is refreshed in the background. */
  peek(key: TenantKey): TenantBinding | undefined {
    const byOrg = this.#entries.get(key.service)
    const entry = byOrg?.get(key.orgId)
    if (entry === undefined || byOrg === undefined) return undefined
    const now = this.#clock.now()
    // Recency to the second is enough for LRU and idle TTL, and spares a Map re-insert per query.
    if (now - entry.lastUsedAt >= TOUCH_INTERVAL_MS) {
      byOrg.delete(key.orgId)
      byOrg.set(key.orgId, entry)
      entry.lastUsedAt = now
    }
    if (!this.#resolution.secrets.isFresh(entry.binding.secretName)) void this.#resolveShared(key).catch(() => {})
    return entry.binding
  }

  /** The cached binding, or one resolved once for all concurrent callers (failures are not cached). */
  get(key: TenantKey): TenantBinding | Promise<TenantBinding> {
    return this.peek(key) ?? this.#resolveShared(key)
  }

  /** Forget `binding` if it is still the cached one (its credentials were refused). */
  invalidate(binding: TenantBinding): void {
    const byOrg = this.#entries.get(binding.key.service)
    if (byOrg?.get(binding.key.orgId)?.binding !== binding) return
    this.#delete(binding.key.service, byOrg, binding.key.orgId)
  }

  delete(key: TenantKey): TenantBinding | undefined {
    const byOrg = this.#entries.get(key.service)
    const entry = byOrg?.get(key.orgId)
    if (entry === undefined || byOrg === undefined) return undefined
    this.#delete(key.service, byOrg, key.orgId)
    return entry.binding
  }

  bindings(): TenantBinding[] {
    const all: TenantBinding[] = []
    for (const byOrg of this.#entries.values()) for (const entry of byOrg.values()) all.push(entry.binding)
    return all
  }

  /** Drops bindings unused for `idleTtlMs`; each map is in recency order, so it stops at the first recent one. */
  sweep(): void {
    const cutoff = this.#clock.now() - this.#limits.idleTtlMs
    for (const [service, byOrg] of [...this.#entries]) {
      for (const [orgId, entry] of byOrg) {
        if (entry.lastUsedAt > cutoff) break
        this.#delete(service, byOrg, orgId)
      }
    }
  }

  clear(): void {
    this.#entries.clear()
    this.#targets.clear()
    this.#size = 0
  }

  #resolveShared(key: TenantKey): Promise<TenantBinding> {
    let byOrg = this.#inFlight.get(key.service)
    const pending = byOrg?.get(key.orgId)
    if (pending !== undefined) return pending
    if (byOrg === undefined) this.#inFlight.set(key.service, (byOrg = new Map()))
    const inFlight = byOrg
    const promise = this.#resolve(key).finally(() => {
      inFlight.delete(key.orgId)
      if (inFlight.size === 0 && this.#inFlight.get(key.service) === inFlight) this.#inFlight.delete(key.service)
    })
    inFlight.set(key.orgId, promise)
    return promise
  }

  async #resolve(key: TenantKey): Promise<TenantBinding> {
    const { secrets, onError } = this.#resolution
    const secretName = this.#resolution.secretName(key.orgId)
    let bundle: SecretBundle
    try {
      bundle = await secrets.get(secretName)
    } catch (error) {
      if (error instanceof HyperconnError) {
        onError(secretName, error)
        // The secret was deleted: the tenant is gone, not merely unreachable.
        if (error.code === 'HC_SECRET_NOT_FOUND') this.delete(key)
      }
      throw error
    }
    const cached = this.#entries.get(key.service)?.get(key.orgId)
    if (cached !== undefined && cached.binding.fingerprint === bundle.fingerprint) return cached.binding
    let binding: TenantBinding
    try {
      binding = bindTenant(
        key,
        bundle,
        this.#resolution.service(key.service),
        this.#resolution.secretKey(key.service),
        this.#resolution.clientBase,
        this.#intern,
      )
    } catch (error) {
      if (error instanceof HyperconnError) {
        onError(secretName, error)
        // A secret that parses as JSON but is unusable must not stay cached for its TTL: a fix has to take
        // effect on the next request. A warm tenant keeps its last good binding meanwhile.
        if (error.code === 'HC_SECRET_FORMAT' && cached === undefined) secrets.invalidate(secretName, bundle.fingerprint)
      }
      if (cached !== undefined) return cached.binding
      throw error
    }
    this.#store(binding)
    return binding
  }

  #store(binding: TenantBinding): void {
    const { service, orgId } = binding.key
    let byOrg = this.#entries.get(service)
    if (byOrg === undefined) this.#entries.set(service, (byOrg = new Map()))
    if (byOrg.delete(orgId)) this.#size--
    byOrg.set(orgId, { binding, lastUsedAt: this.#clock.now() })
    this.#size++
    while (this.#size > this.#limits.maxTenants) this.#evictOldest()
  }

  /** The least recently used binding across services: each service map's first entry is its oldest. */
  #evictOldest(): void {
    let victim: [string, Map<string, Entry>, string, number] | undefined
    for (const [service, byOrg] of this.#entries) {
      for (const [orgId, entry] of byOrg) {
        if (victim === undefined || entry.lastUsedAt < victim[3]) victim = [service, byOrg, orgId, entry.lastUsedAt]
        break
      }
    }
    if (victim === undefined) return
    this.#delete(victim[0], victim[1], victim[2])
  }

  #delete(service: string, byOrg: Map<string, Entry>, orgId: string): void {
    if (!byOrg.delete(orgId)) return
    this.#size--
    if (byOrg.size === 0) this.#entries.delete(service)
  }
}
