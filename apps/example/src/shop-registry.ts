import { createRegistry } from '@hyperconn/core'
import type { Logger, Registry, SecretSource, TelemetryOptions } from '@hyperconn/core'
import { pricingSchemaOf } from './pricing-schemas.js'
import { REVIEWS_TENANT_SETTING } from './reviews-policy.js'

/** Orders, stock and audit log: one database per tenant (acme, globex, …). */
export const SHOP_SERVICE = 'shop'
/** Price lists: one database for every store, a schema per store. */
export const PRICING_SERVICE = 'pricing'
/** Product reviews: one table for every store, behind a row-level-security policy. */
export const REVIEWS_SERVICE = 'reviews'

/**
 * The secret layout, spelled out (these are also core's defaults): secret `<project>-<orgId>` holds
 * `{ "<service>-postgresql": "postgresql://user:password@host:5432/db" }`, one key per service the org uses.
 */
export const shopSecretName = (project: string, orgId: string): string => `${project}-${orgId}`
export const secretKeyOf = (service: string): string => `${service}-postgresql`
export const SHOP_SECRET_KEY = secretKeyOf(SHOP_SERVICE)
export const PRICING_SECRET_KEY = secretKeyOf(PRICING_SERVICE)
export const REVIEWS_SECRET_KEY = secretKeyOf(REVIEWS_SERVICE)

/** A shared connection must not be held hostage by one tenant's runaway query. */
const SHARED_SESSION_SETTINGS = Object.freeze({ statement_timeout: '5s' })

export interface ShopRegistryOptions {
  /** Secret names are `${project}-${orgId}`. */
  project: string
  secrets: SecretSource
  logger?: Logger
  /**
   * Records the registry's OpenTelemetry metrics there (connections per physical pool, waits, timeouts,
   * secret fetches, evictions, leaks); no telemetry without it.
   */
  meterProvider?: TelemetryOptions['meterProvider']
}

/**
 * Physical pools are keyed by connection target, not by tenant: every store's secret names the same
 * stores database with the same login role per service, so each of those services runs on one pool
 * whatever the number of stores; core applies the store's `search_path` or `app.tenant_id` on every
 * checkout. Each shop's URL names its own database, hence its own pool.
 */
export function createShopRegistry(options: ShopRegistryOptions): Registry {
  return createRegistry({
    project: options.project,
    services: {
      [SHOP_SERVICE]: { isolation: 'database' },
      [PRICING_SERVICE]: { isolation: { schema: pricingSchemaOf }, tenantSettings: () => SHARED_SESSION_SETTINGS },
      [REVIEWS_SERVICE]: { isolation: { rls: REVIEWS_TENANT_SETTING }, tenantSettings: () => SHARED_SESSION_SETTINGS },
    },
    secrets: options.secrets,
    secretName: (orgId) => shopSecretName(options.project, orgId),
    secretKey: secretKeyOf,
    // Per physical pool: 5 connections for a shop tenant, and 5 for all the stores of one shared service.
    pool: { max: 5, idleTimeoutMillis: 30_000 },
    // The budget per server across all pools: 'auto' = 80 % of what the server allows, read on first
    // contact, divided by the app instances sharing it. Beyond it callers queue fairly, then get a 503.
    connections: { max: 'auto', instances: 1, perTenant: 5, acquireTimeoutMs: 10_000 },
    // An unknown org id is remembered for 30 s: a client hammering a bad tenant costs one secret lookup.
    secretCache: { ttlMs: 300_000, notFoundTtlMs: 30_000 },
    ...(options.logger === undefined ? {} : { logger: options.logger }),
    // Pool names are `host:port/database@user`, never a secret; no org id attribute (one series per pool,
    // not per tenant: thousands of stores would multiply every series).
    ...(options.meterProvider === undefined ? {} : { telemetry: { meterProvider: options.meterProvider } }),
  })
}
