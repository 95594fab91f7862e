import type { Registry } from '@hyperconn/core'
import type { AuditEntry, AuditRepository } from './audit-repository.js'
import type { InventoryRepository, StockItem } from './inventory-repository.js'
import type { Order, OrderItem } from './orders-table.js'
import type { OrdersRepository } from './orders-repository.js'
import type { Price, PricesRepository } from './prices-repository.js'
import type { NewReview, ReviewsRepository } from './reviews-repository.js'
import type { Review } from './reviews-table.js'
import { SHOP_SERVICE } from './shop-registry.js'

export interface PlaceOrderInput {
  customer: string
  items: readonly OrderItem[]
}

export interface PlacedOrder {
  order: Order
  /** Stock left of each ordered SKU after this order. */
  remaining: Record<string, number>
  auditId: number
}

export interface ShopServiceDependencies {
  registry: Registry
  orders: OrdersRepository
  inventory: InventoryRepository
  audit: AuditRepository
  /** Stores' price lists: a schema per store in the stores database. */
  prices: PricesRepository
  /** Stores' reviews: one table for all stores, behind row-level security. */
  reviews: ReviewsRepository
}

/** Use cases of the shop. Knows tenants and transactions, not HTTP. */
export class ShopService {
  readonly #registry: Registry
  readonly #orders: OrdersRepository
  readonly #inventory: InventoryRepository
  readonly #audit: AuditRepository
  readonly #prices: PricesRepository
  readonly #reviews: ReviewsRepository

  constructor(dependencies: ShopServiceDependencies) {
    this.#registry = dependencies.registry
    this.#orders = dependencies.orders
    this.#inventory = dependencies.inventory
    this.#audit = dependencies.audit
    this.#prices = dependencies.prices
    this.#reviews = dependencies.reviews
  }

  /**
   * One PostgreSQL transaction across three ORMs: Drizzle inserts the order, Kysely takes the stock, Knex
   * writes the audit entry. The repositories only call getDb(orgId); the transaction context reaches
   * them through AsyncLocalStorage. Any throw (insufficient stock, a failed insert, a failed COMMIT)
   * rolls back all three writes.
   */
  placeOrder(orgId: string, input: PlaceOrderInput): Promise<PlacedOrder> {
    return this.#registry.tenant(orgId, SHOP_SERVICE).transaction(async () => {
      const order = await this.#orders.create(orgId, input.customer, input.items)
      const remaining: Record<string, number> = {}
      // Same lock order (by SKU) in every transaction, so two concurrent orders cannot deadlock.
      for (const item of [...input.items].sort((a, b) => a.sku.localeCompare(b.sku))) {
        remaining[item.sku] = await this.#inventory.take(orgId, item.sku, item.quantity)
      }
      const auditId = await this.#audit.record(orgId, 'order.placed', order.id, {
        customer: input.customer,
        items: input.items,
      })
      return { order, remaining, auditId }
    })
  }

  listOrders(orgId: string): Promise<Order[]> {
    return this.#orders.list(orgId)
  }

  listStock(orgId: string): Promise<StockItem[]> {
    return this.#inventory.list(orgId)
  }

  listAudit(orgId: string): Promise<AuditEntry[]> {
    return this.#audit.list(orgId)
  }

  listPrices(orgId: string): Promise<Price[]> {
    return this.#prices.list(orgId)
  }

  listReviews(orgId: string): Promise<Review[]> {
    return this.#reviews.list(orgId)
  }

  addReview(orgId: string, review: NewReview): Promise<Review> {
    return this.#reviews.add(orgId, review)
  }

  /** Throws core's InvalidTenantIdError for a malformed org id. No I/O: no secret lookup, no pool. */
  assertTenantId(orgId: string): void {
    this.#registry.tenant(orgId, SHOP_SERVICE)
  }
}
