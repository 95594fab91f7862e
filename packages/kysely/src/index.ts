export { createKyselyAdapter } from './kysely-adapter.js'
export type { KyselyAdapter, KyselyAdapterOptions, TenantMigratorProps } from './kysely-adapter.js'
