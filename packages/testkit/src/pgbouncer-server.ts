import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { createHash, createHmac, pbkdf2Sync } from 'node:crypto'
import { accessSync, chownSync, closeSync, constants, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import pg from 'pg'
import type { PostgresServer } from './postgres-server.js'
import {
  HOST,
  findFreePort,
  hasExited,
  killAndWait,
  killWatchdog,
  processEnded,
  serverOsUser,
  signal,
  sleepSync,
  spawnWatchdog,
  track,
  untrack,
} from './processes.js'
import type { TrackedServer } from './processes.js'
import { connectClient } from './test-database.js'

export interface StartPgBouncerOptions {
  /**
   * The PostgreSQL server to pool (from startPostgres()). Its superuser, from `adminUrl`, is PgBouncer's first
   * user and its admin (`url('pgbouncer')` is the admin console: SHOW POOLS, RELOAD, ...).
   */
  server: Pick<PostgresServer, 'adminUrl' | 'port'>
  /** `default_pool_size`: server connections per database/user pair. Default 4. */
  defaultPoolSize?: number
  /** `max_client_conn`. Default 200. */
  maxClientConn?: number
}

/**
 * A real PgBouncer (transaction pooling, SCRAM-SHA-256 both ways) in front of a test server, on a free
 * 127.0.0.1 port. Every database of the server is reachable through it (wildcard entry); a role can log in
 * through it once addUser() has been called for it (the server's superuser from the start).
 */
export interface PgBouncer extends AsyncDisposable {
  readonly port: number
  /** The running pgbouncer process (a new one after restart()); undefined once stopped. */
  readonly pid: number | undefined
  /** URL of `database` through PgBouncer, as the server's superuser. */
  url(database: string): string
  /** URL of `database` through PgBouncer as `user` (who must have been added with addUser()). */
  url(database: string, user: string, password: string): string
  /**
   * Lets `user` log in through PgBouncer: copies the role's SCRAM verifier from `pg_authid` into the auth
   * file and RELOADs PgBouncer (done when this resolves). Throws if the role does not exist, has no SCRAM
   * password, or `password` does not match it.
   */
  addUser(user: string, password: string): Promise<void>
  /** Stops PgBouncer (as stop() does) and starts it again on the same port and configuration. */
  restart(): Promise<void>
  /** SIGINT (safe shutdown: waits for open transactions), SIGKILL after 5 s; removes the temp dir. Idempotent. */
  stop(): Promise<void>
}

/** How to get the binary, for error messages and warnings. */
export const PGBOUNCER_INSTALL_HINT =
  'install PgBouncer (Debian/Ubuntu: `sudo apt-get install -y pgbouncer`; macOS: `brew install pgbouncer`) or put `pgbouncer` on PATH'

/** Where distributions put it (Debian: /usr/sbin, often not on a non-root PATH). */
const FALLBACK_BINARIES = ['/usr/sbin/pgbouncer', '/usr/local/sbin/pgbouncer']
const DEFAULT_POOL_SIZE = 4
const DEFAULT_MAX_CLIENT_CONN = 200
const START_ATTEMPTS = 3
const START_TIMEOUT_MS = 30_000
const PROBE_INTERVAL_MS = 50
/** Safe shutdown waits for open transactions; a test that left one open should not hang stop(). */
const STOP_ESCALATION_MS = 5_000
const LOG_TAIL_CHARS = 4_000

/** The `pgbouncer` executable: the first on PATH, else /usr/sbin or /usr/local/sbin; undefined if none. */
export function pgbouncerBinary(): string | undefined {
  const onPath = (process.env.PATH ?? '')
    .split(delimiter)
    .filter((dir) => dir !== '')
    .map((dir) => join(dir, 'pgbouncer'))
  return [...onPath, ...FALLBACK_BINARIES].find(isExecutableFile)
}

export async function startPgBouncer(options: StartPgBouncerOptions): Promise<PgBouncer> {
  const binary = pgbouncerBinary()
  if (binary === undefined) throw new Error(`PgBouncer not found on PATH nor in /usr/sbin: ${PGBOUNCER_INSTALL_HINT}`)
  const admin = new URL(options.server.adminUrl)
  const superuser = { user: decodeURIComponent(admin.username), password: decodeURIComponent(admin.password) }
  const verifier = await scramVerifier(options.server.adminUrl, superuser.user, superuser.password)
  // pgbouncer refuses to run as root: then it runs as the OS user embedded PostgreSQL runs as.
  const osUser = serverOsUser()
  const dir = await mkdtemp(join(tmpdir(), 'hyperconn-pgbouncer-'))
  const bouncer = new RunningPgBouncer({
    binary,
    osUser,
    dir,
    adminUrl: options.server.adminUrl,
    superuser,
    databases: `* = host=${admin.hostname} port=${options.server.port}`,
    defaultPoolSize: options.defaultPoolSize ?? DEFAULT_POOL_SIZE,
    maxClientConn: options.maxClientConn ?? DEFAULT_MAX_CLIENT_CONN,
  })
  try {
    bouncer.prepare(verifier)
    await bouncer.start()
    return bouncer
  } catch (error) {
    await bouncer.stop()
    throw error
  }
}

interface Settings {
  binary: string
  /** Set when we are root. */
  osUser: { uid?: number; gid?: number }
  /** Ours: config, auth file, pid file and log. Owned by the OS user pgbouncer runs as. */
  dir: string
  adminUrl: string
  superuser: { user: string; password: string }
  /** The `[databases]` entry. */
  databases: string
  defaultPoolSize: number
  maxClientConn: number
}

class RunningPgBouncer implements PgBouncer, TrackedServer {
  readonly handlesSignals = true
  readonly #settings: Settings
  /** The auth file's content: role → SCRAM verifier. */
  readonly #users = new Map<string, string>()
  #port = 0
  #child: ChildProcess | undefined
  #watchdog: ChildProcess | undefined
  #closed = false
  #restarting: Promise<void> | undefined
  #stopping: Promise<void> | undefined

  constructor(settings: Settings) {
    this.#settings = settings
    track(this)
  }

  get port(): number {
    return this.#port
  }

  get pid(): number | undefined {
    const child = this.#child
    return child === undefined || hasExited(child) ? undefined : child.pid
  }

  url(database: string, user?: string, password?: string): string {
    const { superuser } = this.#settings
    const credentials = `${encodeURIComponent(user ?? superuser.user)}:${encodeURIComponent(password ?? superuser.password)}`
    return `postgres://${credentials}@${HOST}:${this.#port}/${encodeURIComponent(database)}`
  }

  async addUser(user: string, password: string): Promise<void> {
    if (this.#closed) throw this.#stoppedError('addUser()')
    this.#users.set(user, await scramVerifier(this.#settings.adminUrl, user, password))
    this.#writeAuthFile()
    // RELOAD on the admin console returns once the files are re-read (a SIGHUP would not tell us when).
    await using adminConsole = await connectClient(this.url('pgbouncer'))
    await adminConsole.query('RELOAD')
  }

  restart(): Promise<void> {
    if (this.#closed) return Promise.reject(this.#stoppedError('restart()'))
    const previous = this.#restarting?.catch(() => {})
    this.#restarting = (async () => {
      await previous
      await this.#kill()
      await this.#launch(this.#port)
    })()
    return this.#restarting
  }

  stop(): Promise<void> {
    this.#closed = true
    this.#stopping ??= this.#stop()
    return this.#stopping
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop()
  }

  /** Writes the auth file (the superuser's verifier) and hands the dir to the OS user pgbouncer runs as. */
  prepare(superuserVerifier: string): void {
    const { uid, gid } = this.#settings.osUser
    if (uid !== undefined && gid !== undefined) chownSync(this.#settings.dir, uid, gid)
    this.#users.set(this.#settings.superuser.user, superuserVerifier)
    this.#writeAuthFile()
  }

  /** Starts on a free port; another one if someone else took it between our probe and pgbouncer's bind. */
  async start(): Promise<void> {
    for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
      try {
        await this.#launch(await findFreePort())
        return
      } catch (error) {
        const lostPortRace = error instanceof Error && error.message.includes('Address already in use')
        if (!lostPortRace || attempt === START_ATTEMPTS) throw error
      }
    }
  }

  /** Exit/signal path: the event loop may be gone. pgbouncer keeps no state worth a clean shutdown. */
  stopSync(): void {
    this.#closed = true
    untrack(this)
    killWatchdog(this.#watchdog)
    const pid = this.pid
    if (pid !== undefined) {
      signal(pid, 'SIGKILL')
      const deadline = Date.now() + 2_000
      while (processEnded(pid) === false && Date.now() < deadline) sleepSync(10)
    }
    try {
      rmSync(this.#settings.dir, { recursive: true, force: true, maxRetries: 3 })
    } catch {
      // best effort at exit
    }
  }

  async #stop(): Promise<void> {
    await this.#restarting?.catch(() => {})
    untrack(this)
    await this.#kill()
    await rm(this.#settings.dir, { recursive: true, force: true, maxRetries: 3 })
  }

  /** Spawns pgbouncer on `port` and waits until a `SELECT 1` goes through it; on failure it is killed again. */
  async #launch(port: number): Promise<void> {
    this.#port = port
    this.#writeFile('pgbouncer.ini', this.#config())
    const log = this.#file('pgbouncer.log')
    const logStart = fileSize(log)
    const logFd = openSync(log, 'a')
    let child: ChildProcess
    try {
      child = spawn(this.#settings.binary, [this.#file('pgbouncer.ini')], {
        ...this.#settings.osUser,
        stdio: ['ignore', logFd, logFd],
      })
    } finally {
      closeSync(logFd)
    }
    child.on('error', () => {}) // a failed spawn leaves no pid: reported below
    if (child.pid === undefined) throw new Error(`PgBouncer failed to start: could not spawn ${this.#settings.binary}`)
    this.#child = child
    this.#watchdog = spawnWatchdog({
      name: 'hyperconn-pgbouncer-watchdog',
      server: child,
      dir: this.#settings.dir,
      pidFile: this.#file('pgbouncer.pid'),
      signal: 'KILL',
    })
    try {
      await this.#waitUntilReady(child)
    } catch (error) {
      await this.#kill()
      const reason = error instanceof Error ? error.message : String(error)
      const output = readFileSync(log).subarray(logStart).toString('utf8').slice(-LOG_TAIL_CHARS)
      throw new Error(`PgBouncer failed to start on port ${port}: ${reason}\n--- pgbouncer log (tail) ---\n${output}`, {
        cause: error,
      })
    }
  }

  async #waitUntilReady(child: ChildProcess): Promise<void> {
    const deadline = Date.now() + START_TIMEOUT_MS
    let lastError: unknown
    while (Date.now() < deadline) {
      if (hasExited(child)) throw new Error(`pgbouncer exited (${child.signalCode ?? `code ${child.exitCode}`})`)
      const client = new pg.Client({ connectionString: this.url('postgres'), connectionTimeoutMillis: 5_000 })
      client.on('error', () => {})
      try {
        await client.connect()
        await client.query('SELECT 1')
        return
      } catch (error) {
        // It answered with an error (auth, configuration): waiting will not change that.
        if (error instanceof pg.DatabaseError) throw error
        lastError = error
      } finally {
        await client.end().catch(() => {})
      }
      await delay(PROBE_INTERVAL_MS)
    }
    const last = lastError instanceof Error ? lastError.message : String(lastError)
    throw new Error(`no connection through it after ${START_TIMEOUT_MS} ms (last attempt: ${last})`)
  }

  async #kill(): Promise<void> {
    killWatchdog(this.#watchdog)
    this.#watchdog = undefined
    await killAndWait(this.#child, 'SIGINT', 'SIGKILL', STOP_ESCALATION_MS)
  }

  #config(): string {
    const { databases, superuser, defaultPoolSize, maxClientConn } = this.#settings
    return [
      '[databases]',
      databases,
      '',
      '[pgbouncer]',
      `listen_addr = ${HOST}`,
      `listen_port = ${this.#port}`,
      'unix_socket_dir =',
      // Clients authenticate with SCRAM against the verifiers in the auth file; PgBouncer then logs in to
      // PostgreSQL with the keys the client's SCRAM exchange proved (the verifiers are PostgreSQL's own).
      'auth_type = scram-sha-256',
      `auth_file = ${this.#file('userlist.txt')}`,
      `admin_users = ${superuser.user}`,
      'pool_mode = transaction',
      `default_pool_size = ${defaultPoolSize}`,
      `max_client_conn = ${maxClientConn}`,
      // Not `options`: a client sending it is refused ("unsupported startup parameter"), as by a default PgBouncer.
      'ignore_startup_parameters = extra_float_digits',
      // The log goes to stderr, which is pgbouncer.log in this dir.
      `pidfile = ${this.#file('pgbouncer.pid')}`,
      '',
    ].join('\n')
  }

  #writeAuthFile(): void {
    const quote = (text: string): string => `"${text.replaceAll('"', '""')}"`
    const lines = [...this.#users].map(([user, verifier]) => `${quote(user)} ${quote(verifier)}\n`)
    this.#writeFile('userlist.txt', lines.join(''))
  }

  /** Atomically (pgbouncer may be re-reading it), readable by pgbouncer's OS user only. */
  #writeFile(name: string, content: string): void {
    const path = this.#file(name)
    const temporary = `${path}.tmp`
    writeFileSync(temporary, content, { mode: 0o600 })
    const { uid, gid } = this.#settings.osUser
    if (uid !== undefined && gid !== undefined) chownSync(temporary, uid, gid)
    renameSync(temporary, path)
  }

  #file(name: string): string {
    return join(this.#settings.dir, name)
  }

  #stoppedError(method: string): Error {
    return new Error(`${method}: the PgBouncer on port ${this.#port} has been stopped`)
  }
}

