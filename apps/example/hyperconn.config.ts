/**
 * The config of `hyperconn migrate` (package @hyperconn/cli) for this app: the pricing service's
 * migrations (migrations/pricing/*.sql) applied to every store, each in its own schema `org_<orgId>`.
 *
 *   hyperconn migrate --config hyperconn.config.ts --tenants @stores.txt --report report.json
 *
 * The registry is the app's own (src/shop-registry.ts). Its secrets come from the local Secrets Manager
 * endpoint in HYPERCONN_SECRETS_ENDPOINT (what `pnpm demo` starts and passes), or else from AWS Secrets
 * Manager (AWS_REGION, default credential chain). Secret names are `${HYPERCONN_PROJECT}-<orgId>` (default
 * project "shop"). Only stores have a pricing schema: name them with --tenants.
 */
import { defineConfig } from '@hyperconn/cli'
import { migrateStore, STORE_MIGRATION_CONCURRENCY } from './src/pricing-migrations.js'
import { createShopRegistry, PRICING_SERVICE } from './src/shop-registry.js'
import { awsSecrets, localSecrets } from './src/shop-secrets.js'

const env = (name: string): string | undefined => {
  const value = process.env[name]?.trim()
  return value === undefined || value === '' ? undefined : value
}

export default defineConfig({
  createRegistry: () => {
    const endpoint = env('HYPERCONN_SECRETS_ENDPOINT')
    return createShopRegistry({
      project: env('HYPERCONN_PROJECT') ?? 'shop',
      secrets: endpoint === undefined ? awsSecrets(env('AWS_REGION') ?? env('AWS_DEFAULT_REGION')) : localSecrets(endpoint),
    })
  },
  service: PRICING_SERVICE,
  concurrency: STORE_MIGRATION_CONCURRENCY,
  migrate: migrateStore,
})
