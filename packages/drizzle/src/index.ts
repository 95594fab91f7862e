export { createDrizzleAdapter } from './drizzle-adapter.js'
export type { DrizzleAdapter, DrizzleAdapterOptions, DrizzleTransaction } from './drizzle-adapter.js'