/** The role's SCRAM-SHA-256 verifier from pg_authid, checked against `password`. */
async function scramVerifier(adminUrl: string, user: string, password: string): Promise<string> {
  await using admin = await connectClient(adminUrl)
  const { rows } = await admin.query<{ rolpassword: string | null }>(
    'SELECT rolpassword FROM pg_authid WHERE rolname = $1',
    [user],
  )
  const row = rows[0]
  if (row === undefined) throw new Error(`PgBouncer: there is no role "${user}"`)
  const verifier = row.rolpassword ?? ''
  if (!verifier.startsWith('SCRAM-SHA-256$')) throw new Error(`PgBouncer: role "${user}" has no SCRAM-SHA-256 password`)
  if (!scramMatches(verifier, password)) throw new Error(`PgBouncer: wrong password for role "${user}"`)
  return verifier
}

/** RFC 5802/7677: StoredKey = H(HMAC(PBKDF2(password, salt, i), "Client Key")). */
function scramMatches(verifier: string, password: string): boolean {
  const [, iterations, salt, storedKey] = /^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):/.exec(verifier) ?? []
  if (iterations === undefined || salt === undefined || storedKey === undefined) return false
  // PostgreSQL SASLpreps the password first; NFKC is the part of that an ordinary password can meet.
  return [password, password.normalize('NFKC')].some((candidate) => {
    const salted = pbkdf2Sync(candidate, Buffer.from(salt, 'base64'), Number(iterations), 32, 'sha256')
    const clientKey = createHmac('sha256', salted).update('Client Key').digest()
    return createHash('sha256').update(clientKey).digest('base64') === storedKey
  })
}

function isExecutableFile(path: string): boolean {
  try {
    accessSync(path, constants.X_OK)
    return statSync(path).isFile()
  } catch {
    return false
  }
}

function fileSize(path: string): number {
  try {
    return statSync(path).size
  } catch {
    return 0
  }
}
