import { createDrizzleAdapter } from '@hyperconn/drizzle'
import { createKnexAdapter } from '@hyperconn/knex'
import { createKyselyAdapter } from '@hyperconn/kysely'
import type { Registry } from '@hyperconn/core'
import type { FastifyInstance } from 'fastify'
import { AuditRepository } from './audit-repository.js'
import { createHttpServer } from './http-server.js'
import { InventoryRepository } from './inventory-repository.js'
import type { InventoryDatabase } from './inventory-repository.js'
import { OrdersRepository } from './orders-repository.js'
import { ordersSchema } from './orders-table.js'
import { PricesRepository } from './prices-repository.js'
import type { PricingDatabase } from './prices-repository.js'
import { ReviewsRepository } from './reviews-repository.js'
import { reviewsSchema } from './reviews-table.js'
import { PRICING_SERVICE, REVIEWS_SERVICE, SHOP_SERVICE } from './shop-registry.js'
import { ShopService } from './shop-service.js'
import type { ShopTelemetry } from './shop-telemetry.js'

export interface ShopAppOptions {
  /** Owned by the caller, who closes it after the app (the app only borrows its pools). */
  registry: Registry
  /** Served at `GET /metrics` (Prometheus format); without it the app has no /metrics. Owned by the caller too. */
  telemetry?: Pick<ShopTelemetry, 'scrape'>
  logger?: boolean
}

export interface ShopApp {
  readonly http: FastifyInstance
  readonly shop: ShopService
  /** Stops the HTTP server; the registry stays open. Idempotent. */
  close(): Promise<void>
}

/**
 * Composition root: ORM adapters on one registry → repositories → service → HTTP. Each shop has its own
 * database (three ORMs in one transaction); the stores share one database: prices in a schema per store
 * (Kysely), reviews in one table behind row-level security (Drizzle).
 */
export function createShopApp(options: ShopAppOptions): ShopApp {
  const { registry } = options
  const drizzle = createDrizzleAdapter(registry, { service: SHOP_SERVICE, schema: ordersSchema })
  const kysely = createKyselyAdapter<InventoryDatabase>(registry, { service: SHOP_SERVICE })
  const knex = createKnexAdapter(registry, { service: SHOP_SERVICE })
  const pricing = createKyselyAdapter<PricingDatabase>(registry, { service: PRICING_SERVICE })
  const reviews = createDrizzleAdapter(registry, { service: REVIEWS_SERVICE, schema: reviewsSchema })

  const shop = new ShopService({
    registry,
    orders: new OrdersRepository(drizzle.getDb),
    inventory: new InventoryRepository(kysely.getDb),
    audit: new AuditRepository(knex.getDb),
    prices: new PricesRepository(pricing.getDb),
    reviews: new ReviewsRepository(reviews.getDb),
  })
  const http = createHttpServer({
    shop,
    registry,
    logger: options.logger ?? false,
    ...(options.telemetry === undefined ? {} : { metrics: options.telemetry.scrape }),
  })
  let closing: Promise<void> | undefined
  return {
    http,
    shop,
    close: () => (closing ??= http.close()),
  }
}
