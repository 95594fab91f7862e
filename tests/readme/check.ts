// README code check: every ```ts block of the repository's READMEs (the root one and every published
// package's), extracted into a module and type-checked with strict `nodenext` settings against the built
// packages, as a reader would compile it in their own project.
//
//   pnpm check:readme [--no-build] [--keep]
//
// A block is written to the file its first line names (`// db.ts`), or to the file tests/readme/readmes.ts
// gives it, or to block-<n>.ts; other blocks import it as the README says (`./db.js`). tests/readme/readmes.ts
// also gives a block what a reader has around it: the imports they would write and the names the snippet
// assumes (`declare const orgId: string`), and the modules a README refers to without showing them
// (a Drizzle schema). Errors are reported at the README line.
import { execFileSync } from 'node:child_process'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join, relative, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { readmes } from './readmes.js'
import type { BlockConfig } from './readmes.js'

const { values: args } = parseArgs({
  options: { 'no-build': { type: 'boolean', default: false }, keep: { type: 'boolean', default: false } },
})

const root = resolve(import.meta.dirname, '../..')
const out = join(import.meta.dirname, '.generated')

interface Block {
  index: number
  /** README line of the block's first code line (1-based). */
  line: number
  code: string
}
interface Generated {
  readme: string
  line: number
  preludeLines: number
}

function extractBlocks(markdown: string): Block[] {
  const blocks: Block[] = []
  const lines = markdown.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const fence = /^(\s*)(`{3,}|~{3,})\s*(ts|typescript)\b/.exec(lines[i]!)
    if (fence === null) continue
    const start = i + 1
    let end = start
    while (end < lines.length && !lines[end]!.trimStart().startsWith(fence[2]!)) end++
    blocks.push({ index: blocks.length + 1, line: start + 1, code: lines.slice(start, end).join('\n') })
    i = end
  }
  return blocks
}

const problems: string[] = []
const generated = new Map<string, Generated>()
rmSync(out, { recursive: true, force: true })
mkdirSync(out, { recursive: true })

let checked = 0
for (const readme of readmes) {
  const path = join(root, readme.path)
  const blocks = extractBlocks(readFileSync(path, 'utf8'))
  const dir = join(out, readme.path.replace(/\/?README\.md$/, '').replace(/\//g, '_') || 'root')
  mkdirSync(dir, { recursive: true })
  for (const [file, code] of Object.entries(readme.support ?? {})) writeFileSync(join(dir, file), code)

  const used = new Set<BlockConfig>()
  for (const block of blocks) {
    const configs = (readme.blocks ?? []).filter((config) => block.code.includes(config.contains))
    if (configs.length > 1) problems.push(`${readme.path}:${block.line}: more than one entry of tests/readme/readmes.ts matches this block`)
    const config = configs[0]
    if (config !== undefined) used.add(config)
    if (config?.skip !== undefined) {
      console.log(`${readme.path}:${block.line}: not checked (${config.skip})`)
      continue
    }
    const named = /^\/\/\s*([\w.-]+\.ts)\s*$/.exec(block.code.split('\n')[0] ?? '')?.[1]
    const file = join(dir, config?.file ?? named ?? `block-${block.index}.ts`)
    const prelude = config?.prelude ?? ''
    const preludeLines = prelude === '' ? 0 : prelude.split('\n').length
    writeFileSync(file, (prelude === '' ? '' : `${prelude}\n`) + block.code + '\n')
    generated.set(relative(root, file), { readme: readme.path, line: block.line, preludeLines })
    checked++
  }
  for (const config of readme.blocks ?? []) {
    if (!used.has(config)) problems.push(`${readme.path}: no \`\`\`ts block contains ${JSON.stringify(config.contains)} (tests/readme/readmes.ts is out of date)`)
  }
}

// A reader's project: what `tsc --init` (TypeScript 5.9) sets, with Node types instead of none.
writeFileSync(join(out, 'tsconfig.json'), JSON.stringify({
  compilerOptions: {
    target: 'ES2022',
    lib: ['ES2023', 'ESNext.Disposable'],
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    moduleDetection: 'force',
    types: ['node'],
    strict: true,
    noUncheckedIndexedAccess: true,
    exactOptionalPropertyTypes: true,
    verbatimModuleSyntax: true,
    isolatedModules: true,
    skipLibCheck: true,
    noEmit: true,
  },
  include: ['**/*.ts'],
}, null, 2))

if (!args['no-build']) execFileSync('pnpm', ['--silent', 'build', '--output-logs=errors-only'], { cwd: root, stdio: 'inherit' })

let tscOutput = ''
try {
  execFileSync(join(root, 'node_modules/.bin/tsc'), ['-p', join(out, 'tsconfig.json'), '--pretty', 'false'], { cwd: root, encoding: 'utf8' })
} catch (error) {
  tscOutput = String((error as { stdout?: string }).stdout ?? error)
}
for (const line of tscOutput.split('\n').filter(Boolean)) {
  const match = /^(.+?)\((\d+),(\d+)\): (.*)$/.exec(line)
  const origin = match === null ? undefined : generated.get(match[1]!)
  if (match === null || origin === undefined) {
    problems.push(line)
    continue
  }
  const blockLine = Number(match[2]) - origin.preludeLines
  problems.push(blockLine >= 1
    ? `${origin.readme}:${origin.line + blockLine - 1}:${match[3]}: ${match[4]}`
    : `${origin.readme}:${origin.line} (the prelude in tests/readme/readmes.ts, line ${match[2]}): ${match[4]}`)
}

if (!args.keep) rmSync(out, { recursive: true, force: true })
if (problems.length > 0) {
  for (const problem of problems) console.error(problem)
  console.error(`\nREADME code check FAILED: ${problems.length} problem(s) in ${checked} checked block(s)`)
  process.exitCode = 1
} else {
  console.log(`README code check: ${checked} block(s) in ${readmes.length} README(s) compile`)
}
