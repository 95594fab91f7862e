import { defineConfig } from 'tsup'

// Every published package builds the same way: one ESM entry with types, for Node 20.
export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm'],
  target: 'node20',
  dts: true,
  sourcemap: true,
  clean: true,
  splitting: false,
})
