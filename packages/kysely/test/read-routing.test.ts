import type { Registry, Tenant } from '@hyperconn/core'
import { sql } from 'kysely'
import type { Generated } from 'kysely'
import type { QueryConfig } from 'pg'
import { describe, expect, it } from 'vitest'
import { createKyselyAdapter } from '../src/index.js'
import { TenantDriver } from '../src/kysely-driver.js'

interface Db {
  users: { id: Generated<number>; name: string }
}

/**
 * A tenant that records where each statement went: 'read' (tenant.query with { read: true }), 'query'
 * (tenant.query without it) or 'conn<n>' (the n-th acquired handle), and how many handles were released.
 */
function fakeDb() {
  const seen: string[] = []
  const events: string[] = []
  let acquired = 0
  const result = (text: string) => ({ command: text.split(' ')[0]!.toUpperCase(), rowCount: 0, rows: [], fields: [], oid: 0 })
  const textOf = (config: string | QueryConfig) => (typeof config === 'string' ? config : config.text)
  const tenant = {
    orgId: 'org1',
    service: 'core',
    schema: undefined,
    query(config: string | QueryConfig, _values?: unknown[], options?: { read?: boolean }) {
      seen.push(options?.read === true ? 'read' : 'query')
      return Promise.resolve(result(textOf(config)))
    },
    acquire() {
      const id = `conn${++acquired}`
      events.push(`acquire ${id}`)
      return Promise.resolve({
        inTransaction: false,
        processID: acquired,
        query(config: string | QueryConfig) {
          seen.push(id)
          return Promise.resolve(result(textOf(config)))
        },
        release() {
          events.push(`release ${id}`)
        },
      })
    },
  } as unknown as Tenant
  const registry = { tenant: () => tenant } as unknown as Registry
  const db = createKyselyAdapter<Db>(registry, { service: 'core' }).getDb('org1')
  return { db, tenant, seen, events }
}

describe('kysely read routing', () => {
  it('sends selectFrom without locking clauses as reads, without acquiring a connection', async () => {
    const { db, seen, events } = fakeDb()
    await db.selectFrom('users').selectAll().where('id', '=', 1).execute()
    await db.selectFrom('users').select((eb) => eb.fn.countAll().as('n')).executeTakeFirst()
    expect(seen).toEqual(['read', 'read'])
    expect(events).toEqual([])
  })

  it('acquires a connection for writes, raw SQL, CTEs and locking selects', async () => {
    const { db, seen, events } = fakeDb()
    await db.insertInto('users').values({ name: 'a' }).execute()
    await db.updateTable('users').set({ name: 'b' }).execute()
    await db.deleteFrom('users').execute()
    await sql`select 1`.execute(db)
    await db.with('u', (qb) => qb.selectFrom('users').selectAll()).selectFrom('u').selectAll().execute()
    await db.selectFrom('users').selectAll().forUpdate().execute()
    await db.selectFrom('users').selectAll().forNoKeyUpdate().skipLocked().execute()
    await db.selectFrom('users').selectAll().forShare().execute()
    await db.selectFrom('users').selectAll().forKeyShare().execute()
    await db.selectFrom('users').select(sql<number>`nextval('users_id_seq')`.as('n')).execute()
    expect(seen).toEqual(['conn1', 'conn2', 'conn3', 'conn4', 'conn5', 'conn6', 'conn7', 'conn8', 'conn9', 'conn10'])
    expect(events.filter((e) => e.startsWith('release'))).toHaveLength(10)
  })

  it('on one connection: reads before the first other statement are reads, everything after runs on the handle', async () => {
    const { db, tenant, seen, events } = fakeDb()
    const driver = new TenantDriver(tenant)
    const conn = await driver.acquireConnection()
    const select = db.selectFrom('users').selectAll().compile()
    await conn.executeQuery(select)
    expect(events).toEqual([])
    await conn.executeQuery(sql`set work_mem = '8MB'`.compile(db))
    await conn.executeQuery(select)
    await Promise.all([conn.executeQuery(db.insertInto('users').values({ name: 'x' }).compile()), conn.executeQuery(select)])
    await driver.releaseConnection(conn)
    await driver.releaseConnection(conn)
    expect(seen).toEqual(['read', 'conn1', 'conn1', 'conn1', 'conn1'])
    expect(events).toEqual(['acquire conn1', 'release conn1'])
  })

  it('a connection that only read releases nothing', async () => {
    const { db, tenant, events } = fakeDb()
    const driver = new TenantDriver(tenant)
    const conn = await driver.acquireConnection()
    await conn.executeQuery(db.selectFrom('users').selectAll().compile())
    await driver.releaseConnection(conn)
    expect(events).toEqual([])
  })
})
