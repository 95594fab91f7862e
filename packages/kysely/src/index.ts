export { createKyselyAdapter } from './kysely-adapter.js'
export type { KyselyAdapter, KyselyAdapterOptions } from './kysely-adapter.js'
