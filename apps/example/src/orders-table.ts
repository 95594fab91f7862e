import { integer, jsonb, pgTable, text, timestamp } from 'drizzle-orm/pg-core'

export interface OrderItem {
  sku: string
  quantity: number
}

/** Drizzle's view of the `orders` table (the DDL itself lives in tenant-databases.ts). */
export const orders = pgTable('orders', {
  id: integer('id').primaryKey().generatedAlwaysAsIdentity(),
  customer: text('customer').notNull(),
  items: jsonb('items').$type<OrderItem[]>().notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
})

export const ordersSchema = { orders }

export type Order = typeof orders.$inferSelect
