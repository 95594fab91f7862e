import { createRegistry } from '@hyperconn/core'
import type { Logger, Registry, SecretSource } from '@hyperconn/core'

/** The one service of this app. */
export const SHOP_SERVICE = 'shop'

/**
 * The secret layout, spelled out (these are also core's defaults): secret `<project>-<orgId>` holds
 * `{ "shop-postgresql": "postgresql://user:password@host:5432/db" }`.
 */
export const shopSecretName = (project: string, orgId: string): string => `${project}-${orgId}`
export const SHOP_SECRET_KEY = `${SHOP_SERVICE}-postgresql`

export interface ShopRegistryOptions {
  /** Secret names are `${project}-${orgId}`. */
  project: string
  secrets: SecretSource
  logger?: Logger
}

export function createShopRegistry(options: ShopRegistryOptions): Registry {
  return createRegistry({
    project: options.project,
    services: [SHOP_SERVICE],
    secrets: options.secrets,
    secretName: (orgId) => shopSecretName(options.project, orgId),
    secretKey: () => SHOP_SECRET_KEY,
    pool: { max: 5, idleTimeoutMillis: 30_000 },
    // An unknown org id is remembered for 30 s: a client hammering a bad tenant costs one secret lookup.
    secretCache: { ttlMs: 300_000, notFoundTtlMs: 30_000 },
    ...(options.logger === undefined ? {} : { logger: options.logger }),
  })
}
