import cliProgress from 'cli-progress'
import type { MigrationProgress, MigrationReport } from '@hyperconn/core'

/** Where the renderer writes: `process.stdout`, or a fake in tests. */
export interface OutputStream {
  write(chunk: string): boolean
  readonly isTTY?: boolean | undefined
  /** Terminal width (a TTY's); the bar fits in it. */
  readonly columns?: number | undefined
}

/** A tenant's failure as shown: name, code and redacted message (as in the report). */
export interface ErrorSummary {
  readonly name: string
  readonly code: string | undefined
  readonly message: string
}

export interface RunInfo {
  readonly service: string
  readonly total: number
  readonly concurrency: number
}

/** The CLI's output during a run: a progress bar on a terminal, one line per tenant otherwise. */
export interface ProgressRenderer {
  /** Before the first tenant starts. */
  start(info: RunInfo): void
  /** After each tenant; `error` for a failed one when it is known. */
  tenant(progress: MigrationProgress, error?: ErrorSummary): void
  /** A message of the CLI's own during the run (e.g. that Ctrl-C was received). */
  note(message: string): void
  /** Ends the display and prints the summary. */
  finish(report: MigrationReport): void
}

export interface RendererOptions {
  /** Draw the progress bar. Default: `stream.isTTY`. */
  tty?: boolean
  /** Redraws per second of the bar (default 10). */
  fps?: number
}

/** The bar on a TTY stream, plain lines otherwise. */
export function createProgressRenderer(stream: OutputStream, options: RendererOptions = {}): ProgressRenderer {
  return (options.tty ?? stream.isTTY === true) ? new BarRenderer(stream, options.fps ?? 10) : new LineRenderer(stream)
}

const line = (text: string): string => `${text}\n`
const oneLine = (text: string): string => text.replace(/\s*[\r\n]+\s*/g, ' ').trim()

/** `FAILED t7 42P01: relation "x" does not exist` */
export function tenantLine(progress: MigrationProgress, error?: ErrorSummary): string {
  switch (progress.outcome) {
    case 'succeeded':
      return `ok ${progress.orgId} ${progress.durationMs}ms`
    case 'locked':
      return `locked ${progress.orgId} (another runner holds its migration lock)`
    case 'failed':
      // No error: it failed outside the config's migrate (secret, connection, lock); the summary shows it.
      return error === undefined ? `FAILED ${progress.orgId} (before its migration ran: see below)` : failedLine(progress.orgId, error)
  }
}

function failedLine(orgId: string, error: ErrorSummary): string {
  return `FAILED ${orgId} ${error.code ?? error.name}: ${oneLine(error.message)}`
}

export function startLine(info: RunInfo): string {
  return `migrating ${info.total} tenant${info.total === 1 ? '' : 's'} of service "${info.service}", ${info.concurrency} at a time`
}

const MAX_LISTED = 20

/**
 * The summary: one line of counts, then the failed and not-started tenants (the first few of each), and
 * the errors of failed tenants not already shown (`shown`) with their error.
 */
export function summaryLines(report: MigrationReport, shown: ReadonlySet<string> = new Set()): string[] {
  const seconds = (report.durationMs / 1000).toFixed(1)
  const parts = [`${report.succeeded.length} succeeded`, `${report.failed.length} failed`]
  if (report.locked.length > 0) parts.push(`${report.locked.length} locked by another runner`)
  if (report.aborted) parts.push(`${report.notStarted.length} not started (interrupted)`)
  const lines = [`${report.failed.length > 0 ? 'FAILED' : report.aborted ? 'interrupted' : 'done'}: ${report.total} tenants of service "${report.service}" in ${seconds} s: ${parts.join(', ')}`]
  const list = (label: string, ids: readonly string[]) => {
    if (ids.length === 0) return
    const more = ids.length > MAX_LISTED ? ` and ${ids.length - MAX_LISTED} more (see the report)` : ''
    lines.push(`${label}: ${ids.slice(0, MAX_LISTED).join(', ')}${more}`)
  }
  list('failed', report.failed.map((f) => f.orgId))
  const unexplained = report.failed.filter((f) => !shown.has(f.orgId))
  for (const { orgId, error } of unexplained.slice(0, MAX_LISTED)) lines.push(`  ${failedLine(orgId, error)}`)
  list('not started', report.notStarted)
  return lines
}

