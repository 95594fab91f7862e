import type { ClientConfig } from 'pg'
import { InvalidOptionsError } from '../hyperconn-error.js'
import type { ResolvedService } from '../registry/registry-options.js'
import type { SecretBundle } from '../secrets/secret-bundle.js'
import type { TenantKey } from '../tenant-types.js'
import { ConnectionTarget } from './connection-target.js'
import { settingNameProblem, settingValueOf, TenantSettings } from './tenant-settings.js'

/**
 * A tenant is not a pool: it is this cheap binding of (service, orgId) to a connection target and the
 * session settings its connections must carry. Built once per secret version.
 */
export interface TenantBinding {
  readonly key: TenantKey
  readonly secretName: string
  /** Fingerprint of the secret version this binding was built from. */
  readonly fingerprint: string
  readonly target: ConnectionTarget
  /** Read replicas (`services.x.replicas`), from the secret's `<key>-ro`; empty without. */
  readonly replicas: readonly ConnectionTarget[]
  /** Health rules of the replicas (undefined without replicas). */
  readonly replicaRules: ResolvedService['replicas']
  readonly settings: TenantSettings
  /** This tenant's secret strings, masked in any error text that could echo them. */
  readonly redactions: readonly string[]
}

/**
 * Builds the binding from the tenant's secret. Settings, lowest precedence first: the URL's `options`
 * and `application_name`, then the service's `tenantSettings(orgId)`, then the isolation preset. Throws
 * `SecretFormatError` for the secret's problems and `InvalidOptionsError` for the service's.
 */
export function bindTenant(
  key: TenantKey,
  bundle: SecretBundle,
  service: ResolvedService,
  secretKey: string,
  clientBase: Readonly<ClientConfig>,
  intern: (target: ConnectionTarget) => ConnectionTarget = (target) => target,
): TenantBinding {
  const connectionString = bundle.connectionString(secretKey)
  const parsed = ConnectionTarget.parse(connectionString, clientBase, bundle.name, secretKey, service.pooler, service.auth)
  const settings = parsed.settings
  // Thousands of tenants usually share a handful of targets: keep one object per target.
  const target = intern(parsed.target)
  if (service.tenantSettings !== undefined) {
    for (const [name, value] of Object.entries(callTenantFunction(service.name, 'tenantSettings', service.tenantSettings, key.orgId))) {
      const nameProblem = settingNameProblem(name)
      if (nameProblem !== undefined) throw invalidSetting(service.name, `"${name}": ${nameProblem}`)
      const parsed = settingValueOf(value)
      if ('problem' in parsed) throw invalidSetting(service.name, `"${name}": ${parsed.problem}`)
      settings.set(name.toLowerCase(), parsed.value)
    }
  }
  const isolation = service.isolation
  if (isolation.kind === 'schema') {
    const schema = callTenantFunction(service.name, 'isolation.schema', isolation.schema, key.orgId)
    if (typeof schema !== 'string' || schema.length === 0 || Buffer.byteLength(schema) > 63 || schema.includes('\0')) {
      throw new InvalidOptionsError(
        `services.${service.name}.isolation.schema(orgId) must return a schema name of 1-63 bytes; it returned ${typeof schema === 'string' ? `a string of ${Buffer.byteLength(schema)} bytes` : typeof schema} for org "${key.orgId}".`,
      )
    }
    // search_path is a list: the name is quoted so any schema name stays one list element.
    settings.set('search_path', `"${schema.replaceAll('"', '""')}"`)
  } else if (isolation.kind === 'rls') {
    const value = isolation.value === undefined ? key.orgId : callTenantFunction(service.name, 'isolation.value', isolation.value, key.orgId)
    const parsed = settingValueOf(value)
    if ('problem' in parsed || parsed.value === '') {
      throw new InvalidOptionsError(
        `services.${service.name}.isolation.value(orgId) must return a non-empty string for org "${key.orgId}" (an empty tenant id would match no policy).`,
      )
    }
    settings.set(isolation.setting, parsed.value)
  }
  // Replicas get the primary's settings: a tenant's isolation is the same on every copy of its data.
  const replicaKey = `${secretKey}-ro`
  const replicaUrls = service.replicas === undefined ? [] : bundle.connectionStrings(replicaKey)
  const replicas = replicaUrls.map((url) => intern(ConnectionTarget.parse(url, clientBase, bundle.name, replicaKey, service.pooler, service.auth).target))
  const binding = {
    key,
    secretName: bundle.name,
    fingerprint: bundle.fingerprint,
    target,
    replicas: Object.freeze(replicas),
    replicaRules: service.replicas,
    settings: TenantSettings.of(settings),
  } as TenantBinding
  // Not enumerable: no JSON.stringify, spread or inspect of a binding ever shows the URL or password.
  Object.defineProperty(binding, 'redactions', {
    value: Object.freeze([connectionString, ...target.redactions(), ...replicaUrls, ...replicas.flatMap((r) => r.redactions())]),
  })
  return Object.freeze(binding)
}

function callTenantFunction<T>(service: string, option: string, fn: (orgId: string) => T, orgId: string): T {
  try {
    return fn(orgId)
  } catch (error) {
    throw new InvalidOptionsError(
      `services.${service}.${option}(orgId) threw for org "${orgId}": ${error instanceof Error ? error.message.slice(0, 200) : 'non-error thrown'}.`,
    )
  }
}

function invalidSetting(service: string, detail: string): InvalidOptionsError {
  return new InvalidOptionsError(`services.${service}.tenantSettings(orgId) returned an unusable setting ${detail}.`)
}
