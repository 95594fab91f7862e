import { createRegistry, staticSecrets } from '@hyperconn/core'
import type { Registry } from '@hyperconn/core'
import { createDrizzleAdapter } from '@hyperconn/drizzle'
import { createKnexAdapter } from '@hyperconn/knex'
import { createKyselyAdapter } from '@hyperconn/kysely'
import { connectClient, createRole } from '@hyperconn/testkit'
import type { TestDatabase, TestRole } from '@hyperconn/testkit'
import { testDatabase } from '@hyperconn/testkit/vitest'
import { eq } from 'drizzle-orm'
import { pgTable, serial, text } from 'drizzle-orm/pg-core'
import type { Generated } from 'kysely'
import type pg from 'pg'
import { afterAll, beforeAll, expect, it } from 'vitest'

// Issue "Pools shared by connection target", acceptance 2 (RLS): 1,000 tenants in one database behind a
// row-level-security policy on current_setting('app.tenant_id', true), all on one physical pool whose
// connections move between tenants. Every row any tenant reads is counted; rows of another tenant: 0.

const TENANTS = 1_000
const WORKERS = 40
const ROUNDS = 3

const notes = pgTable('notes', { id: serial('id').primaryKey(), tenantId: text('tenant_id').notNull(), body: text('body').notNull() })
interface KyselyDb {
  notes: { id: Generated<number>; tenant_id: Generated<string>; body: string }
}
interface Note {
  tenant_id: string
  body: string
}

const SETUP = `
  CREATE TABLE notes (
    id serial PRIMARY KEY,
    tenant_id text NOT NULL DEFAULT current_setting('app.tenant_id', true),
    body text NOT NULL
  );
  ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
  ALTER TABLE notes FORCE ROW LEVEL SECURITY;
  CREATE POLICY tenant_rows ON notes USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
`

let db: TestDatabase
let role: TestRole
let admin: pg.Client & AsyncDisposable

