import { sql } from 'drizzle-orm'
import { integer, pgTable, text, timestamp } from 'drizzle-orm/pg-core'
import { REVIEWS_TENANT_SETTING } from './reviews-policy.js'

/**
 * Drizzle's view of the shared `reviews` table (the DDL and its policy live in reviews-policy.ts).
 * `tenant_id` has a database default, so inserts leave it out and PostgreSQL fills it in from the
 * session's `app.tenant_id`; the policy's WITH CHECK refuses any other value.
 */
export const reviews = pgTable('reviews', {
  id: integer('id').primaryKey().generatedAlwaysAsIdentity(),
  tenantId: text('tenant_id')
    .notNull()
    .default(sql.raw(`current_setting('${REVIEWS_TENANT_SETTING}', true)`)),
  sku: text('sku').notNull(),
  stars: integer('stars').notNull(),
  body: text('body').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
})

export const reviewsSchema = { reviews }

export type Review = typeof reviews.$inferSelect
