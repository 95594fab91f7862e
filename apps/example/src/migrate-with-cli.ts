import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { MigrationReport } from '@hyperconn/core'

const require = createRequire(import.meta.url)
const APP_DIR = join(dirname(fileURLToPath(import.meta.url)), '..')
/** This app's config of the CLI: migrations/pricing for the stores (see the file). */
export const CLI_CONFIG = join(APP_DIR, 'hyperconn.config.ts')

export interface MigrateWithCliOptions {
  /** Secret names are `${project}-<orgId>`. */
  project: string
  /** The local Secrets Manager endpoint the stores' secrets are in. */
  secretsEndpoint: string
  /** Passed as `--tenants @<file>`, one per line. */
  stores: readonly string[]
  /** Aborting sends the CLI a SIGINT (it lets running stores finish and exits 130). */
  signal?: AbortSignal
}

export interface CliMigration {
  /** The command line, as a user would type it. */
  readonly command: string
  /** The exit status (null when killed by a signal). */
  readonly code: number | null
  /** What it printed on stdout, line by line (not a TTY: one line per store, then the summary). */
  readonly lines: readonly string[]
  readonly stderr: string
  /** Its `--report` JSON, undefined if it wrote none. */
  readonly report: MigrationReport | undefined
}

/**
 * Runs `hyperconn migrate --config hyperconn.config.ts --tenants @stores.txt --report report.json` in a
 * child process, as a deploy step would. Like the rest of the demo it runs from the workspace's
 * TypeScript sources (`node --conditions=@hyperconn/source --import tsx`); an installed @hyperconn/cli is
 * run as `npx hyperconn migrate ...`.
 */
export async function migrateWithCli(options: MigrateWithCliOptions): Promise<CliMigration> {
  const scratch = await mkdtemp(join(tmpdir(), 'hyperconn-demo-migrate-'))
  try {
    const storesFile = join(scratch, 'stores.txt')
    const reportFile = join(scratch, 'report.json')
    await writeFile(storesFile, `# the stores whose pricing schema is migrated\n${options.stores.join('\n')}\n`)
    const cli = join(dirname(require.resolve('@hyperconn/cli/package.json')), 'src/cli.ts')
    const args = ['migrate', '--config', CLI_CONFIG, '--tenants', `@${storesFile}`, '--report', reportFile]
    const child = spawn(process.execPath, ['--conditions=@hyperconn/source', '--import', pathToFileURL(require.resolve('tsx')).href, cli, ...args], {
      cwd: APP_DIR,
      env: {
        // The SDK warns on every Node < 22 start that *future* releases will need Node 22: noise here.
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
        ...process.env,
        HYPERCONN_PROJECT: options.project,
        HYPERCONN_SECRETS_ENDPOINT: options.secretsEndpoint,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const onAbort = () => child.kill('SIGINT')
    options.signal?.addEventListener('abort', onAbort, { once: true })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject)
      child.once('close', resolve)
    }).finally(() => options.signal?.removeEventListener('abort', onAbort))
    const report = await readFile(reportFile, 'utf8').then(
      (text) => JSON.parse(text) as MigrationReport,
      () => undefined,
    )
    return {
      command: 'hyperconn migrate --config hyperconn.config.ts --tenants @stores.txt --report report.json',
      code,
      lines: stdout.split('\n').filter((line) => line !== ''),
      stderr,
      report,
    }
  } finally {
    await rm(scratch, { recursive: true, force: true })
  }
}
