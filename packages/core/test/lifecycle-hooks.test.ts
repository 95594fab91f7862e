import type { TestDatabase } from '@hyperconn/testkit'
import { connectClient } from '@hyperconn/testkit'
import { testDatabase } from '@hyperconn/testkit/vitest'
import type pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createRegistry, InvalidOptionsError, LifecycleHookError, staticSecrets } from '../src/index.js'
import type { HookConnection, LifecycleHooks, Registry, TenantKey } from '../src/index.js'

// onClaim / onRelease run at the one lease point: for every path a connection is checked out by, once per
// checkout, in order, and a failing hook never leaves a connection behind.

let db: TestDatabase
let admin: pg.Client & AsyncDisposable

beforeAll(async () => {
  db = await testDatabase('hooks')
  admin = await connectClient(db.url)
})

afterAll(async () => {
  await admin?.[Symbol.asyncDispose]()
  await db?.[Symbol.asyncDispose]()
})

interface Step {
  hook: 'claim' | 'release' | 'query'
  pid: number
  orgId: string
  /** app.tenant_id and app.user as the statement saw them */
  tenant: string
  user: string
}

const SEEN = "SELECT pg_backend_pid() AS pid, current_setting('app.tenant_id', true) AS tenant, current_setting('app.user', true) AS user"
type Seen = { pid: number; tenant: string; user: string }

/** Hooks that set app.user per checkout and clear it, recording what each saw. */
function recordingHooks(steps: Step[]): LifecycleHooks {
  const record = async (hook: Step['hook'], conn: HookConnection, tenant: TenantKey): Promise<void> => {
    const row = (await conn.query<Seen>(SEEN)).rows[0] as Seen
    steps.push({ hook, pid: row.pid, orgId: tenant.orgId, tenant: row.tenant, user: row.user })
  }
  return {
    onClaim: async (conn, tenant) => {
      await conn.query("SELECT set_config('app.user', $1, false)", [`user-of-${tenant.orgId}`])
      await record('claim', conn, tenant)
    },
    onRelease: async (conn, tenant) => {
      await record('release', conn, tenant)
      await conn.query("SELECT set_config('app.user', '', false)")
    },
  }
}

function registryWith(options: { hooks?: LifecycleHooks; serviceHooks?: LifecycleHooks; max?: number } = {}): Registry<'core' | 'billing'> {
  return createRegistry({
    project: 'hk',
    services: {
      core: { isolation: { rls: 'app.tenant_id' }, ...(options.serviceHooks === undefined ? {} : { hooks: options.serviceHooks }) },
      billing: { isolation: { rls: 'app.tenant_id' } },
    },
    secrets: staticSecrets({
      'hk-a': { 'core-postgresql': db.url, 'billing-postgresql': db.url },
      'hk-b': { 'core-postgresql': db.url, 'billing-postgresql': db.url },
    }),
    pool: { max: options.max ?? 2 },
    connections: { max: 4 },
    ...(options.hooks === undefined ? {} : { hooks: options.hooks }),
  })
}

async function backends(): Promise<number> {
  const result = await admin.query<{ n: string }>(
    "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
  )
  return Number(result.rows[0]?.n)
}

