// Runtime-agnostic entry: the demo app and benchmarks import it too, so nothing here may import 'vitest'.
export { startPostgres } from './postgres-server.js'
export type { PostgresServer, StartPostgresOptions } from './postgres-server.js'
export { concurrentQueryWarning, connectClient, createTestDatabase, createRole } from './test-database.js'
export type { TestDatabase, TestRole, CreateTestDatabaseOptions, CreateRoleOptions } from './test-database.js'
export { startFakeSecretsManager } from './fake-secrets-manager.js'
export type { FakeSecretsManager, SecretsManagerFault, StartFakeSecretsManagerOptions } from './fake-secrets-manager.js'
export { pgbouncerBinary, startPgBouncer } from './pgbouncer-server.js'
export type { PgBouncer, StartPgBouncerOptions } from './pgbouncer-server.js'
