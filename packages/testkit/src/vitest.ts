import { inject } from 'vitest'
// Type-only: brings the ProvidedContext augmentation into every program that uses this module.
import type {} from './global-setup.js'
import { createTestDatabase } from './test-database.js'
import type { CreateTestDatabaseOptions, TestDatabase } from './test-database.js'

/** Superuser URL of the run's PostgreSQL server (from global-setup). */
export function adminUrl(): string {
  const url = inject('hyperconnAdminUrl')
  if (typeof url !== 'string' || url === '') {
    throw new Error('hyperconnAdminUrl was not provided: is @hyperconn/testkit/global-setup in vitest globalSetup?')
  }
  return url
}

/** A fresh database on the run's server; `await using db = await testDatabase('pool')` drops it at scope end. */
export function testDatabase(
  prefix?: string,
  options: Omit<CreateTestDatabaseOptions, 'prefix'> = {},
): Promise<TestDatabase> {
  return createTestDatabase(adminUrl(), prefix === undefined ? options : { ...options, prefix })
}
