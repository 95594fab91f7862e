import type { Kysely } from 'kysely'
import { InsufficientStockError, UnknownProductError } from './shop-errors.js'

export interface InventoryTable {
  sku: string
  name: string
  quantity: number
}

export interface InventoryDatabase {
  inventory: InventoryTable
}

export interface StockItem {
  sku: string
  name: string
  quantity: number
}

/** Stock levels, through Kysely. Joins the caller's transaction, if any, without being handed one. */
export class InventoryRepository {
  readonly #getDb: (orgId: string) => Kysely<InventoryDatabase>

  constructor(getDb: (orgId: string) => Kysely<InventoryDatabase>) {
    this.#getDb = getDb
  }

  /**
   * Takes `quantity` items off the shelf and returns what is left. The `quantity >= n` condition makes
   * the check and the decrement one atomic statement, so concurrent orders can never oversell.
   */
  async take(orgId: string, sku: string, quantity: number): Promise<number> {
    const db = this.#getDb(orgId)
    const updated = await db
      .updateTable('inventory')
      .set((eb) => ({ quantity: eb('quantity', '-', quantity) }))
      .where('sku', '=', sku)
      .where('quantity', '>=', quantity)
      .returning('quantity')
      .executeTakeFirst()
    if (updated !== undefined) return updated.quantity
    // No row matched: find out why, for a precise error (and HTTP status).
    const current = await db.selectFrom('inventory').select('quantity').where('sku', '=', sku).executeTakeFirst()
    if (current === undefined) throw new UnknownProductError(sku)
    throw new InsufficientStockError(sku, quantity, current.quantity)
  }

  list(orgId: string): Promise<StockItem[]> {
    return this.#getDb(orgId).selectFrom('inventory').select(['sku', 'name', 'quantity']).orderBy('sku').execute()
  }
}
