import { defineConfig } from 'vitest/config'

export default defineConfig({
  resolve: { conditions: ['@hyperconn/source'] },
  ssr: { resolve: { conditions: ['@hyperconn/source'] } },
  test: {
    include: ['packages/*/src/**/*.test.ts', 'packages/*/test/**/*.test.ts', 'apps/*/test/**/*.test.ts', 'tests/**/*.test.ts'],
    globalSetup: ['packages/testkit/src/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Files run in parallel on our 2-core machines; each gets its own database.
    maxWorkers: 2,
    reporters: process.env.CI ? ['default'] : ['default'],
  },
})
