import type { Registry, Tenant } from '@hyperconn/core'
import type { QueryConfig } from 'pg'
import { describe, expect, it } from 'vitest'
import { createKnexAdapter } from '../src/index.js'
import { CLIENT_BINDING, KnexTransactionHandle, TenantKnexClient } from '../src/knex-client.js'
import { KnexConnection } from '../src/knex-connection.js'

/**
 * A tenant that records where each statement went: 'read' (tenant.query with { read: true }), 'query'
 * (tenant.query without it) or 'conn<n>' (the n-th acquired handle), and acquire/release events.
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
  const db = createKnexAdapter(registry, { service: 'core' }).getDb('org1')
  return { db, seen, events }
}

describe('knex read routing', () => {
  it('sends selects, first, pluck and aggregates without locking clauses as reads, without acquiring', async () => {
    const { db, seen, events } = fakeDb()
    const uids: string[] = []
    db.on('query', (q: { __knexUid: string }) => uids.push(q.__knexUid))
    await db('users').select('id').where({ id: 1 })
    await db('users').first()
    await db('users').pluck('id')
    await db('users').count('id')
    await db.select(db.raw('1 as one'))
    expect(seen).toEqual(['read', 'read', 'read', 'read', 'read'])
    expect(events).toEqual([])
    expect(uids).toEqual(Array(5).fill('hyperconn_lazy'))
  })

  it('acquires a connection for writes, raw SQL, CTEs, locking selects and cancellable timeouts', async () => {
    const { db, seen, events } = fakeDb()
    const uids: string[] = []
    db.on('query', (q: { __knexUid: string }) => uids.push(q.__knexUid))
    await db('users').insert({ name: 'a' })
    await db('users').update({ name: 'b' })
    await db('users').del()
    await db.raw('select 1')
    await db.with('u', db('users').select('*')).select('*').from('u')
    await db('users').select('*').forUpdate()
    await db('users').select('*').forNoKeyUpdate().skipLocked()
    await db('users').select('*').forShare()
    await db('users').select('*').forKeyShare()
    await db('users').select(db.raw("nextval('users_id_seq')"))
    await db('users').select('*').timeout(1000, { cancel: true })
    const expected = Array.from({ length: 11 }, (_, i) => `conn${i + 1}`)
    expect(seen).toEqual(expected)
    expect(uids).toEqual(expected.map((_, i) => `hyperconn_pid${i + 1}`))
    expect(events.filter((e) => e.startsWith('release'))).toHaveLength(11)
  })

  it('transactions acquire up front and never mark reads', async () => {
    const { db, seen } = fakeDb()
    // The fake tenant has no transaction support: a trx client is built directly from the adapter's pieces.
    const tenant = (db.client as TenantKnexClient).tenant
    const client = new TenantKnexClient({
      client: 'pg',
      [CLIENT_BINDING]: { tenant, transaction: new KnexTransactionHandle(tenant, undefined, undefined) },
    })
    const connection = (await client.acquireConnection()) as { lazy: boolean }
    expect(connection.lazy).toBe(false)
    expect(seen).toEqual([])
  })

  it('on one connection: reads before the first other statement are reads, everything after runs on the handle', async () => {
    const { db, seen, events } = fakeDb()
    const tenant = (db.client as { tenant: Tenant }).tenant
    const conn = new KnexConnection(tenant, undefined)
    await conn.forRead().query('select 1', [])
    expect(conn.lazy).toBe(true)
    await conn.query('set search_path = x', [])
    await conn.forRead().query('select 2', [])
    await conn.query('select 3', [])
    conn.release()
    conn.release()
    expect(seen).toEqual(['read', 'conn1', 'conn1', 'conn1'])
    expect(events).toEqual(['acquire conn1', 'release conn1'])
  })
})
