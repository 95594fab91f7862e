import { desc } from 'drizzle-orm'
import type { NodePgDatabase } from 'drizzle-orm/node-postgres'
import { reviews } from './reviews-table.js'
import type { Review, reviewsSchema } from './reviews-table.js'

export type ReviewsDatabase = NodePgDatabase<typeof reviewsSchema>

export interface NewReview {
  sku: string
  stars: number
  body: string
}

/**
 * Reviews, through Drizzle on the `reviews` service. No query here mentions the tenant: the table holds
 * every store's rows, and the row-level-security policy, fed by the `app.tenant_id` the registry set on
 * this checkout, decides which of them exist for this store.
 */
export class ReviewsRepository {
  readonly #getDb: (orgId: string) => ReviewsDatabase

  constructor(getDb: (orgId: string) => ReviewsDatabase) {
    this.#getDb = getDb
  }

  list(orgId: string, limit = 100): Promise<Review[]> {
    return this.#getDb(orgId).select().from(reviews).orderBy(desc(reviews.id)).limit(limit)
  }

  /** `tenant_id` is not sent: the column default takes it from the session (see reviews-table.ts). */
  async add(orgId: string, review: NewReview): Promise<Review> {
    const [row] = await this.#getDb(orgId).insert(reviews).values(review).returning()
    if (row === undefined) throw new Error('INSERT INTO reviews … RETURNING returned no row')
    return row
  }
}
