import type { AuditEntry } from './audit-repository.js'
import type { StockItem } from './inventory-repository.js'
import type { Order } from './orders-table.js'
import type { Price } from './prices-repository.js'
import type { NewReview } from './reviews-repository.js'
import type { Review } from './reviews-table.js'
import type { PlacedOrder, PlaceOrderInput } from './shop-service.js'
import { TENANT_HEADER } from './tenant-header.js'
import type { HealthReport, RegistryStats } from '@hyperconn/core'

export interface ShopResponse<T> {
  status: number
  /** The JSON body: `T` on success, `{ error, message }` otherwise (check `status` first). */
  body: T
}

/** JSON-over-fetch client for the shop's HTTP API; the demo drives the service through it. */
export interface ShopClient {
  health(): Promise<ShopResponse<{ status: string }>>
  stats(): Promise<ShopResponse<RegistryStats>>
  /** Liveness. */
  healthz(): Promise<ShopResponse<{ ok: boolean }>>
  /** Readiness: `registry.health()`, 200 when `ok`, 503 otherwise. */
  readyz(): Promise<ShopResponse<HealthReport>>
  /** Prometheus' text format (the body is the text, not JSON). */
  metrics(): Promise<ShopResponse<string>>
  /** `orgId` undefined sends no tenant header at all. */
  placeOrder(orgId: string | undefined, input: PlaceOrderInput): Promise<ShopResponse<PlacedOrder & ErrorBody>>
  orders(orgId: string | undefined): Promise<ShopResponse<{ orders: Order[] } & ErrorBody>>
  stock(orgId: string | undefined): Promise<ShopResponse<{ stock: StockItem[] } & ErrorBody>>
  audit(orgId: string | undefined): Promise<ShopResponse<{ entries: AuditEntry[] } & ErrorBody>>
  prices(orgId: string | undefined): Promise<ShopResponse<{ prices: Price[] } & ErrorBody>>
  reviews(orgId: string | undefined): Promise<ShopResponse<{ reviews: Review[] } & ErrorBody>>
  addReview(orgId: string | undefined, review: NewReview): Promise<ShopResponse<{ review: Review } & ErrorBody>>
}

export interface ErrorBody {
  error?: string
  message?: string
}

export function createShopClient(baseUrl: string): ShopClient {
  const call = async <T>(method: 'GET' | 'POST', path: string, orgId?: string, body?: unknown): Promise<ShopResponse<T>> => {
    const headers: Record<string, string> = {}
    if (orgId !== undefined) headers[TENANT_HEADER] = orgId
    if (body !== undefined) headers['content-type'] = 'application/json'
    const response = await fetch(new URL(path, baseUrl), {
      method,
      headers,
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    })
    return { status: response.status, body: (await response.json()) as T }
  }
  return {
    health: () => call('GET', '/health'),
    stats: () => call('GET', '/stats'),
    healthz: () => call('GET', '/healthz'),
    readyz: () => call('GET', '/readyz'),
    metrics: async () => {
      const response = await fetch(new URL('/metrics', baseUrl))
      return { status: response.status, body: await response.text() }
    },
    placeOrder: (orgId, input) => call('POST', '/orders', orgId, input),
    orders: (orgId) => call('GET', '/orders', orgId),
    stock: (orgId) => call('GET', '/stock', orgId),
    audit: (orgId) => call('GET', '/audit', orgId),
    prices: (orgId) => call('GET', '/prices', orgId),
    reviews: (orgId) => call('GET', '/reviews', orgId),
    addReview: (orgId, review) => call('POST', '/reviews', orgId, review),
  }
}