describe('onClaim / onRelease', () => {
  it('run on every path, once per checkout, in order: claim after the settings, the caller, then release', async () => {
    const steps: Step[] = []
    await using registry = registryWith({ hooks: recordingHooks(steps) })
    const tenant = registry.tenant('a', 'core')
    const query = async (run: () => Promise<pg.QueryResult<Seen>>): Promise<void> => {
      const row = (await run()).rows[0] as Seen
      steps.push({ hook: 'query', pid: row.pid, orgId: 'a', tenant: row.tenant, user: row.user })
    }
    const paths: Record<string, () => Promise<void>> = {
      'tenant.query': () => query(() => tenant.query<Seen>(SEEN)),
      'tenant.transaction': () =>
        tenant.transaction(async () => {
          await query(() => tenant.query<Seen>(SEEN))
          await query(() => tenant.query<Seen>(SEEN))
        }),
      'tenant.acquire': async () => {
        await using conn = await tenant.acquire()
        await query(() => conn.query<Seen>(SEEN))
      },
      'getPool().query': async () => query(async () => (await registry.getPool('core', 'a')).query<Seen>(SEEN)),
      'getPool().connect': async () => {
        const client = await (await registry.getPool('core', 'a')).connect()
        try {
          await query(() => client.query<Seen>(SEEN))
        } finally {
          client.release()
        }
      },
      'tenant.connection': () =>
        tenant.connection(async () => {
          await query(() => tenant.query<Seen>(SEEN))
          await tenant.transaction(() => query(() => tenant.query<Seen>(SEEN)))
        }),
    }
    for (const [path, run] of Object.entries(paths)) {
      steps.length = 0
      await run()
      // onRelease runs after the caller's work settled, before the connection is idle again
      await expect.poll(() => steps.filter((s) => s.hook === 'release').length, { message: path }).toBe(1)
      const claim = steps[0]
      expect(claim, path).toMatchObject({ hook: 'claim', orgId: 'a', tenant: 'a', user: 'user-of-a' })
      expect(steps.at(-1), path).toMatchObject({ hook: 'release', pid: claim?.pid, tenant: 'a', user: 'user-of-a' })
      const queries = steps.slice(1, -1)
      expect(queries.length, path).toBeGreaterThan(0)
      for (const step of queries) expect(step, path).toMatchObject({ hook: 'query', pid: claim?.pid, tenant: 'a', user: 'user-of-a' })
      expect(registry.stats().connections.checkedOut, path).toBe(0)
    }
  })

  it('hooks of a service replace the registry-wide ones for that service only', async () => {
    const global: string[] = []
    const service: string[] = []
    await using registry = registryWith({
      hooks: { onClaim: (_c, t) => void global.push(`${t.service}:${t.orgId}`) },
      serviceHooks: { onClaim: (_c, t) => void service.push(`${t.service}:${t.orgId}`) },
    })
    await registry.tenant('a', 'core').query('SELECT 1')
    await registry.tenant('b', 'billing').query('SELECT 1')
    expect(service).toEqual(['core:a'])
    expect(global).toEqual(['billing:b'])
  })

  it('a throwing onClaim rejects the acquire with LifecycleHookError and leaves no connection behind', async () => {
    const failure = new Error('no such user')
    let fail = true
    await using registry = registryWith({
      hooks: {
        onClaim: () => {
          if (fail) throw failure
        },
      },
    })
    const before = await backends()
    for (const run of [
      () => registry.tenant('a', 'core').query('SELECT 1'),
      () => registry.tenant('a', 'core').transaction(() => Promise.resolve()),
      () => registry.tenant('a', 'core').acquire(),
      async () => (await registry.getPool('core', 'a')).connect(),
    ]) {
      const error = await run().then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(error).toBeInstanceOf(LifecycleHookError)
      expect(error).toMatchObject({ code: 'HC_HOOK_FAILED', hook: 'onClaim', service: 'core', orgId: 'a', cause: failure })
      expect((error as Error).message).toMatch(/no such user/)
    }
    expect(registry.stats().connections).toMatchObject({ checkedOut: 0 })
    await expect.poll(() => registry.stats().connections.total).toBe(0)
    await expect.poll(backends).toBe(before)
    fail = false
    await expect(registry.tenant('a', 'core').query('SELECT 1')).resolves.toMatchObject({ rowCount: 1 })
  })

  it('a throwing onRelease destroys the connection; the caller already has its result', async () => {
    let fail = true
    await using registry = registryWith({
      max: 1,
      hooks: {
        onRelease: () => {
          if (fail) throw new Error('cleanup failed')
        },
      },
    })
    const tenant = registry.tenant('a', 'core')
    const first = (await tenant.query<Seen>(SEEN)).rows[0]?.pid
    fail = false
    await expect.poll(() => registry.stats().connections.total).toBe(0)
    const second = (await tenant.query<Seen>(SEEN)).rows[0]?.pid
    expect(second).not.toBe(first)
    const third = (await tenant.query<Seen>(SEEN)).rows[0]?.pid
    expect(third).toBe(second)
  })

  it('a SET ROLE in onClaim never reaches the next tenant, even without an onRelease', async () => {
    await admin.query('DROP ROLE IF EXISTS hk_app; CREATE ROLE hk_app')
    await using registry = registryWith({
      max: 1,
      hooks: { onClaim: async (conn, t) => void (t.orgId === 'a' ? await conn.query('SET ROLE hk_app') : undefined) },
    })
    const a = (await registry.tenant('a', 'core').query<{ usr: string }>('SELECT current_user AS usr')).rows[0]
    // Inside a transaction too: BEGIN keeps what onClaim set for this checkout.
    const inTx = await registry.tenant('a', 'core').transaction(async () => {
      const tenant = registry.tenant('a', 'core')
      return (await tenant.query<{ usr: string; tenant: string }>("SELECT current_user AS usr, current_setting('app.tenant_id') AS tenant")).rows[0]
    })
    const b = (await registry.tenant('b', 'core').query<{ usr: string }>('SELECT current_user AS usr')).rows[0]
    expect(a?.usr).toBe('hk_app')
    expect(inTx).toEqual({ usr: 'hk_app', tenant: 'a' })
    expect(b?.usr).toBe('postgres')
  })

  it('a set_config in onClaim without an onRelease never reaches the next checkout', async () => {
    await using registry = registryWith({
      max: 1,
      hooks: { onClaim: async (conn, t) => void (t.orgId === 'a' ? await conn.query("SELECT set_config('app.user', 'alice', false)") : undefined) },
    })
    const a = (await registry.tenant('a', 'core').query<Seen>(SEEN)).rows[0]
    const b = (await registry.tenant('b', 'core').query<Seen>(SEEN)).rows[0]
    expect(a).toMatchObject({ user: 'alice', tenant: 'a' })
    expect(b).toMatchObject({ pid: a?.pid, user: '', tenant: 'b' })
  })

  it('bad hooks are rejected at createRegistry with InvalidOptionsError', () => {
    const base = { project: 'hk', services: ['core'], secrets: staticSecrets({}) }
    expect(() => createRegistry({ ...base, hooks: { onClaim: 'SET ROLE x' } as never })).toThrow(InvalidOptionsError)
    expect(() => createRegistry({ ...base, hooks: { onCheckout: () => {} } as never })).toThrow(/unknown option hooks.onCheckout/)
    expect(() => createRegistry({ ...base, services: { core: { hooks: [] as never } } })).toThrow(/services.core.hooks/)
    expect(() => createRegistry({ ...base, leakDetection: { destroy: true } as never })).toThrow(/thresholdMs is required/)
    expect(() => createRegistry({ ...base, leakDetection: { thresholdMs: 0 } })).toThrow(InvalidOptionsError)
    expect(() => createRegistry({ ...base, pool: { validateAfterIdleMs: -1 } })).toThrow(/validateAfterIdleMs/)
  })
})
