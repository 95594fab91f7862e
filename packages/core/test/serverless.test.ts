import { randomBytes } from 'node:crypto'
import { inspect } from 'node:util'
import { connectClient, createRole } from '@hyperconn/testkit'
import type { TestDatabase } from '@hyperconn/testkit'
import { testDatabase } from '@hyperconn/testkit/vitest'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createRegistry, InvalidOptionsError, rdsIamAuth, staticSecrets, withRegistryScope } from '../src/index.js'
import type { RegistryEvents } from '../src/index.js'

// Serverless: a handler wrapped with withRegistryScope, invoked many times in one warm process, and RDS
// IAM tokens as the password of every new connection.

let db: TestDatabase

beforeAll(async () => {
  db = await testDatabase('lambda')
})

afterAll(async () => {
  await db?.[Symbol.asyncDispose]()
})

describe('withRegistryScope (a Lambda-style handler)', () => {
  it('1,000 invocations round-robin over tenants, some leaking a client: within budget, every leak reported and closed at its end', async () => {
    const orgs = Array.from({ length: 20 }, (_, i) => `t${i}`)
    const secrets: Record<string, Record<string, string>> = {}
    for (const org of orgs) secrets[`ls-${org}`] = { 'core-postgresql': db.url }
    // Created once, outside the handler: warm invocations reuse it.
    const registry = createRegistry({
      project: 'ls',
      services: { core: { isolation: { rls: 'app.tenant_id' } } },
      secrets: staticSecrets(secrets),
      pool: { max: 4 },
      connections: { max: 4 },
    })
    await using _ = registry
    const leaks: RegistryEvents['connection:leak'][] = []
    registry.on('connection:leak', (leak) => leaks.push(leak))
    let leaked = 0
    const afterLeak: number[] = []
    const handler = withRegistryScope(registry, async (event: { n: number }) => {
      const tenant = registry.tenant(orgs[event.n % orgs.length] as string)
      const row = (await tenant.query<{ tenant: string }>("SELECT current_setting('app.tenant_id') AS tenant")).rows[0]
      if (event.n % 50 === 7) {
        // A handler that forgets to release what it acquired.
        const client = await (await registry.getPool('core', tenant.orgId)).connect()
        await client.query('SELECT 1')
        leaked++
      }
      return row?.tenant
    })
    for (let n = 0; n < 1_000; n++) {
      // Invocations of a Lambda instance run one at a time; a few run concurrently here too.
      const results = await Promise.all([handler({ n }), ...(n % 100 === 0 ? [handler({ n: n + 1 }), handler({ n: n + 2 })] : [])])
      expect(results[0]).toBe(orgs[n % orgs.length])
      if (n % 50 === 7) afterLeak.push(registry.stats().connections.checkedOut)
    }
    expect(leaked).toBe(20)
    expect(leaks).toHaveLength(20)
    for (const leak of leaks) expect(leak).toMatchObject({ reason: 'scope', destroyed: true })
    expect(afterLeak.every((n) => n === 0)).toBe(true)
    const stats = registry.stats()
    expect(stats.servers[0]?.peak).toBeLessThanOrEqual(4)
    expect(stats.leaks).toBe(20)
    expect(stats.connections.checkedOut).toBe(0)
  }, 60_000)

  it('rejects a missing registry or handler with InvalidOptionsError', () => {
    expect(() => withRegistryScope(undefined as never, async () => 1)).toThrow(InvalidOptionsError)
    expect(() => withRegistryScope({ scope: (fn) => fn() }, 'handler' as never)).toThrow(InvalidOptionsError)
  })
})

describe('services.x.auth: rdsIamAuth', () => {
  it('every new connection authenticates with the token; the URL has no password; no token in any output', async () => {
    const user = `iamreg_${randomBytes(4).toString('hex')}`
    await using _role = await createRole(db.url, user, randomBytes(12).toString('hex'))
    const url = new URL(db.url)
    const endpoint = { host: url.hostname, port: Number(url.port), user }
    const calls: unknown[] = []
    const auth = rdsIamAuth({
      region: 'eu-west-1',
      credentials: { accessKeyId: 'AKIDREGISTRYIAM', secretAccessKey: 'sk-registry-iam-marker' },
      signer: async (params) => {
        calls.push({ host: params.hostname, port: params.port, user: params.username, region: params.region })
        const { Signer } = await import('@aws-sdk/rds-signer')
        const { credentials, ...rest } = params
        return new Signer({ ...rest, ...(credentials === undefined ? {} : { credentials: credentials as never }) }).getAuthToken()
      },
    })
    const token = await auth.password(endpoint)
    {
      await using admin = await connectClient(db.url)
      await admin.query(`ALTER ROLE ${pg.escapeIdentifier(user)} PASSWORD ${pg.escapeLiteral(token)}`)
    }
    url.username = user
    url.password = ''
    const registry = createRegistry({
      project: 'iam',
      services: { core: { auth } },
      secrets: staticSecrets({ 'iam-a': { 'core-postgresql': url.toString() } }),
      pool: { max: 3 },
    })
    await using _ = registry
    const events: unknown[] = []
    for (const name of ['pool:create', 'connection:error', 'secret:fetch'] as const) registry.on(name, (e) => events.push(e))
    const held = await Promise.all([registry.tenant('a').acquire(), registry.tenant('a').acquire(), registry.tenant('a').acquire()])
    for (const conn of held) expect((await conn.query<{ who: string }>('SELECT current_user AS who')).rows[0]?.who).toBe(user)
    for (const conn of held) conn.release()
    expect(calls).toEqual([{ host: endpoint.host, port: endpoint.port, user, region: 'eu-west-1' }]) // one token, reused
    const output = JSON.stringify([registry.stats(), events, inspect(registry), inspect(auth), JSON.stringify(auth)])
    expect(output).not.toContain(token.slice(-40))
    expect(output).not.toContain('sk-registry-iam-marker')
  })

  it('rejects an auth that is not one at createRegistry', () => {
    expect(() =>
      createRegistry({ project: 'x', services: { core: { auth: { kind: 'x' } as never } }, secrets: staticSecrets({}) }),
    ).toThrow(/services.core.auth/)
  })
})

describe('services.x.pooler', () => {
  it("accepts only 'transaction', and warns once per pool when an address looks like a pooler without it", async () => {
    expect(() => createRegistry({ project: 'x', services: { core: { pooler: 'session' as never } }, secrets: staticSecrets({}) })).toThrow(/pooler must be 'transaction'/)
    const warnings: string[] = []
    const logger = { debug: () => {}, info: () => {}, error: () => {}, warn: (_: unknown, message: string) => void warnings.push(message) }
    const url = new URL(db.url)
    url.port = '6432' // PgBouncer's port: nothing listens there, the warning comes when the pool is created
    const registry = createRegistry({
      project: 'pw',
      services: ['core'],
      secrets: staticSecrets({ 'pw-a': { 'core-postgresql': url.toString() } }),
      connections: { max: 2, acquireTimeoutMs: 100 },
      pool: { connectionTimeoutMillis: 200 },
      logger,
    })
    await using _ = registry
    await registry.tenant('a').query('SELECT 1').catch(() => undefined)
    await expect.poll(() => warnings.filter((w) => /looks like a transaction pooler/.test(w)).length).toBe(1)
  })
})
