import { createRegistry, isHyperconnError, staticSecrets, UnsupportedError } from '@hyperconn/core'
import type { Registry } from '@hyperconn/core'
import { createDrizzleAdapter } from '@hyperconn/drizzle'
import { createKnexAdapter } from '@hyperconn/knex'
import { createKyselyAdapter } from '@hyperconn/kysely'
import { connectClient, createRole, startPgBouncer } from '@hyperconn/testkit'
import type { PgBouncer, TestDatabase, TestRole } from '@hyperconn/testkit'
import { adminUrl, describeWithPgBouncer, testDatabase } from '@hyperconn/testkit/vitest'
import { eq, sql } from 'drizzle-orm'
import { pgTable, serial, text } from 'drizzle-orm/pg-core'
import { sql as kyselySql } from 'kysely'
import type { Generated } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { unwrap } from './support/async.js'

// Issue 10 acceptance 2, through a real PgBouncer in transaction mode (default_pool_size 4, SCRAM): the
// seed layout (options=-c search_path=<org> in each tenant's URL) and RLS tenants, every adapter.

const SCHEMA_TENANTS = 1_000
const RLS_TENANTS = 200

const items = pgTable('items', { id: serial('id').primaryKey(), org: text('org').notNull(), label: text('label').notNull() })
const rlsItems = pgTable('rls_items', { id: serial('id').primaryKey(), tenant: text('tenant').notNull(), label: text('label').notNull() })
interface Db {
  items: { id: Generated<number>; org: string; label: string }
  rls_items: { id: Generated<number>; tenant: string; label: string }
}

let db: TestDatabase
let role: TestRole
let bouncer: PgBouncer

