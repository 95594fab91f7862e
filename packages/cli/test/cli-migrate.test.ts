import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connectClient } from '@hyperconn/testkit'
import type { TestDatabase } from '@hyperconn/testkit'
import { testDatabase } from '@hyperconn/testkit/vitest'
import type { MigrationReport } from '@hyperconn/core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FAKE_CONFIG, FIXTURE_CONFIG, runCli } from './support.js'

// `hyperconn migrate` as a child process (stdout a pipe, so plain lines) against real PostgreSQL: the
// fixture config gives every tenant a schema cli_<orgId> on one database and migrates it in a transaction.

let scratch: string
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'hyperconn-cli-'))
})
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true })
})

const orgs = (n: number, prefix = 'org'): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i + 1}`)

function envFor(database: TestDatabase, tenants: readonly string[], extra: Record<string, string> = {}): Record<string, string> {
  return { HC_CLI_URL: database.url, HC_CLI_TENANTS: tenants.join(','), ...extra }
}

/** Per tenant: whether its schema exists, and its tables and migration records (superuser view). */
async function stateOf(database: TestDatabase, tenants: readonly string[]): Promise<Record<string, { tables: string[]; migrations: string[] } | null>> {
  await using admin = await connectClient(database.url)
  const state: Record<string, { tables: string[]; migrations: string[] } | null> = {}
  for (const orgId of tenants) {
    const schema = `cli_${orgId}`
    const { rows: found } = await admin.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema])
    if (found.length === 0) {
      state[orgId] = null
      continue
    }
    const { rows: tables } = await admin.query<{ name: string }>(
      'SELECT table_name AS name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1',
      [schema],
    )
    const { rows: migrations } = await admin.query<{ name: string }>(`SELECT name FROM "${schema}".migrations ORDER BY 1`)
    state[orgId] = { tables: tables.map((t) => t.name), migrations: migrations.map((m) => m.name) }
  }
  return state
}

const MIGRATED = { tables: ['accounts', 'migrations'], migrations: ['001_accounts'] }

async function readReport(path: string): Promise<MigrationReport> {
  return JSON.parse(await readFile(path, 'utf8')) as MigrationReport
}

describe('hyperconn migrate (not a TTY: one line per tenant)', () => {
  it('migrates every tenant listed by the registry, prints a line each and a summary, writes the report, exits 0', async () => {
    await using database = await testDatabase('cli')
    const tenants = orgs(5)
    const report = join(scratch, 'all.json')
    const run = await runCli(['migrate', '--config', FIXTURE_CONFIG, '--report', report], { env: envFor(database, tenants) })
    expect(run.stderr).toBe('')
    expect(run.code, run.stdout).toBe(0)
    expect(run.lines[0]).toBe('migrating 5 tenants of service "core", 2 at a time')
    const okLines = run.lines.filter((line) => line.startsWith('ok '))
    expect(okLines).toHaveLength(5)
    for (const line of okLines) expect(line).toMatch(/^ok org[1-5] \d+ms$/)
    expect(okLines.map((line) => line.split(' ')[1]).sort()).toEqual(tenants)
    expect(run.lines).toContainEqual(expect.stringMatching(/^done: 5 tenants of service "core" in \d+\.\d s: 5 succeeded, 0 failed$/))
    expect(run.lines.at(-1)).toBe(`report written to ${report}`)

    const written = await readReport(report)
    expect(written).toMatchObject({ service: 'core', total: 5, failed: [], skipped: [], locked: [], notStarted: [], aborted: false })
    expect([...written.succeeded].sort()).toEqual(tenants)
    expect(await stateOf(database, tenants)).toEqual(Object.fromEntries(tenants.map((orgId) => [orgId, MIGRATED])))
  })

  it('a failing tenant: the others are migrated, its line and the report name it, nothing of it is left, exit 1', async () => {
    await using database = await testDatabase('cli')
    const tenants = orgs(4)
    const report = join(scratch, 'failed.json')
    // ghost has no secret: it fails before the config's migrate runs.
    const run = await runCli(['migrate', '-c', FIXTURE_CONFIG, '--tenants', [...tenants, 'ghost'].join(','), '--concurrency', '3', '--report', report], {
      env: envFor(database, tenants, { HC_CLI_FAIL: 'org3' }),
    })
    expect(run.code, run.stdout + run.stderr).toBe(1)
    expect(run.lines).toContain('FAILED org3 22012: division by zero')
    expect(run.lines).toContain('FAILED ghost (before its migration ran: see below)')
    expect(run.lines.filter((line) => line.startsWith('ok '))).toHaveLength(3)
    expect(run.lines).toContainEqual(expect.stringMatching(/^FAILED: 5 tenants of service "core" in .*: 3 succeeded, 2 failed$/))
    expect(run.lines).toContainEqual(expect.stringMatching(/^failed: (org3, ghost|ghost, org3)$/))
    expect(run.lines).toContainEqual(expect.stringMatching(/^ {2}FAILED ghost HC_SECRET_NOT_FOUND: Secret "clitest-ghost" was not found/))
    const written = await readReport(report)
    expect(written.failed).toContainEqual({ orgId: 'org3', error: { name: 'DatabaseError', code: '22012', message: 'division by zero' } })
    expect(written.failed.map((f) => f.orgId).sort()).toEqual(['ghost', 'org3'])
    expect([...written.succeeded].sort()).toEqual(['org1', 'org2', 'org4'])
    expect(await stateOf(database, tenants)).toEqual({ org1: MIGRATED, org2: MIGRATED, org3: null, org4: MIGRATED })
  })

  it('--dry-run lists the tenants that would be migrated and changes nothing', async () => {
    await using database = await testDatabase('cli')
    const tenants = orgs(3)
    const run = await runCli(['migrate', '-c', FIXTURE_CONFIG, '--dry-run'], { env: envFor(database, tenants) })
    expect(run.code, run.stderr).toBe(0)
    expect(run.lines).toEqual([...tenants, 'dry run: 3 tenants of service "core" would be migrated, 2 at a time; nothing was migrated'])
    expect(await stateOf(database, tenants)).toEqual({ org1: null, org2: null, org3: null })
  })

  it('--tenants @file migrates the ids listed in the file (comments and blank lines ignored), relative to the working directory', async () => {
    await using database = await testDatabase('cli')
    const tenants = orgs(5)
    await writeFile(join(scratch, 'tenants.txt'), '# the first wave\norg2\n\n  org4  \norg2\n# org5\n')
    const run = await runCli(['migrate', '--config', FIXTURE_CONFIG, '--tenants', '@tenants.txt', '--service', 'core'], {
      env: envFor(database, tenants),
      cwd: scratch,
    })
    expect(run.code, run.stdout + run.stderr).toBe(0)
    expect(run.lines[0]).toBe('migrating 2 tenants of service "core", 2 at a time')
    expect(run.lines.filter((line) => line.startsWith('ok ')).map((line) => line.split(' ')[1]).sort()).toEqual(['org2', 'org4'])
    expect(await stateOf(database, tenants)).toEqual({ org1: null, org2: MIGRATED, org3: null, org4: MIGRATED, org5: null })
  })

  it('bad flags and bad configs exit 2 with a message on stderr, before anything is migrated', async () => {
    await using database = await testDatabase('cli')
    const env = envFor(database, ['org1'])
    const cases: [string[], RegExp][] = [
      [['migrate', '-c', FIXTURE_CONFIG, '--concurrency', '0'], /--concurrency <n>' argument '0' is invalid\. expected an integer from 1 to 256/],
      [['migrate', '-c', FIXTURE_CONFIG, '--when-locked', 'never'], /Allowed choices are skip, wait/],
      [['migrate', '--tenants', 'org1'], /required option '-c, --config <file>' not specified/],
      [['migrate', '-c', FIXTURE_CONFIG, '--bogus'], /unknown option '--bogus'/],
      [['migrate', '-c', join(scratch, 'missing.config.ts')], /config file not found: .*missing\.config\.ts/],
      [['migrate', '-c', FIXTURE_CONFIG, '--tenants', '../etc'], /"\.\.\/etc" is not an org id/],
      [['migrate', '-c', FIXTURE_CONFIG, '--tenants', '@nope.txt'], /--tenants @nope\.txt: cannot read .*nope\.txt: no such file/],
      [['migrate', '-c', FIXTURE_CONFIG, '--service', 'billing'], /[Uu]nknown service "?billing/],
      [['migrate', '-c', FIXTURE_CONFIG, '--report', join(scratch, 'no/such/dir/report.json')], /--report .*: the directory .* does not exist/],
      [['frobnicate'], /unknown command 'frobnicate'/],
    ]
    // Two at a time: each is a Node start-up.
    for (let i = 0; i < cases.length; i += 2) {
      await Promise.all(
        cases.slice(i, i + 2).map(async ([args, message]) => {
          const run = await runCli(args, { env })
          expect({ args, code: run.code }).toEqual({ args, code: 2 })
          expect(run.stderr).toMatch(message)
        }),
      )
    }
    expect(await stateOf(database, ['org1'])).toEqual({ org1: null })
  }, 120_000)

  it('a config that is not one exits 2 and says what is wrong', async () => {
    const bad = join(scratch, 'bad.config.mjs')
    await writeFile(bad, 'export const registry = { tenant() {} }\n')
    const run = await runCli(['migrate', '-c', bad])
    expect(run.code).toBe(2)
    expect(run.stderr).toMatch(/bad\.config\.mjs: no migrate function/)
  })

  it('--help and --version exit 0', async () => {
    const help = await runCli(['migrate', '--help'])
    expect(help.code).toBe(0)
    expect(help.stdout).toContain('Usage: hyperconn migrate [options]')
    expect(help.stdout).toContain('--tenants <list>')
    const version = await runCli(['--version'])
    expect(version.code).toBe(0)
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/)
  })
})

describe('hyperconn migrate: Ctrl-C', () => {
  it('SIGINT after the first tenant: running tenants finish, the rest are not started, the report is written, exit 130', async () => {
    await using database = await testDatabase('cli')
    const tenants = orgs(6)
    const report = join(scratch, 'interrupted.json')
    let signalled = false
    const run = await runCli(['migrate', '-c', FIXTURE_CONFIG, '--tenants', tenants.join(','), '--concurrency', '1', '--report', report], {
      env: envFor(database, tenants, { HC_CLI_SLEEP: '0.8' }),
      onLine: (line, child) => {
        if (!signalled && line.startsWith('ok ')) {
          signalled = true
          child.kill('SIGINT')
        }
      },
    })
    expect(signalled).toBe(true)
    expect(run.code, run.stdout + run.stderr).toBe(130)
    expect(run.lines).toContain('interrupted: no new tenant is started, running ones finish (Ctrl-C again to exit now)')
    const written = await readReport(report)
    expect(written.aborted).toBe(true)
    expect(written.failed).toEqual([])
    // org1 was done when the signal came; org2 was running (or about to start) and finished.
    expect(written.succeeded.length).toBeGreaterThanOrEqual(1)
    expect(written.succeeded.length).toBeLessThanOrEqual(2)
    expect([...written.succeeded, ...written.notStarted]).toEqual(tenants)
    expect(written.notStarted).toEqual(tenants.slice(written.succeeded.length))
    expect(written.skipped).toEqual(written.notStarted)
    expect(run.lines).toContainEqual(expect.stringMatching(/^interrupted: 6 tenants .*not started \(interrupted\)$/))
    expect(run.lines).toContain(`not started: ${written.notStarted.join(', ')}`)
    // Each tenant is either migrated in full or untouched: none half-migrated.
    const state = await stateOf(database, tenants)
    for (const orgId of tenants) expect(state[orgId]).toEqual(written.succeeded.includes(orgId) ? MIGRATED : null)
  })
})

describe('hyperconn migrate: more signals (a stand-in registry, no database)', () => {
  it('SIGTERM works as the first Ctrl-C and exits 143', async () => {
    const report = join(scratch, 'sigterm.json')
    let signalled = false
    const run = await runCli(['migrate', '-c', FAKE_CONFIG, '--tenants', 'a,b,c,d', '--report', report], {
      env: { HC_FAKE_MS: '300' },
      onLine: (line, child) => {
        if (!signalled && line.startsWith('ok ')) {
          signalled = true
          child.kill('SIGTERM')
        }
      },
    })
    expect(run.code, run.stdout + run.stderr).toBe(143)
    const written = await readReport(report)
    expect(written.aborted).toBe(true)
    expect(written.notStarted.length).toBeGreaterThanOrEqual(2)
  })

  it('a second Ctrl-C exits at once, without waiting for the running tenant or writing a report', async () => {
    const report = join(scratch, 'twice.json')
    let started = 0
    const run = await runCli(['migrate', '-c', FAKE_CONFIG, '--tenants', 'a,b', '--report', report], {
      env: { HC_FAKE_MS: '20000' },
      onLine: (line, child) => {
        if (line.startsWith('migrating ')) {
          started = Date.now()
          child.kill('SIGINT')
        }
        if (line.startsWith('interrupted: no new tenant')) child.kill('SIGINT')
      },
    })
    expect(run.code, run.stdout + run.stderr).toBe(130)
    expect(Date.now() - started).toBeLessThan(10_000)
    await expect(readFile(report, 'utf8')).rejects.toThrow(/ENOENT/)
  })
})
