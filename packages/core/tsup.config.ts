import { defineConfig } from 'tsup'
import base from '../../tsup.config.base.js'

// Two entries (the main API and the adapter kit) share one chunk for everything they both use:
// without splitting each entry would bundle its own copy of the error classes and the context.
export default defineConfig({ ...base, entry: ['src/index.ts', 'src/adapter.ts'], splitting: true })
