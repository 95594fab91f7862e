import { defineConfig } from 'tsup'
import base from '../../tsup.config.base.js'

// The shared build, plus the `hyperconn` bin (its shebang is kept and the file made executable).
export default defineConfig({
  ...base,
  entry: ['src/index.ts', 'src/cli.ts'],
  dts: { entry: 'src/index.ts' },
})
