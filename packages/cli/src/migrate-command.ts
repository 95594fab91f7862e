import { existsSync, statSync } from 'node:fs'
import { rm, writeFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { migrateTenants, redactConnectionString } from '@hyperconn/core'
import type { MigrationReport } from '@hyperconn/core'
import type { CliRegistry } from './config.js'
import { loadConfig, messageOf } from './config-loader.js'
import type { LoadedConfig } from './config-loader.js'
import { EXIT_CODES, UsageError } from './exit-codes.js'
import type { ExitCode } from './exit-codes.js'
import { createProgressRenderer } from './progress-renderer.js'
import type { ErrorSummary, OutputStream, ProgressRenderer } from './progress-renderer.js'
import { parseTenantsOption, resolveTenants } from './tenant-list.js'

/** The flags of `hyperconn migrate`, parsed. */
export interface MigrateCommandOptions {
  config: string
  service?: string | undefined
  /** `all`, `a,b,c` or `@file`. Default: the config's `tenants`, else all. */
  tenants?: string | undefined
  concurrency?: number | undefined
  /** Where to write the JSON report. */
  report?: string | undefined
  dryRun?: boolean | undefined
  whenLocked?: 'skip' | 'wait' | undefined
}

/** The process around the command: injectable for tests. */
export interface CommandContext {
  readonly stdout: OutputStream
  readonly stderr: OutputStream
  readonly cwd: string
  /** Aborted on Ctrl-C: no new tenant is started, running ones finish. */
  readonly signal: AbortSignal
  /** Progress bar or plain lines; default: by `stdout.isTTY`. */
  readonly renderer?: ProgressRenderer
}

const DEFAULT_CONCURRENCY = 4
/** Error names of core meaning the config or the flags are wrong, not a tenant or the network. */
const USAGE_ERRORS = new Set(['InvalidOptionsError', 'UnknownServiceError', 'InvalidTenantIdError', 'UnsupportedError'])

/**
 * `hyperconn migrate`: loads the config, resolves the tenants, runs `migrateTenants` with a progress
 * display, writes the report, closes the registry. Resolves with the exit status; usage and config
 * problems are printed on stderr (status 2).
 */
export async function migrateCommand(options: MigrateCommandOptions, context: CommandContext): Promise<ExitCode> {
  const { stdout, stderr, cwd } = context
  let config: LoadedConfig | undefined
  let reportPath: string | undefined
  try {
    reportPath = options.report === undefined ? undefined : checkReportPath(options.report, cwd)
    // A report left by an earlier run must never be read as this run's outcome.
    if (reportPath !== undefined) await rm(reportPath, { force: true })
    const selection = options.tenants === undefined ? undefined : await parseTenantsOption(options.tenants, cwd)
    config = await loadConfig(options.config, cwd)
    const service = options.service ?? config.service ?? onlyServiceOf(config.registry)
    const concurrency = options.concurrency ?? config.concurrency ?? DEFAULT_CONCURRENCY
    const whenLocked = options.whenLocked ?? config.whenLocked ?? 'skip'
    const tenants = await resolveTenants(selection ?? config.tenants ?? 'all', config.registry, service)

    if (options.dryRun === true) {
      for (const orgId of tenants) stdout.write(`${orgId}\n`)
      stdout.write(`dry run: ${tenants.length} tenant${tenants.length === 1 ? '' : 's'} of service "${service}" would be migrated, ${concurrency} at a time; nothing was migrated\n`)
      return EXIT_CODES.ok
    }

    const renderer = context.renderer ?? createProgressRenderer(stdout)
    // The failure as core will report it, for the live line (core's progress event carries no error).
    const errors = new Map<string, ErrorSummary>()
    const migrate = config.migrate
    const onAbort = () => renderer.note('interrupted: no new tenant is started, running ones finish (Ctrl-C again to exit now)')
    context.signal.addEventListener('abort', onAbort, { once: true })
    renderer.start({ service, total: tenants.length, concurrency })
    let report: MigrationReport
    try {
      report = await migrateTenants(config.registry, {
        service,
        tenants,
        concurrency,
        whenLocked,
        signal: context.signal,
        migrate: async (orgId, migrateContext) => {
          try {
            return await migrate(orgId, migrateContext)
          } catch (error) {
            errors.set(orgId, summarize(error))
            throw error
          }
        },
        onProgress: (progress) => renderer.tenant(progress, errors.get(progress.orgId)),
      })
    } finally {
      context.signal.removeEventListener('abort', onAbort)
    }
    renderer.finish(report)
    let status: ExitCode = report.aborted ? EXIT_CODES.interrupted : report.failed.length > 0 ? EXIT_CODES.failed : EXIT_CODES.ok
    if (reportPath !== undefined) {
      try {
        await writeFile(reportPath, `${JSON.stringify(report, null, 2)}\n`)
        stdout.write(`report written to ${reportPath}\n`)
      } catch (error) {
        stderr.write(`hyperconn: could not write the report to ${reportPath}: ${messageOf(error)}\n`)
        if (status === EXIT_CODES.ok) status = EXIT_CODES.failed
      }
    }
    return status
  } catch (error) {
    const usage = error instanceof UsageError || (error instanceof Error && USAGE_ERRORS.has(error.name))
    const message = redactConnectionString(messageOf(error))
    stderr.write(`hyperconn: ${usage ? '' : 'error: '}${message}\n`)
    // The run failed before a report existed: CI still gets one, saying why.
    if (reportPath !== undefined) await writeFile(reportPath, `${JSON.stringify({ error: message }, null, 2)}\n`).catch(() => undefined)
    return usage ? EXIT_CODES.usage : EXIT_CODES.failed
  } finally {
    if (config !== undefined) await closeRegistry(config.registry, stderr)
  }
}

/** The report goes to an existing directory, and not onto a directory: checked before migrating anything. */
function checkReportPath(file: string, cwd: string): string {
  const path = resolve(cwd, file)
  const parent = dirname(path)
  if (!existsSync(parent) || !statSync(parent).isDirectory()) throw new UsageError(`--report ${file}: the directory ${parent} does not exist`)
  if (existsSync(path) && statSync(path).isDirectory()) throw new UsageError(`--report ${file}: ${path} is a directory`)
  return path
}

/** A registry with one service knows which one `tenant(orgId)` means; with several, the service must be named. */
function onlyServiceOf(registry: CliRegistry): string {
  try {
    return registry.tenant('hyperconn-cli').service
  } catch (error) {
    throw new UsageError(`no service given and the registry has several: pass --service <name> or set service in the config (${messageOf(error)})`, {
      cause: error,
    })
  }
}

/** As core's report describes a failure: name, code, message with connection strings masked. */
function summarize(error: unknown): ErrorSummary {
  if (!(error instanceof Error)) return { name: 'Error', code: undefined, message: redactConnectionString(String(error)) }
  const code = (error as { code?: unknown }).code
  return { name: error.name, code: typeof code === 'string' ? code : undefined, message: redactConnectionString(error.message) }
}

async function closeRegistry(registry: CliRegistry, stderr: OutputStream): Promise<void> {
  if (typeof registry.close !== 'function') return
  try {
    await registry.close()
  } catch (error) {
    stderr.write(`hyperconn: closing the registry failed: ${redactConnectionString(messageOf(error))}\n`)
  }
}
