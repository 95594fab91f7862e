// Packed-tarball consumer test: what `changeset publish` would publish, installed and used the way a user
// does. For every published package (packages/* that are not private):
//   1. `pnpm pack` (publishConfig applied, workspace: ranges replaced), then check the packed package.json:
//      no workspace: range, no @hyperconn/source condition, `exports` equal to the repository's minus that
//      condition, every file it points at in the tarball, every bare import of dist/ declared;
//   2. `publint --strict` and `attw --profile esm-only` on the tarball;
//   3. npm-install the tarballs with their peers into a scratch project outside the repository (one per
//      --peers set: `newest` = the newest versions the peer ranges allow, `lowest` = the lowest ones),
//      compile a strict `nodenext` TypeScript program there, and run it, a plain ESM program and a
//      CommonJS one against PostgreSQL (DATABASE_URL, a superuser URL, or an embedded server from
//      @hyperconn/testkit), on this Node and on every --node version (fetched with npx).
//
//   pnpm test:packed [--peers newest] [--peers lowest] [--node 20.19.0 --node 22 ...] [--no-build] [--keep]
//
// Exits non-zero on the first failure.
import { execFileSync } from 'node:child_process'
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { builtinModules } from 'node:module'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { isDeepStrictEqual, parseArgs } from 'node:util'
import { createTestDatabase, startPostgres } from '@hyperconn/testkit'
import type { PostgresServer, TestDatabase } from '@hyperconn/testkit'

