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
  /**
   * Stores on the shared stores database (pricing: a schema each; reviews: one table behind row-level
   * security). Default none; `readShopConfig` makes 200. Must not overlap `tenants`.
   */
  sharedTenants?: readonly string[]
}

/** Real AWS Secrets Manager (default credential chain) and whatever PostgreSQL the secrets point at. */
export interface AwsShopConfig extends CommonConfig {
  mode: 'aws'
  /** Undefined: the SDK's own region chain (AWS_REGION, AWS_DEFAULT_REGION, profile). */
  region: string | undefined
}

export const DEFAULT_TENANTS = ['acme', 'globex', 'initech'] as const
export const DEFAULT_SHARED_TENANTS = 200
const MAX_SHARED_TENANTS = 10_000

/** `store001`, `store002`, …: the org ids of the stores on the stores database. */
export function sharedTenantIds(count: number): string[] {
  const width = Math.max(3, String(count).length)
  return Array.from({ length: count }, (_, i) => `store${String(i + 1).padStart(width, '0')}`)
}

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
  const sharedCount = parseCount('HYPERCONN_SHARED_TENANTS', env.HYPERCONN_SHARED_TENANTS, MAX_SHARED_TENANTS)
  if (mode === 'local') {
    return { mode, project, tenants, seed, sharedTenants: sharedTenantIds(sharedCount ?? DEFAULT_SHARED_TENANTS) }
  }
  if (sharedCount !== undefined) {
    throw new Error('HYPERCONN_SHARED_TENANTS only applies to HYPERCONN_SECRETS=local: with aws, the stores are whatever secrets exist')
  }
  return { mode, project, tenants, seed, region: nonEmpty(env.AWS_REGION) ?? nonEmpty(env.AWS_DEFAULT_REGION) }
}

function parseTenants(value: string | undefined): string[] | undefined {
  if (nonEmpty(value) === undefined) return undefined
  const tenants = (value ?? '').split(',').map((t) => t.trim()).filter((t) => t !== '')
  const bad = tenants.find((t) => !TENANT_ID_PATTERN.test(t))
  if (bad !== undefined) throw new Error(`HYPERCONN_TENANTS: ${JSON.stringify(bad)} is not a valid org id`)
  return [...new Set(tenants)]
}

function parseCount(name: string, value: string | undefined, max: number): number | undefined {
  if (nonEmpty(value) === undefined) return undefined
  const count = Number(value)
  if (!Number.isInteger(count) || count < 0 || count > max) throw new Error(`${name} must be an integer from 0 to ${max}, got ${JSON.stringify(value)}`)
  return count
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
