import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { connectClient, createRole, createTestDatabase } from '@hyperconn/testkit'
import type { FakeSecretsManager, TestRole } from '@hyperconn/testkit'
import { createPricingSchemas } from './pricing-schemas.js'
import { reviewsSetupSql, seedReviews } from './reviews-policy.js'
import { PRICING_SECRET_KEY, REVIEWS_SECRET_KEY, shopSecretName } from './shop-registry.js'

/** The stores database, which every store shares, on the local server. */
export interface LocalSharedTenants {
  readonly orgIds: readonly string[]
  /** Database name (unique per run). */
  readonly database: string
  /** Superuser URL of the database: for inspection and test fixtures, never given to the app. */
  readonly adminUrl: string
  /** The pricing service's login role; it owns the stores' schemas. */
  readonly pricingUser: string
  /** The reviews service's login role: not the table's owner, not a superuser, no BYPASSRLS. */
  readonly reviewsUser: string
  /** Deletes the secrets, drops the database and both roles. */
  dispose(): Promise<void>
}

export interface ProvisionSharedTenantsOptions {
  /** Superuser URL of the server. */
  adminUrl: string
  secretsManager: FakeSecretsManager
  project: string
  orgIds: readonly string[]
  /**
   * Runs once the secrets are stored, at the same time as the schemas and seed rows are created (e.g.
   * `registry.warm`, which needs the secrets but not the tables). Its failure fails the provisioning.
   */
  whileOnboarding?: () => Promise<void>
}

// Roles are cluster-wide and test files share one cluster: a random suffix keeps parallel runs apart.
const uniqueRole = (prefix: string): { user: string; password: string } => ({
  user: `${prefix}_${randomBytes(4).toString('hex')}`,
  password: randomBytes(18).toString('base64url'),
})

/**
 * One database for every store, with the superuser standing in for a migration role:
 * - pricing: the pricing role may create schemas here, and creates (so owns) one per store;
 * - reviews: the superuser creates the table, its policy and the seed rows, and grants the reviews role
 *   SELECT and INSERT only.
 * Each store's secret `<project>-<orgId>` = `{ "pricing-postgresql": url, "reviews-postgresql": url }`.
 * Every store has the same two URLs: that is what puts each service on one physical pool. Two login
 * roles on one database are two connection targets, hence two pools.
 */
export async function provisionSharedTenants(options: ProvisionSharedTenantsOptions): Promise<LocalSharedTenants> {
  const pricing = uniqueRole('pricing_app')
  const reviews = uniqueRole('reviews_app')
  const database = await createTestDatabase(options.adminUrl, { prefix: 'stores' })
  const roles: TestRole[] = []
  let secretsStored = false
  // The database goes first, taking the objects the roles own in it; then the roles can be dropped.
  const dropAll = async (): Promise<void> => {
    if (secretsStored) {
      for (const orgId of options.orgIds) options.secretsManager.deleteSecret(shopSecretName(options.project, orgId))
    }
    try {
      await database[Symbol.asyncDispose]()
    } finally {
      for (const role of roles) await role[Symbol.asyncDispose]()
    }
  }
  try {
    roles.push(await createRole(options.adminUrl, pricing.user, pricing.password))
    roles.push(await createRole(options.adminUrl, reviews.user, reviews.password))
    await withClient(database.url, async (admin) => {
      await admin.query(`GRANT CREATE ON DATABASE ${pg.escapeIdentifier(database.name)} TO ${pg.escapeIdentifier(pricing.user)}`)
      const secret = {
        [PRICING_SECRET_KEY]: database.urlFor(pricing.user, pricing.password),
        [REVIEWS_SECRET_KEY]: database.urlFor(reviews.user, reviews.password),
      }
      for (const orgId of options.orgIds) options.secretsManager.setSecret(shopSecretName(options.project, orgId), secret)
      secretsStored = true
      await Promise.all([
        (async () => {
          await admin.query(reviewsSetupSql(reviews.user))
          await seedReviews((sql, values) => admin.query(sql, values), options.orgIds)
        })(),
        withClient(database.urlFor(pricing.user, pricing.password), (client) =>
          createPricingSchemas((sql) => client.query(sql), options.orgIds),
        ),
        options.whileOnboarding?.(),
      ])
    })
  } catch (error) {
    await dropAll().catch(() => {})
    throw error
  }
  return {
    orgIds: options.orgIds,
    database: database.name,
    adminUrl: database.url,
    pricingUser: pricing.user,
    reviewsUser: reviews.user,
    dispose: dropAll,
  }
}

async function withClient<T>(url: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = await connectClient(url)
  try {
    return await work(client)
  } finally {
    await client.end()
  }
}
