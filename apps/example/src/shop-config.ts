import { TENANT_ID_PATTERN } from '@hyperconn/core'

export type ShopConfig = LocalShopConfig | AwsShopConfig

interface CommonConfig {
  /** Secret names are `${project}-${orgId}`. */
  project: string
  /** Tenants migrated (and seeded) at start-up. */
  tenants: readonly string[]
  seed: boolean
}

/** Embedded PostgreSQL, one database per tenant, secrets served by a local Secrets-Manager-compatible endpoint. */
export interface LocalShopConfig extends CommonConfig {
  mode: 'local'
  /** Use this server (a superuser URL) instead of starting an embedded one; tests pass theirs. */
  adminUrl?: string
}

/** Real AWS Secrets Manager (default credential chain) and whatever PostgreSQL the secrets point at. */
export interface AwsShopConfig extends CommonConfig {
  mode: 'aws'
  /** Undefined: the SDK's own region chain (AWS_REGION, AWS_DEFAULT_REGION, profile). */
  region: string | undefined
}

export const DEFAULT_TENANTS = ['acme', 'globex', 'initech'] as const

/** Reads the HYPERCONN_* variables (documented in README.md). Throws with a readable message on bad input. */
export function readShopConfig(env: NodeJS.ProcessEnv = process.env): ShopConfig {
  const mode = env.HYPERCONN_SECRETS ?? 'local'
  if (mode !== 'local' && mode !== 'aws') {
    throw new Error(`HYPERCONN_SECRETS must be "local" or "aws", got ${JSON.stringify(mode)}`)
  }
  const project = nonEmpty(env.HYPERCONN_PROJECT) ?? 'shop'
  const tenants = parseTenants(env.HYPERCONN_TENANTS) ?? (mode === 'local' ? [...DEFAULT_TENANTS] : undefined)
  if (tenants === undefined) {
    throw new Error('HYPERCONN_TENANTS is required with HYPERCONN_SECRETS=aws (comma-separated org ids to migrate)')
  }
  const seed = parseBoolean('HYPERCONN_SEED', env.HYPERCONN_SEED) ?? mode === 'local'
  if (mode === 'local') return { mode, project, tenants, seed }
  return { mode, project, tenants, seed, region: nonEmpty(env.AWS_REGION) ?? nonEmpty(env.AWS_DEFAULT_REGION) }
}

function parseTenants(value: string | undefined): string[] | undefined {
  if (nonEmpty(value) === undefined) return undefined
  const tenants = (value ?? '').split(',').map((t) => t.trim()).filter((t) => t !== '')
  const bad = tenants.find((t) => !TENANT_ID_PATTERN.test(t))
  if (bad !== undefined) throw new Error(`HYPERCONN_TENANTS: ${JSON.stringify(bad)} is not a valid org id`)
  return [...new Set(tenants)]
}

function parseBoolean(name: string, value: string | undefined): boolean | undefined {
  if (nonEmpty(value) === undefined) return undefined
  if (value === '1' || value === 'true') return true
  if (value === '0' || value === 'false') return false
  throw new Error(`${name} must be 1/true or 0/false, got ${JSON.stringify(value)}`)
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value.trim()
}