/** One line per tenant, for CI logs and pipes. */
class LineRenderer implements ProgressRenderer {
  readonly #stream: OutputStream
  readonly #shown = new Set<string>()
  constructor(stream: OutputStream) {
    this.#stream = stream
  }
  start(info: RunInfo): void {
    this.#stream.write(line(startLine(info)))
  }
  tenant(progress: MigrationProgress, error?: ErrorSummary): void {
    if (error !== undefined) this.#shown.add(progress.orgId)
    this.#stream.write(line(tenantLine(progress, error)))
  }
  note(message: string): void {
    this.#stream.write(line(message))
  }
  finish(report: MigrationReport): void {
    for (const text of summaryLines(report, this.#shown)) this.#stream.write(line(text))
  }
}

const BAR_FORMAT = '{bar} {value}/{total} tenants | {failed} failed | {locked} locked | {duration_formatted} | ETA {eta_formatted}'

/**
 * cli-progress's bar: done/total, failed, locked, elapsed time and ETA, redrawn at most `fps` times a second.
 * Failed and locked tenants and notes are printed above the bar; successful ones only move it.
 */
class BarRenderer implements ProgressRenderer {
  readonly #stream: OutputStream
  readonly #fps: number
  readonly #shown = new Set<string>()
  #bars: cliProgress.MultiBar | undefined
  #bar: cliProgress.SingleBar | undefined
  readonly #showCursor = (): void => {
    this.#stream.write('\x1B[?25h')
  }

  constructor(stream: OutputStream, fps: number) {
    this.#stream = stream
    this.#fps = fps
  }

  start(info: RunInfo): void {
    this.#stream.write(line(startLine(info)))
    if (info.total === 0) return
    // The bar hides the cursor: show it again if the process exits before finish() (a second Ctrl-C).
    process.once('exit', this.#showCursor)
    this.#bars = new cliProgress.MultiBar(
      {
        // cli-progress only uses write(), isTTY and columns of its stream.
        stream: this.#stream as NodeJS.WritableStream,
        format: BAR_FORMAT,
        fps: this.#fps,
        barsize: 30,
        hideCursor: true,
        clearOnComplete: false,
        stopOnComplete: false,
        gracefulExit: false, // the CLI handles Ctrl-C itself (and stops the bar in finish)
        etaBuffer: 50,
        autopadding: true,
      },
      cliProgress.Presets.shades_classic,
    )
    this.#bar = this.#bars.create(info.total, 0, { failed: 0, locked: 0 })
  }

  tenant(progress: MigrationProgress, error?: ErrorSummary): void {
    if (error !== undefined) this.#shown.add(progress.orgId)
    if (progress.outcome !== 'succeeded') this.#bars?.log(line(tenantLine(progress, error)))
    this.#bar?.update(progress.done, { failed: progress.failed, locked: progress.skipped })
  }

  note(message: string): void {
    if (this.#bars === undefined) this.#stream.write(line(message))
    else this.#bars.log(line(message))
  }

  finish(report: MigrationReport): void {
    if (this.#bars !== undefined) {
      const done = report.succeeded.length + report.failed.length + report.locked.length
      this.#bar?.update(done, { failed: report.failed.length, locked: report.locked.length })
      this.#bars.update() // prints what log() buffered: stop() alone would drop it
      this.#bars.stop()
      this.#bars = undefined
      process.removeListener('exit', this.#showCursor)
    }
    for (const text of summaryLines(report, this.#shown)) this.#stream.write(line(text))
  }
}
