import type { Kysely } from 'kysely'

export interface PricesTable {
  sku: string
  name: string
  price_cents: number
  org_id: string
  /** Added by migrations/pricing/001_price_currency. */
  currency: string
}

export interface PricingDatabase {
  prices: PricesTable
}

export interface Price {
  sku: string
  name: string
  priceCents: number
  /** ISO 4217 code (the column migrations/pricing/001_price_currency adds). */
  currency: string
  /** The store the row was written for (see pricing-schemas.ts). */
  orgId: string
}

/**
 * A store's price list, through Kysely on the `pricing` service. `prices` is not schema-qualified: the
 * registry set this checkout's `search_path` to the store's schema, on a connection of the one pool all
 * stores share.
 */
export class PricesRepository {
  readonly #getDb: (orgId: string) => Kysely<PricingDatabase>

  constructor(getDb: (orgId: string) => Kysely<PricingDatabase>) {
    this.#getDb = getDb
  }

  list(orgId: string): Promise<Price[]> {
    return this.#getDb(orgId)
      .selectFrom('prices')
      .select(['sku', 'name', 'price_cents as priceCents', 'currency', 'org_id as orgId'])
      .orderBy('sku')
      .execute()
  }
}
