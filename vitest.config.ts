import { defineConfig } from 'vitest/config'

// Runs alone, after everything else: it asserts the event loop stays live, which a parallel test file
// competing for the same 2 cores would blur.
const ALONE = ['tests/cross-orm/churn-liveness.test.ts']

export default defineConfig({
  resolve: { conditions: ['@hyperconn/source'] },
  ssr: { resolve: { conditions: ['@hyperconn/source'] } },
  test: {
    globalSetup: ['packages/testkit/src/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Files run in parallel on our 2-core machines; each gets its own database.
    maxWorkers: 2,
    reporters: ['default'],
    projects: [
      {
        extends: true,
        test: {
          name: 'suite',
          include: ['packages/*/src/**/*.test.ts', 'packages/*/test/**/*.test.ts', 'apps/*/test/**/*.test.ts', 'tests/**/*.test.ts'],
          exclude: [...ALONE, '**/node_modules/**'],
          sequence: { groupOrder: 0 },
        },
      },
      { extends: true, test: { name: 'alone', include: ALONE, sequence: { groupOrder: 1 } } },
    ],
  },
})