const { values: args } = parseArgs({
  options: {
    peers: { type: 'string', multiple: true, default: [] },
    node: { type: 'string', multiple: true, default: [] },
    'no-build': { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
  },
})

// pnpm's bin shims (tsx running this file) set NODE_PATH to the repository's hoisted store, through which
// require() in the consumers (and core's createRequire of its optional peers) would find packages the
// consumer never installed, e.g. @opentelemetry/api. A fresh consumer has no NODE_PATH.
delete process.env['NODE_PATH']

const root = resolve(import.meta.dirname, '../..')
const fixtures = join(import.meta.dirname, 'fixtures')
const bin = (name: string) => join(root, 'node_modules/.bin', name)
const started = Date.now()
const seconds = () => ((Date.now() - started) / 1000).toFixed(1)
const step = (title: string) => console.log(`\n--- packed: ${title} (${seconds()}s)`)
const SOURCE_CONDITION = '@hyperconn/source'
// Peers a TypeScript user installs although they are optional (the documented install line).
const TYPESCRIPT_PEERS = ['@types/pg']

function run(command: string, argv: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}) {
  execFileSync(command, argv, { stdio: 'inherit', cwd: options.cwd ?? root, env: options.env ?? process.env, timeout: options.timeout ?? 300_000 })
}
function output(command: string, argv: string[], cwd = root, env = process.env): string {
  return execFileSync(command, argv, { cwd, env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
}
/** pnpm passes its own settings to scripts as npm_config_*; npm does not know them. npm reads .npmrc itself. */
function npmEnv(): NodeJS.ProcessEnv {
  const keep = new Set(['registry', 'cache', 'userconfig', 'proxy', 'https_proxy', 'noproxy', 'cafile', 'strict_ssl', 'offline', 'prefer_offline'])
  return Object.fromEntries(Object.entries(process.env).filter(([key]) => !/^npm_config_/i.test(key) || keep.has(key.slice('npm_config_'.length).toLowerCase())))
}

interface Manifest {
  name: string
  version: string
  private?: boolean
  exports?: unknown
  main?: string
  types?: string
  dependencies?: Record<string, string>
  peerDependencies?: Record<string, string>
  peerDependenciesMeta?: Record<string, { optional?: boolean }>
}
interface Packed {
  dir: string
  source: Manifest
  tarball: string
  manifest: Manifest
  files: string[]
}

const failures: string[] = []
const fail = (message: string) => {
  failures.push(message)
  console.error(`FAIL ${message}`)
}

// --- what is published -----------------------------------------------------------------------------------

const published = readdirSync(join(root, 'packages'))
  .map((name) => join(root, 'packages', name))
  .map((dir) => ({ dir, source: JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Manifest }))
  .filter(({ source }) => source.private !== true)

const scratch = mkdtempSync(join(tmpdir(), 'hyperconn-packed-'))
let server: PostgresServer | undefined
let database: TestDatabase | undefined

try {
  if (!args['no-build']) {
    step('build')
    run('pnpm', ['--silent', 'build', '--output-logs=errors-only'])
  }

  step(`pack ${published.map(({ source }) => source.name).join(', ')}`)
  const tarballs = join(scratch, 'tarballs')
  mkdirSync(tarballs)
  const packed: Packed[] = published.map(({ dir, source }) => {
    const before = new Set(readdirSync(tarballs))
    output('pnpm', ['pack', '--pack-destination', tarballs], dir)
    const created = readdirSync(tarballs).filter((file) => !before.has(file))
    if (created.length !== 1) throw new Error(`pnpm pack in ${dir} made ${created.length} tarballs`)
    const tarball = join(tarballs, created[0]!)
    const manifest = JSON.parse(output('tar', ['-xzOf', tarball, 'package/package.json'])) as Manifest
    const files = output('tar', ['-tzf', tarball]).split('\n').filter(Boolean).map((file) => file.replace(/^package\//, ''))
    return { dir, source, tarball, manifest, files }
  })

  step('packed package.json files')
  for (const pkg of packed) checkManifest(pkg)
  if (failures.length > 0) throw new Error('the packed package.json files are broken')

  step('publint --strict')
  for (const { tarball } of packed) run(bin('publint'), ['run', '--strict', tarball])

  step('attw --profile esm-only')
  for (const { tarball } of packed) {
    run(bin('attw'), [tarball, '--profile', 'esm-only', '--no-definitely-typed', '--format', 'table-flipped', '--no-color'])
  }

  const sets = args.peers.length > 0 ? args.peers : ['newest']
  for (const set of sets) if (set !== 'newest' && set !== 'lowest') throw new Error(`--peers ${set}: expected newest or lowest`)
  const consumers = sets.map((set) => {
    step(`install the tarballs with the ${set} peer versions in range (npm)`)
    const consumer = join(scratch, `consumer-${set}`)
    mkdirSync(consumer)
    writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: `hyperconn-packed-consumer-${set}`, private: true, type: 'module' }, null, 2))
    cpSync(fixtures, consumer, { recursive: true })
    const peers = peerSpecs(packed, set === 'lowest')
    console.log(`peers: ${peers.join(' ')}`)
    run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', '--prefer-offline', ...packed.map((pkg) => pkg.tarball), ...peers, '@types/node@^20.19.0'], { cwd: consumer, env: npmEnv() })
    const installed = JSON.parse(output('npm', ['ls', '--json', '--depth=0'], consumer, npmEnv())) as { dependencies: Record<string, { version: string }> }
    console.log(`installed: ${Object.entries(installed.dependencies).map(([name, { version }]) => `${name}@${version}`).join(' ')}`)

    step(`compile the strict nodenext TypeScript consumer (${set} peers)`)
    run(bin('tsc'), ['-p', join(consumer, 'tsconfig.json')])
    return { set, consumer }
  })

  step(process.env['DATABASE_URL'] === undefined ? 'start PostgreSQL' : 'PostgreSQL from DATABASE_URL')
  let adminUrl = process.env['DATABASE_URL']
  if (adminUrl === undefined) {
    server = await startPostgres()
    adminUrl = server.adminUrl
  }
  database = await createTestDatabase(adminUrl, { prefix: 'packed' })

  const nodes: { label: string; path: string }[] = [{ label: process.version, path: process.execPath }]
  for (const version of args.node) {
    step(`Node ${version}`)
    const path = output('npx', ['-y', `node@${version}`, '-p', 'process.execPath'], scratch, npmEnv()).trim()
    nodes.push({ label: output(path, ['--version']).trim(), path })
  }
  const env = { ...process.env, HYPERCONN_PACKED_URL: database.url }
  for (const { set, consumer } of consumers) {
    for (const node of nodes) {
      step(`run the consumers (${set} peers) on Node ${node.label}`)
      for (const program of ['build/consumer.js', 'consumer.mjs', 'consumer.cjs']) run(node.path, [program], { cwd: consumer, env, timeout: 60_000 })
    }
  }
  step('passed')
} catch (error) {
  if (failures.length === 0) console.error(error)
  process.exitCode = 1
} finally {
  await database?.[Symbol.asyncDispose]()
  await server?.stop()
  if (args.keep) console.log(`scratch project kept in ${scratch}`)
  else rmSync(scratch, { recursive: true, force: true })
}
if (process.exitCode === 1) console.error(`\npacked consumer test FAILED after ${seconds()}s${failures.length ? `: ${failures.length} problem(s) above` : ''}`)

// --- checks ------------------------------------------------------------------------------------------------

function checkManifest({ dir, source, manifest, files }: Packed) {
  const name = manifest.name
  const text = JSON.stringify(manifest)
  if (text.includes('workspace:')) fail(`${name}: a workspace: range survived packing`)
  if (JSON.stringify(manifest.exports).includes(SOURCE_CONDITION)) fail(`${name}: the ${SOURCE_CONDITION} condition is published`)
  const expected = stripCondition(source.exports)
  if (!isDeepStrictEqual(manifest.exports, expected)) {
    fail(`${name}: the published exports are not the repository's minus ${SOURCE_CONDITION} (publishConfig.exports out of date?)\n` +
      `  published: ${JSON.stringify(manifest.exports)}\n  expected:  ${JSON.stringify(expected)}`)
  }
  const fileSet = new Set(files)
  for (const target of [...exportTargets(manifest.exports), manifest.main, manifest.types]) {
    if (target === undefined) continue
    if (!fileSet.has(target.replace(/^\.\//, ''))) fail(`${name}: ${target} is referenced by package.json but not in the tarball`)
  }
  // Every bare import of the published code must be the package itself, a Node builtin, or declared
  // (a dependency or peer; for declaration files also its @types package).
  const declared = new Set([name, ...Object.keys(manifest.dependencies ?? {}), ...Object.keys(manifest.peerDependencies ?? {})])
  for (const file of files.filter((file) => /^dist\/.*\.(js|d\.ts)$/.test(file))) {
    const code = readFileSync(join(dir, file), 'utf8')
    for (const specifier of bareImports(code)) {
      const pkg = packageName(specifier)
      const typesPkg = `@types/${pkg.replace(/^@(.*)\//, '$1__')}`
      if (builtinModules.includes(pkg.replace(/^node:/, '')) || pkg.startsWith('node:')) continue
      if (declared.has(pkg) || (file.endsWith('.d.ts') && declared.has(typesPkg))) continue
      fail(`${name}: ${file} imports '${specifier}', which is neither a dependency nor a peer dependency`)
    }
  }
}

function stripCondition(value: unknown): unknown {
  if (typeof value !== 'object' || value === null) return value
  return Object.fromEntries(Object.entries(value).filter(([key]) => key !== SOURCE_CONDITION).map(([key, inner]) => [key, stripCondition(inner)]))
}

function exportTargets(value: unknown): string[] {
  if (typeof value === 'string') return value.includes('*') ? [] : [value]
  if (typeof value !== 'object' || value === null) return []
  return Object.values(value).flatMap(exportTargets)
}

function bareImports(code: string): string[] {
  const specifiers = new Set<string>()
  const patterns = [/\bfrom\s*['"]([^'"]+)['"]/g, /\bimport\s*['"]([^'"]+)['"]/g, /\bimport\(\s*['"]([^'"]+)['"]\s*\)/g, /\brequire\(\s*['"]([^'"]+)['"]\s*\)/g]
  for (const pattern of patterns) for (const match of code.matchAll(pattern)) specifiers.add(match[1]!)
  return [...specifiers].filter((specifier) => !specifier.startsWith('.') && !specifier.startsWith('/'))
}

function packageName(specifier: string): string {
  const parts = specifier.split('/')
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!
}

// --- peers -------------------------------------------------------------------------------------------------

/** npm install specs for the peers of the packed packages: the ranges themselves, or their lowest versions. */
function peerSpecs(packages: Packed[], lowest: boolean): string[] {
  const ranges = new Map<string, string[]>()
  for (const { manifest } of packages) {
    for (const [peer, range] of Object.entries(manifest.peerDependencies ?? {})) {
      if (packages.some((pkg) => pkg.manifest.name === peer)) continue
      const optional = manifest.peerDependenciesMeta?.[peer]?.optional === true
      if (optional && !TYPESCRIPT_PEERS.includes(peer)) continue
      ranges.set(peer, [...(ranges.get(peer) ?? []), range])
    }
  }
  for (const peer of TYPESCRIPT_PEERS) if (!ranges.has(peer)) throw new Error(`no package declares the peer ${peer}`)
  return [...ranges].map(([peer, list]) => {
    // Several packages may name the same peer: the range with the highest lower bound is the binding one.
    const range = list.reduce((a, b) => (compareVersions(minVersion(b), minVersion(a)) > 0 ? b : a))
    return `${peer}@${lowest ? minVersion(range) : range}`
  })
}

/** The lowest version a range allows, for the forms our peer ranges use (^x.y.z, ~x.y.z, >=x.y.z <..., x.y.z, x.x, a || b). */
function minVersion(range: string): string {
  const candidates = range.split('||').map((alternative) => {
    const match = /(?:^|\s)(?:\^|~|>=|=)?v?(\d+)(?:\.(\d+|x))?(?:\.(\d+|x))?(?:\s|$)/.exec(` ${alternative.trim()} `)
    if (match === null) throw new Error(`cannot find the lowest version of the range ${range}`)
    const part = (value: string | undefined) => (value === undefined || value === 'x' ? '0' : value)
    return `${match[1]}.${part(match[2])}.${part(match[3])}`
  })
  return candidates.reduce((a, b) => (compareVersions(a, b) <= 0 ? a : b))
}

function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number)
  const pb = b.split('.').map(Number)
  for (let i = 0; i < 3; i++) if (pa[i] !== pb[i]) return (pa[i] ?? 0) - (pb[i] ?? 0)
  return 0
}
