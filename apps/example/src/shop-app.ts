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
import { SHOP_SERVICE } from './shop-registry.js'
import { ShopService } from './shop-service.js'

export interface ShopAppOptions {
  /** Owned by the caller, who closes it after the app (the app only borrows its pools). */
  registry: Registry
  logger?: boolean
}

export interface ShopApp {
  readonly http: FastifyInstance
  readonly shop: ShopService
  /** Stops the HTTP server; the registry stays open. Idempotent. */
  close(): Promise<void>
}

/** Composition root: three ORM adapters on one registry → repositories → service → HTTP. */
export function createShopApp(options: ShopAppOptions): ShopApp {
  const { registry } = options
  const drizzle = createDrizzleAdapter(registry, { service: SHOP_SERVICE, schema: ordersSchema })
  const kysely = createKyselyAdapter<InventoryDatabase>(registry, { service: SHOP_SERVICE })
  const knex = createKnexAdapter(registry, { service: SHOP_SERVICE })

  const shop = new ShopService({
    registry,
    orders: new OrdersRepository(drizzle.getDb),
    inventory: new InventoryRepository(kysely.getDb),
    audit: new AuditRepository(knex.getDb),
  })
  const http = createHttpServer({ shop, registry, logger: options.logger ?? false })
  let closing: Promise<void> | undefined
  return {
    http,
    shop,
    close: () => (closing ??= http.close()),
  }
}