beforeAll(async () => {
  db = await testDatabase('rls')
  admin = await connectClient(db.url)
  // The application's role: not the table owner, no BYPASSRLS, so the policy applies to it.
  role = await createRole(db.url, `rls_app_${process.pid}`, 'app-password')
  await admin.query(SETUP)
  await admin.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO ${role.user}; GRANT USAGE ON SEQUENCE notes_id_seq TO ${role.user}`)
  const values: string[] = []
  for (let i = 0; i < TENANTS; i++) values.push(`('t${i}', 'seed-a-t${i}'), ('t${i}', 'seed-b-t${i}')`)
  await admin.query(`INSERT INTO notes (tenant_id, body) VALUES ${values.join(', ')}`)
}, 60_000)

afterAll(async () => {
  await admin?.query(`DROP OWNED BY ${role.user}`)
  await admin?.[Symbol.asyncDispose]()
  // The role is dropped through this database's URL: before the database goes.
  await role?.[Symbol.asyncDispose]()
  await db?.[Symbol.asyncDispose]()
})

function rlsRegistry(poolMax: number, value?: (orgId: string) => string): Registry {
  const secrets: Record<string, Record<string, string>> = {}
  const url = db.urlFor(role.user, role.password)
  for (let i = 0; i < TENANTS; i++) secrets[`r-t${i}`] = { 'shared-postgresql': url }
  secrets['r-evil'] = { 'shared-postgresql': url }
  return createRegistry({
    project: 'r',
    services: { shared: { isolation: value === undefined ? { rls: 'app.tenant_id' } : { rls: 'app.tenant_id', value } } },
    secrets: staticSecrets(secrets),
    pool: { max: poolMax },
    connections: { max: 20 },
  })
}

it('1,000 RLS tenants on one pool, every entry point interleaved: 0 rows of another tenant', async () => {
  await using registry = rlsRegistry(6)
  const drizzle = createDrizzleAdapter(registry, { service: 'shared', schema: { notes } })
  const kysely = createKyselyAdapter<KyselyDb>(registry, { service: 'shared' })
  const knex = createKnexAdapter(registry, { service: 'shared' })
  let reads = 0
  let foreign = 0
  let errors = 0
  const check = (orgId: string, rows: readonly { tenant_id?: string; tenantId?: string }[]): void => {
    reads += rows.length
    foreign += rows.filter((r) => (r.tenant_id ?? r.tenantId) !== orgId).length
  }
  const step = async (n: number): Promise<void> => {
    const orgId = `t${n % TENANTS}`
    const tenant = registry.tenant(orgId, 'shared')
    switch (n % 7) {
      case 0:
        check(orgId, await drizzle.getDb(orgId).select().from(notes))
        break
      case 1:
        check(orgId, await kysely.getDb(orgId).selectFrom('notes').selectAll().execute())
        break
      case 2:
        check(orgId, await knex.getDb(orgId)<Note>('notes').select('*'))
        break
      case 3:
        check(orgId, (await tenant.query<Note>('SELECT tenant_id, body FROM notes')).rows)
        break
      case 4:
        check(orgId, (await (await registry.getPool('shared', orgId)).query<Note>('SELECT tenant_id, body FROM notes')).rows)
        break
      case 5:
        // A transaction opened by Drizzle, Kysely and Knex joining it, a savepoint that rolls back.
        await drizzle.getDb(orgId).transaction(async (tx) => {
          await tx.insert(notes).values({ tenantId: orgId, body: `tx-${n}` })
          check(orgId, await kysely.getDb(orgId).selectFrom('notes').selectAll().execute())
          await tenant
            .transaction(
              async () => {
                await knex.getDb(orgId)('notes').insert({ body: `savepoint-${n}` })
                check(orgId, await knex.getDb(orgId)<Note>('notes').select('*'))
                throw new Error('undo the savepoint')
              },
              { propagation: 'nested' },
            )
            .catch(() => {})
          check(orgId, await tx.select().from(notes).where(eq(notes.tenantId, orgId)))
          await tx.delete(notes).where(eq(notes.body, `tx-${n}`))
        })
        break
      case 6:
        // Kysely's transaction with Knex and core joining, then rolled back.
        await kysely
          .getDb(orgId)
          .transaction()
          .execute(async (trx) => {
            await trx.insertInto('notes').values({ body: `rollback-${n}` }).execute()
            check(orgId, (await tenant.query<Note>('SELECT tenant_id, body FROM notes')).rows)
            throw new Error('roll back')
          })
          .catch((error: unknown) => {
            if (!(error instanceof Error && error.message === 'roll back')) throw error
          })
        break
    }
  }
  let next = 0
  await Promise.all(
    Array.from({ length: WORKERS }, async () => {
      for (let n = next++; n < TENANTS * ROUNDS; n = next++) {
        try {
          await step(n)
        } catch {
          errors++
        }
      }
    }),
  )
  expect({ errors, foreign }).toEqual({ errors: 0, foreign: 0 })
  expect(reads).toBeGreaterThan(TENANTS * ROUNDS)
  const stats = registry.stats()
  expect(stats.pools.created).toBe(1)
  expect(stats.pools.list[0]?.total).toBeLessThanOrEqual(6)
  // Everything written inside transactions was removed or rolled back: each tenant still has its 2 rows.
  const { rows } = await admin.query<{ n: number }>('SELECT count(*)::int AS n FROM notes')
  expect(rows[0]?.n).toBe(TENANTS * 2)
})

it('the same physical connection used by A then B never shows A\'s rows to B', async () => {
  await using registry = rlsRegistry(1)
  type Seen = { pid: number; tenant_id: string }
  const probe = 'SELECT pg_backend_pid() AS pid, tenant_id FROM notes'
  const a = await registry.tenant('t1', 'shared').query<Seen>(probe)
  const inTx = await registry.tenant('t1', 'shared').transaction(() => registry.tenant('t1', 'shared').query<Seen>(probe))
  const b = await registry.tenant('t2', 'shared').query<Seen>(probe)
  const client = await (await registry.getPool('shared', 't3')).connect()
  const c = await client.query<Seen>(probe)
  client.release()
  expect(new Set([...a.rows, ...inTx.rows, ...b.rows, ...c.rows].map((r) => r.pid)).size).toBe(1)
  expect(a.rows.map((r) => r.tenant_id)).toEqual(['t1', 't1'])
  expect(inTx.rows.map((r) => r.tenant_id)).toEqual(['t1', 't1'])
  expect(b.rows.map((r) => r.tenant_id)).toEqual(['t2', 't2'])
  expect(c.rows.map((r) => r.tenant_id)).toEqual(['t3', 't3'])
})

it("a tenant value like x'); drop table notes; -- is data, never SQL", async () => {
  const hostile = "x'); drop table notes; --"
  await using registry = rlsRegistry(1, (orgId) => (orgId === 'evil' ? hostile : orgId))
  const tenant = registry.tenant('evil', 'shared')
  expect((await tenant.query('SELECT * FROM notes')).rows).toEqual([])
  await tenant.query("INSERT INTO notes (body) VALUES ('mine')")
  expect((await tenant.query<Note>('SELECT tenant_id, body FROM notes')).rows).toEqual([{ tenant_id: hostile, body: 'mine' }])
  await tenant.transaction(async () => {
    expect((await tenant.query<{ v: string }>("SELECT current_setting('app.tenant_id') AS v")).rows[0]?.v).toBe(hostile)
  })
  const { rows } = await admin.query<{ n: number }>('SELECT count(*)::int AS n FROM notes')
  expect(rows[0]?.n).toBe(TENANTS * 2 + 1)
  await admin.query('DELETE FROM notes WHERE tenant_id = $1', [hostile])
})
