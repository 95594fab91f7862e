import { count, desc } from 'drizzle-orm'
import type { NodePgDatabase } from 'drizzle-orm/node-postgres'
import { orders } from './orders-table.js'
import type { Order, OrderItem, ordersSchema } from './orders-table.js'

export type OrdersDatabase = NodePgDatabase<typeof ordersSchema>

/** Orders, through Drizzle. Joins the caller's transaction, if any, without being handed one. */
export class OrdersRepository {
  readonly #getDb: (orgId: string) => OrdersDatabase

  constructor(getDb: (orgId: string) => OrdersDatabase) {
    this.#getDb = getDb
  }

  async create(orgId: string, customer: string, items: readonly OrderItem[]): Promise<Order> {
    const [order] = await this.#getDb(orgId)
      .insert(orders)
      .values({ customer, items: [...items] })
      .returning()
    if (order === undefined) throw new Error('INSERT INTO orders … RETURNING returned no row')
    return order
  }

  list(orgId: string, limit = 100): Promise<Order[]> {
    return this.#getDb(orgId).select().from(orders).orderBy(desc(orders.id)).limit(limit)
  }

  async count(orgId: string): Promise<number> {
    const [row] = await this.#getDb(orgId).select({ n: count() }).from(orders)
    return row?.n ?? 0
  }
}
