import type { TestProject } from 'vitest/node'
import { startPostgres } from './postgres-server.js'

declare module 'vitest' {
  export interface ProvidedContext {
    /** Superuser URL (database `postgres`) of the server shared by all test files. */
    hyperconnAdminUrl: string
  }
}

/**
 * vitest globalSetup: one PostgreSQL server per run; each test file then creates its own database.
 * DATABASE_URL (a superuser URL) points the run at an existing server instead of starting one.
 * HYPERCONN_PG_LOG=1 forwards the embedded server's output.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const external = process.env.DATABASE_URL
  if (external !== undefined && external !== '') {
    project.provide('hyperconnAdminUrl', external)
    return async () => {}
  }
  const server = await startPostgres({ log: process.env.HYPERCONN_PG_LOG === '1' })
  project.provide('hyperconnAdminUrl', server.adminUrl)
  return () => server.stop()
}
