import { describe, expect, it } from 'vitest'
import type { MigrationProgress, MigrationReport } from '@hyperconn/core'
import { createProgressRenderer } from '../src/progress-renderer.js'

/** Collects what is written; `isTTY` and `columns` as a terminal or a pipe would have them. */
class FakeStream {
  output = ''
  constructor(
    readonly isTTY: boolean,
    readonly columns = 120,
  ) {}
  write(chunk: string): boolean {
    this.output += chunk
    return true
  }
}

// eslint-disable-next-line no-control-regex
const ANSI = /\x1B(?:\[[0-9;?]*[A-Za-z]|[78])/g
const plain = (text: string): string => text.replace(ANSI, '')

function progress(done: number, orgId: string, outcome: MigrationProgress['outcome'], failed = 0, skipped = 0): MigrationProgress {
  return { orgId, outcome, durationMs: 40 + done, done, failed, skipped, total: 5 }
}

const REPORT: MigrationReport = {
  service: 'core',
  total: 5,
  succeeded: ['t1', 't3'],
  failed: [
    { orgId: 't2', error: { name: 'DatabaseError', code: '42P07', message: 'relation "accounts"\nalready exists' } },
    { orgId: 't5', error: { name: 'SecretNotFoundError', code: 'HC_SECRET_NOT_FOUND', message: 'Secret "p-t5" was not found.' } },
  ],
  skipped: ['t4'],
  locked: ['t4'],
  notStarted: [],
  aborted: false,
  durationMs: 1234,
}

function drive(stream: FakeStream, tty?: boolean): void {
  const renderer = createProgressRenderer(stream, tty === undefined ? {} : { tty })
  renderer.start({ service: 'core', total: 5, concurrency: 2 })
  renderer.tenant(progress(1, 't1', 'succeeded'))
  renderer.tenant(progress(2, 't2', 'failed', 1), { name: 'DatabaseError', code: '42P07', message: 'relation "accounts"\nalready exists' })
  renderer.note('interrupted: no new tenant is started')
  renderer.tenant(progress(3, 't3', 'succeeded', 1))
  renderer.tenant(progress(4, 't4', 'locked', 1, 1))
  renderer.tenant(progress(5, 't5', 'failed', 2, 1))
  renderer.finish(REPORT)
}

describe('progress renderer', () => {
  it('not a TTY: one plain line per tenant, notes, and the summary', () => {
    const stream = new FakeStream(false)
    drive(stream)
    expect(stream.output).toBe(
      [
        'migrating 5 tenants of service "core", 2 at a time',
        'ok t1 41ms',
        'FAILED t2 42P07: relation "accounts" already exists',
        'interrupted: no new tenant is started',
        'ok t3 43ms',
        'locked t4 (another runner holds its migration lock)',
        'FAILED t5 (before its migration ran: see below)',
        'FAILED: 5 tenants of service "core" in 1.2 s: 2 succeeded, 2 failed, 1 locked by another runner',
        'failed: t2, t5',
        '  FAILED t5 HC_SECRET_NOT_FOUND: Secret "p-t5" was not found.',
        '',
      ].join('\n'),
    )
    expect(stream.output).not.toMatch(ANSI)
  })

  it('a TTY: a progress bar with done/total, failed, locked and ETA; failures above it; the summary below', () => {
    const stream = new FakeStream(true, 100)
    drive(stream)
    const raw = stream.output
    expect(raw).toContain('\x1B[?25l') // cursor hidden while the bar runs...
    expect(raw).toContain('\x1B[?25h') // ...and shown again
    const text = plain(raw)
    expect(text.startsWith('migrating 5 tenants of service "core", 2 at a time\n')).toBe(true)
    // The final state of the bar: full, with the counters.
    expect(text).toMatch(/█{30} {1,3}5\/5 tenants \| {0,2}2 failed \| {0,2}1 locked \| .* \| ETA .+/)
    expect(text).toContain('FAILED t2 42P07: relation "accounts" already exists')
    expect(text).toContain('locked t4 (another runner holds its migration lock)')
    expect(text).toContain('interrupted: no new tenant is started')
    expect(text).not.toMatch(/^ok t1/m) // successes only move the bar
    expect(text.endsWith(
      [
        'FAILED: 5 tenants of service "core" in 1.2 s: 2 succeeded, 2 failed, 1 locked by another runner',
        'failed: t2, t5',
        '  FAILED t5 HC_SECRET_NOT_FOUND: Secret "p-t5" was not found.',
        '',
      ].join('\n'),
    )).toBe(true)
    for (const line of text.split('\n')) expect(line.length).toBeLessThanOrEqual(100)
  })

  it('the bar is drawn while tenants run (before finish), and stops redrawing after it', async () => {
    const stream = new FakeStream(true, 100)
    const renderer = createProgressRenderer(stream, { fps: 50 })
    renderer.start({ service: 'core', total: 10, concurrency: 2 })
    renderer.tenant({ orgId: 't1', outcome: 'succeeded', durationMs: 5, done: 1, failed: 0, skipped: 0, total: 10 })
    renderer.tenant({ orgId: 't2', outcome: 'succeeded', durationMs: 5, done: 2, failed: 0, skipped: 0, total: 10 })
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect(plain(stream.output)).toMatch(/█{6}░{24} {1,3}2\/10 tenants \| {0,2}0 failed/)
    renderer.finish({ ...REPORT, total: 10, succeeded: ['t1', 't2'], failed: [], locked: [], skipped: [] })
    const length = stream.output.length
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect(stream.output.length).toBe(length)
  })

  it('no tenant: no bar, and the cursor is left alone', () => {
    const stream = new FakeStream(true)
    const renderer = createProgressRenderer(stream)
    renderer.start({ service: 'core', total: 0, concurrency: 4 })
    renderer.finish({ ...REPORT, total: 0, succeeded: [], failed: [], locked: [], skipped: [], durationMs: 2 })
    expect(stream.output).toBe('migrating 0 tenants of service "core", 4 at a time\ndone: 0 tenants of service "core" in 0.0 s: 0 succeeded, 0 failed\n')
  })

  it('an interrupted run: the summary says so and names the tenants not started', () => {
    const stream = new FakeStream(false)
    const renderer = createProgressRenderer(stream)
    const ids = Array.from({ length: 25 }, (_, i) => `n${i + 1}`)
    renderer.finish({ ...REPORT, succeeded: ['t1'], failed: [], locked: [], skipped: ids, notStarted: ids, aborted: true, total: 26 })
    expect(stream.output.split('\n')).toEqual([
      'interrupted: 26 tenants of service "core" in 1.2 s: 1 succeeded, 0 failed, 25 not started (interrupted)',
      `not started: ${ids.slice(0, 20).join(', ')} and 5 more (see the report)`,
      '',
    ])
  })
})
