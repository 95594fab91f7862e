import pg from 'pg'
import { testDatabase } from '@hyperconn/testkit/vitest'
import type { TestDatabase } from '@hyperconn/testkit'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { isInTransaction } from '../src/transactions/transaction-context.js'
import { TestPoolAccess } from './support/pool-access.js'

// Within max_connections 100, shared with the test file running in parallel: up to 5 connections per tenant.
const TENANTS = 10
const FLOWS = 50

let db: TestDatabase
let admin: pg.Client

const schemaOf = (t: number) => `t${String(t).padStart(2, '0')}`

beforeAll(async () => {
  db = await testDatabase('txconc')
  admin = new pg.Client({ connectionString: db.url })
  await admin.connect()
  for (let t = 0; t < TENANTS; t++) {
    await admin.query(`CREATE SCHEMA ${schemaOf(t)}; CREATE TABLE ${schemaOf(t)}.marks (flow int NOT NULL, txid text NOT NULL)`)
  }
})

afterAll(async () => {
  await admin?.end()
  await db?.[Symbol.asyncDispose]()
})

interface Seen {
  schema: string
  txid: string
  pid: number
}

const PROBE = 'SELECT current_schema() AS schema, txid_current()::text AS txid, pg_backend_pid() AS pid'

it('50 concurrent flows over 10 tenants: each query sees its own tenant and its own transaction', async () => {
  // One pool per tenant; the tenant's schema comes from the connection's search_path. Each tenant has up
  // to 4 open transactions, and each of them also queries the next tenant: max 6 leaves room for that.
  await using access = new TestPoolAccess((key) => ({
    connectionString: db.url,
    max: 6,
    options: `-c search_path=${schemaOf(Number(key.orgId.slice(3)))}`,
  }))
  const txidsByFlow = new Map<number, Set<string>>()
  const autocommitTxids: string[] = []
  const expected = new Map<string, number[]>()

  const flow = async (i: number): Promise<void> => {
    const t = i % TENANTS
    const orgId = `org${t}`
    // A fresh handle per step, as registry.tenant() would give: the context is keyed by (service, orgId).
    const tenant = () => access.tenant(orgId)
    const probe = async (): Promise<Seen> => (await tenant().query<Seen>(PROBE)).rows[0] as Seen
    // Per tenant: three transactional flows of different shapes, one autocommit flow, one more transaction.
    const kind = Math.floor(i / TENANTS) % 4
    if (kind === 3) {
      // Autocommit flow on the same tenants as concurrently running transactions.
      for (let n = 0; n < 3; n++) {
        expect(isInTransaction({ service: 'core', orgId })).toBe(false)
        const seen = await probe()
        expect(seen.schema).toBe(schemaOf(t))
        autocommitTxids.push(seen.txid)
      }
      return
    }
    const rollback = kind === 2 && t % 2 === 0
    const txids = new Set<string>()
    txidsByFlow.set(i, txids)
    const run = tenant().transaction(async () => {
      const first = await probe()
      txids.add(first.txid)
      expect(first.schema).toBe(schemaOf(t))
      const burst = await Promise.all([probe(), probe(), tenant().query('INSERT INTO marks (flow, txid) VALUES ($1, $2)', [i, first.txid])])
      for (const seen of burst.slice(0, 2) as Seen[]) {
        txids.add(seen.txid)
        expect(seen.schema).toBe(schemaOf(t))
        expect(seen.pid).toBe(first.pid)
      }
      // A sibling tenant's query inside this transaction runs outside it, on its own pool.
      const other = `org${(t + 1) % TENANTS}`
      const sibling = (await access.tenant(other).query<Seen>(PROBE)).rows[0] as Seen
      expect(sibling.schema).toBe(schemaOf((t + 1) % TENANTS))
      autocommitTxids.push(sibling.txid)
      if (kind === 1) {
        await tenant().transaction(
          async () => {
            const inner = await probe()
            txids.add(inner.txid)
            expect(inner.schema).toBe(schemaOf(t))
          },
          { propagation: 'nested' },
        )
      }
      txids.add((await probe()).txid)
      if (rollback) throw new Error(`flow ${i} rolls back`)
    })
    if (rollback) {
      await expect(run).rejects.toThrow(`flow ${i} rolls back`)
    } else {
      await run
      const rows = expected.get(schemaOf(t)) ?? []
      rows.push(i)
      expected.set(schemaOf(t), rows)
    }
  }

  await Promise.all(Array.from({ length: FLOWS }, (_, i) => flow(i)))

  // Each transaction saw exactly one txid, and no two transactions shared one.
  const txTxids = [...txidsByFlow.values()].map((set) => {
    expect(set.size).toBe(1)
    return [...set][0] as string
  })
  expect(new Set(txTxids).size).toBe(txTxids.length)
  // No autocommit query ran inside any flow's transaction; each got a transaction of its own.
  expect(autocommitTxids.filter((x) => txTxids.includes(x))).toEqual([])
  expect(new Set(autocommitTxids).size).toBe(autocommitTxids.length)
  // Committed flows left their row in their own tenant's schema only; rolled-back flows left nothing.
  for (let t = 0; t < TENANTS; t++) {
    const { rows } = await admin.query<{ flow: number }>(`SELECT flow FROM ${schemaOf(t)}.marks ORDER BY flow`)
    expect(rows.map((r) => r.flow)).toEqual((expected.get(schemaOf(t)) ?? []).sort((x, y) => x - y))
  }
  expect(access.openLeases).toBe(0)
})
