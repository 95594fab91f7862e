export { defineConfig } from './config.js'
export type { CliRegistry, HyperconnConfig, MigrateContext, TenantSource } from './config.js'
export { EXIT_CODES } from './exit-codes.js'
export type { ExitCode } from './exit-codes.js'
