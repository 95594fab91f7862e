export { defineConfig } from './config.js'
export type { CliRegistry, ConfigBase, HyperconnConfig, MigrateContext, TenantSource } from './config.js'
export { EXIT_CODES } from './exit-codes.js'
export type { ExitCode } from './exit-codes.js'
