#!/usr/bin/env node
import { createRequire } from 'node:module'
import { redactConnectionString } from '@hyperconn/core'
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander'
import { isConcurrency } from './config-loader.js'
import { EXIT_CODES } from './exit-codes.js'
import { migrateCommand } from './migrate-command.js'
import type { MigrateCommandOptions } from './migrate-command.js'

const { version } = createRequire(import.meta.url)('../package.json') as { version: string }

const SIGNAL_EXIT = { SIGINT: EXIT_CODES.interrupted, SIGTERM: 143 } as const

function parseConcurrency(value: string): number {
  const n = Number(value)
  if (!/^\d+$/.test(value.trim()) || !isConcurrency(n)) throw new InvalidArgumentError('expected an integer from 1 to 256.')
  return n
}

/** Resolves with the exit status once the command is done; the caller exits with it. */
async function main(argv: readonly string[]): Promise<number> {
  let status: number = EXIT_CODES.ok
  const interruption = new AbortController()
  const program = new Command('hyperconn')
    .description('Tools for @hyperconn/core registries: migrate every tenant.')
    .version(version, '-v, --version')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()

  program
    .command('migrate')
    .description('Migrate the tenants of one service with the migrate function of a config module.')
    .requiredOption('-c, --config <file>', 'config module (JS or TS) exporting registry or createRegistry, and migrate')
    .option('-s, --service <name>', "service to migrate (default: the config's service, or the registry's only one)")
    .option('-t, --tenants <list>', "'all' (registry.listTenants()), org ids separated by commas, or @file with one org id per line (default: the config's tenants, else all)")
    .option('-n, --concurrency <n>', "tenants migrated at once (default: the config's concurrency, else 4)", parseConcurrency)
    .option('-r, --report <file>', 'write the JSON report (succeeded, failed, skipped, not started) to this file')
    .option('--dry-run', 'list the tenants that would be migrated, and migrate nothing')
    .addOption(new Option('--when-locked <mode>', "when another runner holds a tenant's migration lock: skip it or wait for it (default: skip)").choices(['skip', 'wait']))
    .addHelpText(
      'after',
      `
Exit status: 0 when no tenant failed, 1 when one did, 2 for bad flags or config, 130 after Ctrl-C
(running tenants finish, the rest are reported as not started; a second Ctrl-C exits at once).

Examples:
  hyperconn migrate --config hyperconn.config.ts
  hyperconn migrate -c hyperconn.config.ts --tenants @tenants.txt --concurrency 8 --report report.json`,
    )
    .action(async (options: MigrateCommandOptions) => {
      status = await migrateCommand(options, {
        stdout: process.stdout,
        stderr: process.stderr,
        cwd: process.cwd(),
        signal: interruption.signal,
      })
    })

  // First Ctrl-C (or SIGTERM): stop starting tenants and let running ones finish; second: leave at once.
  let received: keyof typeof SIGNAL_EXIT | undefined
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (received !== undefined) process.exit(SIGNAL_EXIT[signal])
      received = signal
      interruption.abort()
    })
  }

  try {
    await program.parseAsync(argv, { from: 'user' })
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help, --version: 0; a bare `hyperconn` shows the help and is a usage error like a bad flag.
      return error.exitCode === 0 ? EXIT_CODES.ok : EXIT_CODES.usage
    }
    throw error
  }
  return status === EXIT_CODES.interrupted && received !== undefined ? SIGNAL_EXIT[received] : status
}

/** Exits once what was written to stdout and stderr has been flushed (a pipe may still be buffering it). */
function exit(status: number): void {
  let pending = 2
  const done = () => {
    if (--pending === 0) process.exit(status)
  }
  process.stdout.write('', done)
  process.stderr.write('', done)
}

main(process.argv.slice(2)).then(exit, (error: unknown) => {
  process.stderr.write(`hyperconn: unexpected error: ${redactConnectionString(error instanceof Error ? (error.stack ?? error.message) : String(error))}\n`)
  exit(EXIT_CODES.failed)
})
