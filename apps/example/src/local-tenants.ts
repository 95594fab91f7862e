import { randomBytes } from 'node:crypto'
import { createTestDatabase } from '@hyperconn/testkit'
import type { FakeSecretsManager, TestDatabase } from '@hyperconn/testkit'
import { SHOP_SECRET_KEY, shopSecretName } from './shop-registry.js'

export interface LocalTenantDatabase {
  readonly orgId: string
  /** Database name (unique per run). */
  readonly name: string
  /** Superuser URL of this database: for inspection and test fixtures, never given to the app. */
  readonly adminUrl: string
  /** The login role the app connects as (owner of the database). */
  readonly user: string
  /** Drops the database and its role. */
  dispose(): Promise<void>
}

export interface ProvisionLocalTenantsOptions {
  /** Superuser URL of the server. */
  adminUrl: string
  /** Where the tenants' secrets go, in the real Secrets Manager JSON layout. */
  secretsManager: FakeSecretsManager
  project: string
  orgIds: readonly string[]
}

/**
 * One database per tenant, owned by its own password login role (not the superuser), and its secret
 * `<project>-<orgId>` = `{ "shop-postgresql": "postgresql://<role>:<password>@…/<database>" }`.
 */
export async function provisionLocalTenants(options: ProvisionLocalTenantsOptions): Promise<LocalTenantDatabase[]> {
  const results = await Promise.allSettled(options.orgIds.map((orgId) => provisionOne(options, orgId)))
  const created = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []))
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
  if (failed !== undefined) {
    await Promise.allSettled(created.map((tenant) => tenant.dispose()))
    throw failed.reason
  }
  return created
}

async function provisionOne(options: ProvisionLocalTenantsOptions, orgId: string): Promise<LocalTenantDatabase> {
  // Roles are cluster-wide and test files share one cluster: a random suffix keeps parallel runs apart.
  const user = `shop_${orgId.toLowerCase().replace(/[^a-z0-9_]/g, '_').slice(0, 40)}_${randomBytes(4).toString('hex')}`
  const password = randomBytes(18).toString('base64url')
  const database: TestDatabase = await createTestDatabase(options.adminUrl, {
    prefix: `shop_${orgId}`,
    owner: { user, password },
  })
  options.secretsManager.setSecret(shopSecretName(options.project, orgId), {
    [SHOP_SECRET_KEY]: database.urlFor(user, password),
  })
  return {
    orgId,
    name: database.name,
    adminUrl: database.url,
    user,
    dispose: async () => {
      options.secretsManager.deleteSecret(shopSecretName(options.project, orgId))
      await database[Symbol.asyncDispose]()
    },
  }
}
