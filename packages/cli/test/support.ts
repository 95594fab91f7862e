import { spawn } from 'node:child_process'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
export const PACKAGE_DIR = join(here, '..')
export const FIXTURE_CONFIG = join(here, 'fixtures/tenants.config.ts')
export const FAKE_CONFIG = join(here, 'fixtures/fake-registry.config.js')
const CLI_SOURCE = join(PACKAGE_DIR, 'src/cli.ts')
// tsx's ESM loader, by absolute URL: `--import tsx` would resolve it from the child's working directory.
const TSX_LOADER = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href

export interface CliRun {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
  /** stdout split into lines, without the empty last one. */
  readonly lines: string[]
}

export interface CliOptions {
  env?: Record<string, string>
  cwd?: string
  /** Called with each complete stdout line as it arrives, with the child (to signal it). */
  onLine?: (line: string, child: { kill(signal: NodeJS.Signals): boolean }) => void
  timeoutMs?: number
}

/**
 * Runs `hyperconn <args>` from the TypeScript sources (the workspace's source condition, tsx as loader) in
 * a child process whose stdout and stderr are pipes, i.e. not a TTY.
 */
export function runCli(args: readonly string[], options: CliOptions = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--conditions=@hyperconn/source', '--import', TSX_LOADER, CLI_SOURCE, ...args], {
      cwd: options.cwd ?? PACKAGE_DIR,
      env: { ...process.env, FORCE_COLOR: '0', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    let partial = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk
      partial += chunk
      const lines = partial.split('\n')
      partial = lines.pop() ?? ''
      for (const line of lines) options.onLine?.(line, child)
    })
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk
    })
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`hyperconn ${args.join(' ')} did not exit within ${options.timeoutMs ?? 60_000} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`))
    }, options.timeoutMs ?? 60_000)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr, lines: stdout.split('\n').filter((line, i, all) => line !== '' || i < all.length - 1) })
    })
  })
}