describeWithPgBouncer('behind PgBouncer (transaction mode)', () => {
  beforeAll(async () => {
    db = await testDatabase('pgb')
    role = await createRole(db.url, `pgb_app_${process.pid}`, `pw${process.pid}x`)
    await using admin = await connectClient(db.url)
    const app = pg.escapeIdentifier(role.user)
    await admin.query(`
      DO $$ BEGIN
        FOR i IN 1..${SCHEMA_TENANTS} LOOP
          EXECUTE format('CREATE SCHEMA org%s; CREATE TABLE org%s.items (id serial PRIMARY KEY, org text NOT NULL, label text NOT NULL)', i, i);
        END LOOP;
      END $$;
      CREATE TABLE rls_items (id serial PRIMARY KEY, tenant text NOT NULL, label text NOT NULL);
      ALTER TABLE rls_items ENABLE ROW LEVEL SECURITY;
      CREATE POLICY by_tenant ON rls_items USING (tenant = current_setting('app.tenant_id', true)) WITH CHECK (tenant = current_setting('app.tenant_id', true));
    `)
    await admin.query(`
      DO $$ BEGIN
        FOR i IN 1..${SCHEMA_TENANTS} LOOP
          EXECUTE format('GRANT USAGE ON SCHEMA org%s TO ${app}; GRANT ALL ON ALL TABLES IN SCHEMA org%s TO ${app}; GRANT ALL ON ALL SEQUENCES IN SCHEMA org%s TO ${app}', i, i, i);
        END LOOP;
      END $$;
      GRANT ALL ON rls_items TO ${app}; GRANT ALL ON SEQUENCE rls_items_id_seq TO ${app};
    `)
    const port = Number(new URL(adminUrl()).port)
    bouncer = await startPgBouncer({ server: { adminUrl: adminUrl(), port }, defaultPoolSize: 4, maxClientConn: 200 })
    await bouncer.addUser(role.user, role.password)
  }, 120_000)

  afterAll(async () => {
    await bouncer?.stop()
    await role?.[Symbol.asyncDispose]()
    await db?.[Symbol.asyncDispose]()
  })

  function registryFor(): Registry<'schemas' | 'rls'> {
    const url = bouncer.url(db.name, role.user, role.password)
    const secrets: Record<string, Record<string, string>> = {}
    for (let i = 1; i <= SCHEMA_TENANTS; i++) {
      // The seed layout: the tenant's schema in the URL's startup options (refused by PgBouncer as a startup parameter).
      secrets[`pgb-org${i}`] = { 'schemas-postgresql': `${url}?options=${encodeURIComponent(`-c search_path=org${i}`)}` }
    }
    for (let i = 1; i <= RLS_TENANTS; i++) secrets[`pgb-r${i}`] = { 'rls-postgresql': url }
    return createRegistry({
      project: 'pgb',
      services: { schemas: { pooler: 'transaction' }, rls: { pooler: 'transaction', isolation: { rls: 'app.tenant_id' } } },
      secrets: staticSecrets(secrets),
      pool: { max: 20, statement_timeout: 20_000 },
    })
  }

  function adaptersFor(registry: Registry<'schemas' | 'rls'>) {
    return {
      schemas: {
        drizzle: createDrizzleAdapter(registry, { service: 'schemas' }),
        kysely: createKyselyAdapter<Db>(registry, { service: 'schemas' }),
        knex: createKnexAdapter(registry, { service: 'schemas' }),
      },
      rls: {
        drizzle: createDrizzleAdapter(registry, { service: 'rls' }),
        kysely: createKyselyAdapter<Db>(registry, { service: 'rls' }),
        knex: createKnexAdapter(registry, { service: 'rls' }),
      },
    }
  }

  type Adapters = ReturnType<typeof adaptersFor>
  type Orm = 'drizzle' | 'kysely' | 'knex'
  const ORMS: Orm[] = ['drizzle', 'kysely', 'knex']

  /** Inserts one row for `org` through `orm`, in whatever the async context holds. */
  async function insert(adapters: Adapters, kind: 'schemas' | 'rls', org: string, orm: Orm, label: string): Promise<void> {
    if (kind === 'schemas') {
      if (orm === 'drizzle') await adapters.schemas.drizzle.getDb(org).insert(items).values({ org, label })
      else if (orm === 'kysely') await adapters.schemas.kysely.getDb(org).insertInto('items').values({ org, label }).execute()
      else await adapters.schemas.knex.getDb(org)('items').insert({ org, label })
    } else {
      if (orm === 'drizzle') await adapters.rls.drizzle.getDb(org).insert(rlsItems).values({ tenant: org, label })
      else if (orm === 'kysely') await adapters.rls.kysely.getDb(org).insertInto('rls_items').values({ tenant: org, label }).execute()
      else await adapters.rls.knex.getDb(org)('rls_items').insert({ tenant: org, label })
    }
  }

  /** The owners of every row `org` can read through `orm`. */
  async function owners(adapters: Adapters, kind: 'schemas' | 'rls', org: string, orm: Orm): Promise<string[]> {
    if (kind === 'schemas') {
      if (orm === 'drizzle') return (await adapters.schemas.drizzle.getDb(org).select({ o: items.org }).from(items)).map((r) => r.o)
      if (orm === 'kysely') return (await adapters.schemas.kysely.getDb(org).selectFrom('items').select('org').execute()).map((r) => r.org)
      return (await adapters.schemas.knex.getDb(org)<{ org: string }>('items').select('org')).map((r) => r.org)
    }
    if (orm === 'drizzle') return (await adapters.rls.drizzle.getDb(org).select({ o: rlsItems.tenant }).from(rlsItems)).map((r) => r.o)
    if (orm === 'kysely') return (await adapters.rls.kysely.getDb(org).selectFrom('rls_items').select('tenant').execute()).map((r) => r.tenant)
    return (await adapters.rls.knex.getDb(org)<{ tenant: string }>('rls_items').select('tenant')).map((r) => r.tenant)
  }

  it('1,000 schema tenants (seed layout) and 200 RLS tenants, 40 workers mixing autocommit and cross-ORM transactions: 0 errors, 0 cross-tenant rows', async () => {
    await using registry = registryFor()
    const adapters = adaptersFor(registry)
    const errors: unknown[] = []
    let crossTenant = 0
    let reads = 0
    let counter = 0
    const worker = async (w: number): Promise<void> => {
      for (let round = 0; round < 30; round++) {
        const n = counter++
        const kind = n % 3 === 0 ? 'rls' : 'schemas'
        const org = kind === 'rls' ? `r${(n % RLS_TENANTS) + 1}` : `org${((n * 7) % SCHEMA_TENANTS) + 1}`
        const orm = ORMS[n % 3] as Orm
        try {
          if (n % 2 === 0) {
            await insert(adapters, kind, org, orm, `w${w}-${round}-auto`)
          } else {
            // A transaction opened by one ORM; the other two and tenant.query join it.
            const tenant = registry.tenant(org, kind)
            await tenant.transaction(async () => {
              for (const other of ORMS) await insert(adapters, kind, org, other, `w${w}-${round}-${other}`)
              const seen = await owners(adapters, kind, org, orm)
              reads += seen.length
              crossTenant += seen.filter((o) => o !== org).length
            })
          }
          const seen = await owners(adapters, kind, org, ORMS[(n + 1) % 3] as Orm)
          reads += seen.length
          crossTenant += seen.filter((o) => o !== org).length
        } catch (error) {
          errors.push(unwrap(error))
        }
      }
    }
    await Promise.all(Array.from({ length: 40 }, (_, w) => worker(w)))
    expect(errors).toEqual([])
    expect(reads).toBeGreaterThan(1_000)
    expect(crossTenant).toBe(0)
    // Behind a pooler the budget counts connections to it: 'auto' is 100 for one instance.
    expect(registry.stats().servers[0]?.max).toBe(100)
  }, 120_000)

  it('Drizzle prepared statements, Kysely and Knex queries with parameters: 0 failures over 1,000 runs each', async () => {
    await using registry = registryFor()
    const adapters = adaptersFor(registry)
    const orgs = Array.from({ length: 25 }, (_, i) => `org${i + 1}`)
    const statements = new Map(orgs.map((org) => [org, adapters.schemas.drizzle.getDb(org).select().from(items).where(eq(items.label, sql.placeholder('label'))).prepare('by_label')]))
    let failures = 0
    const failure = (e: unknown): void => {
      failures++
      if (failures === 1) throw unwrap(e)
    }
    await Promise.all(
      Array.from({ length: 20 }, async (_, w) => {
        for (let i = 0; i < 50; i++) {
          const org = orgs[(w + i) % orgs.length] as string
          await (statements.get(org) as { execute(p: { label: string }): Promise<unknown> }).execute({ label: `x${i}` }).catch(failure)
          await adapters.schemas.kysely.getDb(org).selectFrom('items').selectAll().where('label', '=', `y${i}`).execute().catch(failure)
          await adapters.schemas.knex.getDb(org)('items').where({ label: `z${i}` }).select('*').catch(failure)
        }
      }),
    )
    expect(failures).toBe(0)
  }, 120_000)

  it('session-only features reject with UnsupportedError saying why', async () => {
    await using registry = registryFor()
    const adapters = adaptersFor(registry)
    await expect(registry.tenant('org1', 'schemas').connection(() => Promise.resolve())).rejects.toBeInstanceOf(UnsupportedError)
    await expect(registry.tenant('org1', 'schemas').connection(() => Promise.resolve())).rejects.toThrow(/transaction pooler/)
    await expect((await registry.getPool('schemas', 'org1')).connect()).rejects.toBeInstanceOf(UnsupportedError)
    const kysely = await adapters.schemas.kysely
      .getDb('org1')
      .connection()
      .execute(() => Promise.resolve())
      .catch((e: unknown) => e)
    expect(kysely).toBeInstanceOf(UnsupportedError)
    // Transaction control as plain SQL would nest in the short transaction each statement runs in.
    await expect(registry.tenant('org1', 'schemas').query('BEGIN')).rejects.toBeInstanceOf(UnsupportedError)
    expect(registry.stats().connections.checkedOut).toBe(0)
  })

  it('PgBouncer restarted mid-run: the registry recovers and the process goes on', async () => {
    await using registry = registryFor()
    const adapters = adaptersFor(registry)
    let stop = false
    let after = 0
    let restarted = false
    const failedAfter: unknown[] = []
    const workers = Array.from({ length: 10 }, async (_, w) => {
      for (let i = 0; !stop; i++) {
        const org = `org${((w * 13 + i) % 50) + 1}`
        try {
          await kyselySql`SELECT 1`.execute(adapters.schemas.kysely.getDb(org))
          if (restarted) after++
        } catch (error) {
          // During the restart queries may fail (typed, redacted); once it is back they must not.
          if (restarted) failedAfter.push(error)
          else expect(isHyperconnError(error) || error instanceof Error).toBe(true)
        }
        if (restarted && after >= 200) stop = true
      }
    })
    await expect.poll(() => registry.stats().connections.total, { timeout: 10_000 }).toBeGreaterThan(0)
    await bouncer.restart()
    // The first query after the restart may still meet a connection that died with the old process.
    await registry.tenant('org1', 'schemas').query('SELECT 1').catch(() => undefined)
    restarted = true
    await Promise.all(workers)
    expect(failedAfter.length).toBeLessThanOrEqual(10) // at most each worker's in-flight statement at the switch
    await expect(registry.tenant('org2', 'schemas').query('SELECT 1')).resolves.toMatchObject({ rowCount: 1 })
  }, 120_000)
})
