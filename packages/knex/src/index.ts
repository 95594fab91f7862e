export { createKnexAdapter } from './knex-adapter.js'
export type { KnexAdapter, KnexAdapterOptions } from './knex-adapter.js'
export type { KnexTransactionConfig, KnexTransactionScope } from './knex-transaction.js'
