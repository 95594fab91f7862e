import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager'
import pg from 'pg'
import { afterEach, describe, expect, it } from 'vitest'

/**
 * `pnpm start` (src/main.ts) as a real process: embedded PostgreSQL, local Secrets Manager, one tenant.
 * Signals are only observable from outside, so these tests spawn it.
 */
interface RunningMain {
  readonly child: ChildProcess
  readonly baseUrl: string
  /** The tenant's own connection string, read from the app's Secrets Manager endpoint like the app does. */
  readonly tenantUrl: string
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  output(): string
}

const APP_DIR = fileURLToPath(new URL('..', import.meta.url))
const started: ChildProcess[] = []

afterEach(() => {
  // A failed test must not leave the server running (its PostgreSQL is then stopped by testkit's watchdog).
  for (const child of started.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
})

async function startMain(): Promise<RunningMain> {
  const child = spawn(process.execPath, ['--conditions=@hyperconn/source', '--import', 'tsx', 'src/main.ts'], {
    cwd: APP_DIR,
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', HYPERCONN_TENANTS: 'acme', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  started.push(child)
  let output = ''
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()))
  const exited = once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }))
  let endpoint: string | undefined
  const baseUrl = await new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })
    lines.on('line', (line) => {
      output += `${line}\n`
      endpoint ??= /local Secrets Manager endpoint at (\S+)/.exec(line)?.[1]
      const ready = /shop ready on (\S+);/.exec(line)?.[1]
      if (ready !== undefined) resolve(ready)
    })
    void exited.then(({ code }) => reject(new Error(`main.ts exited (${code}) before it was ready:\n${output}`)))
  })
  if (endpoint === undefined) throw new Error(`main.ts did not print its Secrets Manager endpoint:\n${output}`)
  const secrets = new SecretsManagerClient({
    region: 'eu-west-1',
    endpoint,
    credentials: { accessKeyId: 'AKIATEST', secretAccessKey: 'test' },
    maxAttempts: 1,
  })
  const secret = await secrets.send(new GetSecretValueCommand({ SecretId: 'shop-acme' }))
  secrets.destroy()
  const tenantUrl = (JSON.parse(secret.SecretString ?? '{}') as Record<string, string>)['shop-postgresql']
  if (tenantUrl === undefined) throw new Error('secret shop-acme has no shop-postgresql key')
  return { child, baseUrl, tenantUrl, exited, output: () => output }
}

/** Holds an exclusive lock on `inventory`, so that GET /stock blocks until `release()`. */
async function lockInventory(url: string): Promise<{ client: pg.Client; release(): Promise<void> }> {
  const client = new pg.Client({ connectionString: url })
  client.on('error', () => {})
  await client.connect()
  await client.query('BEGIN')
  await client.query('LOCK TABLE inventory IN ACCESS EXCLUSIVE MODE')
  return { client, release: () => client.query('COMMIT').then(() => client.end()) }
}

async function waitForBlockedQuery(client: pg.Client): Promise<void> {
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline) {
    const { rows } = await client.query(
      `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`,
    )
    if (rows.length > 0) return
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error('GET /stock never blocked on the locked table')
}

async function refusesConnections(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 })
  client.on('error', () => {})
  try {
    await client.connect()
    await client.end()
    return false
  } catch (error) {
    return (error as { code?: unknown }).code === 'ECONNREFUSED'
  }
}

describe('main.ts shutdown', () => {
  it('SIGTERM drains an in-flight request before PostgreSQL stops, then exits 0', { timeout: 90_000 }, async () => {
    const main = await startMain()
    const lock = await lockInventory(main.tenantUrl)
    const inflight = fetch(`${main.baseUrl}/stock`, { headers: { 'x-org-id': 'acme' } })
    await waitForBlockedQuery(lock.client)

    main.child.kill('SIGTERM')
    await new Promise((resolve) => setTimeout(resolve, 500))
    // Still draining, and the database under the request is still up (testkit did not kill it on the signal).
    expect(main.child.exitCode).toBeNull()
    expect((await lock.client.query('SELECT 1 AS up')).rows).toEqual([{ up: 1 }])

    await lock.release()
    const response = await inflight
    expect(response.status).toBe(200)
    expect(((await response.json()) as { stock: unknown[] }).stock.length).toBeGreaterThan(0)
    expect(await main.exited, main.output()).toEqual({ code: 0, signal: null })
    expect(main.output()).not.toContain('shutdown was not clean')
    expect(await refusesConnections(main.tenantUrl)).toBe(true)
  })

  it('a second SIGTERM during the shutdown exits at once; the exit hook still stops PostgreSQL', { timeout: 90_000 }, async () => {
    const main = await startMain()
    const lock = await lockInventory(main.tenantUrl)
    const inflight = fetch(`${main.baseUrl}/stock`, { headers: { 'x-org-id': 'acme' } }).catch((error: unknown) => error)
    await waitForBlockedQuery(lock.client)

    main.child.kill('SIGTERM')
    // A repeat within 2 s counts as the same signal (a wrapper relaying Ctrl-C); a later one means "now".
    await new Promise((resolve) => setTimeout(resolve, 2_300))
    expect(main.child.exitCode).toBeNull()
    main.child.kill('SIGTERM')
    expect(await main.exited, main.output()).toEqual({ code: 143, signal: null })
    expect(await inflight).toBeInstanceOf(Error) // the server went away without answering
    expect(await refusesConnections(main.tenantUrl)).toBe(true)
    await lock.client.end().catch(() => {})
  })
})
