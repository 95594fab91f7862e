import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'

/**
 * A probe child process (lifecycle-probe.ts, telemetry-probe.ts): started with the same loader (tsx) and
 * conditions as this process, it prints `ready` once warm, then answers each stdin line with one JSON
 * line; `exit` asks it to close its registries and exit. The tenant URL goes through the environment
 * (BENCH_TENANT_URL) so its password stays out of `ps`.
 */
export class ProbeProcess {
  readonly label: string
  readonly #child: ChildProcess
  readonly #lines: AsyncIterator<string>
  #stderr = ''

  constructor(label: string, script: string, args: readonly (string | number)[], tenantUrl: string) {
    this.label = label
    // A profiler flag must not follow into the child; BENCH_PROBE_CPU_PROF=<dir> profiles the probes instead.
    const profileDir = process.env.BENCH_PROBE_CPU_PROF
    const execArgv = [
      ...process.execArgv.filter((arg) => !arg.startsWith('--cpu-prof') && !arg.startsWith('--heap-prof')),
      ...(profileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profileDir}`]),
    ]
    this.#child = spawn(process.execPath, [...execArgv, script, ...args.map(String)], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, BENCH_TENANT_URL: tenantUrl },
    })
    // A failed spawn closes stdout too: #next() then reports it.
    this.#child.once('error', (error) => (this.#stderr += `\n${String(error)}`))
    this.#child.stdin?.on('error', () => {}) // EPIPE from a probe that died: its closed stdout reports it
    this.#child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (this.#stderr = (this.#stderr + chunk).slice(-4000)))
    this.#lines = createInterface({ input: this.#child.stdout as NodeJS.ReadableStream })[Symbol.asyncIterator]()
  }

  async #next(): Promise<string> {
    const line = await this.#lines.next()
    if (line.done === true) throw new Error(`${this.label} exited: ${this.#stderr.trim()}`)
    return line.value
  }

  async ready(): Promise<void> {
    const line = await this.#next()
    if (line !== 'ready') throw new Error(`${this.label} said "${line}": ${this.#stderr.trim()}`)
  }

  /** Sends one command line, returns the parsed JSON line it answers. */
  async ask<T>(command: string): Promise<T> {
    this.#child.stdin?.write(`${command}\n`)
    return JSON.parse(await this.#next()) as T
  }

  /** Asks it to close its registries and exit; kills it if it does not within 10 s. */
  async exit(): Promise<void> {
    const child = this.#child
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    child.stdin?.end('exit\n')
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
    await exited
    clearTimeout(timer)
  }
}
