import { currentTransactionInfo, isInTransaction } from '@hyperconn/core'
import { expect, it } from 'vitest'
import { barrier } from './support/async.js'
import { crossOrmDatabases, ENTRY_POINTS, ORMS, VIAS } from './support/fixture.js'
import type { EntryPoint, TenantOrms, Via, WhereAmI } from './support/fixture.js'

// Issue #3 acceptance 6, within PostgreSQL's default max_connections 100 (shared with the other test file
// running in parallel): 50 concurrent flows over 10 tenants, each tenant's secret pointing at its own
// database. Transactions from all four entry points and autocommit flows interleave through all three
// ORMs; every statement must see its own tenant's database and only its own transaction. The 40
// transactions are all open at once (a barrier), so the budget must hold them plus their neighbours'
// queries. .ci/run runs it on Node 24 too, which builds AsyncLocalStorage on AsyncContextFrame.

const TENANTS = 10
const FLOWS = 50
const KINDS = 5 // per tenant: one transactional flow per entry point, and one autocommit flow

const databases = crossOrmDatabases(TENANTS, 'xflows')

interface TxRecord {
  flow: number
  tenant: number
  entry: EntryPoint
  rollback: boolean
  seen: WhereAmI[]
}

it('50 concurrent flows over 10 tenants: each statement sees its own database and its own transaction only', async () => {
  // Per tenant 4 transactions are open at once (the barrier), plus a neighbour's query and an autocommit flow.
  await using fx = await databases.open({ pool: { max: 6 }, connections: 52 })
  const txFlows = FLOWS - FLOWS / KINDS
  // Every flow arrives once all transactions are open; transactional flows then wait for the autocommit
  // flows' first round, so those autocommit statements certainly run while 80 transactions are open.
  const opened = barrier(FLOWS)
  const firstRound = barrier(FLOWS / KINDS)
  const transactions: TxRecord[] = []
  const outside: { flow: number; tenant: number; seen: WhereAmI }[] = []

  const expectOwn = (org: TenantOrms, seen: WhereAmI): void => {
    expect(seen.database).toBe(org.database.name)
  }

  const autocommitFlow = async (i: number, org: TenantOrms, t: number): Promise<void> => {
    await opened.arrive()
    for (const [round, vias] of [[1, VIAS], [2, [...VIAS].reverse()]] as const) {
      for (const via of vias) {
        expect(isInTransaction(org.tenant)).toBe(false)
        const seen = await org.whereAmI(via)
        expectOwn(org, seen)
        outside.push({ flow: i, tenant: t, seen })
        if (via !== 'core') await org.insert(via, `auto${i}-r${round}-${via}`)
      }
      if (round === 1) await firstRound.arrive()
    }
  }

  const transactionalFlow = async (i: number, org: TenantOrms, t: number, kind: number): Promise<void> => {
    const entry = ENTRY_POINTS[kind] as EntryPoint
    const record: TxRecord = { flow: i, tenant: t, entry, rollback: i % 3 === 0, seen: [] }
    transactions.push(record)
    const neighbour = fx.orgs[(t + 1) % TENANTS] as TenantOrms
    const run = org.transaction(entry, async (native) => {
      record.seen.push(await native.whereAmI())
      // A burst through every ORM and the native handle, all at once.
      const burst = await Promise.all([
        ...VIAS.map((via) => org.whereAmI(via)),
        ...VIAS.map((via) => org.insert(via, `tx${i}-${via}`)),
        native.insert(`tx${i}-native`),
      ])
      record.seen.push(...burst)
      // Another tenant's statement inside this transaction: its own database, outside this transaction.
      const via = ORMS[i % ORMS.length] as Via
      const theirs = await neighbour.whereAmI(via)
      expectOwn(neighbour, theirs)
      outside.push({ flow: i, tenant: (t + 1) % TENANTS, seen: theirs })
      await opened.arrive()
      await firstRound.all
      if (i % 2 === 1) {
        await native.savepoint(async (inner) => {
          record.seen.push(await inner.whereAmI(), await inner.insert(`tx${i}-savepoint`))
          expect(currentTransactionInfo(org.tenant)?.depth).toBe(1)
        })
      }
      record.seen.push(await org.insert(ORMS[(i + 1) % ORMS.length] as Via, `tx${i}-last`))
      if (record.rollback) throw new Error(`flow ${i} rolls back`)
    })
    if (record.rollback) await expect(run).rejects.toThrow(`flow ${i} rolls back`)
    else await run
  }

  await Promise.all(
    Array.from({ length: FLOWS }, (_, i) => {
      const t = i % TENANTS
      const kind = Math.floor(i / TENANTS) % KINDS
      const org = fx.orgs[t] as TenantOrms
      return kind === KINDS - 1 ? autocommitFlow(i, org, t) : transactionalFlow(i, org, t, kind)
    }),
  )

  expect(transactions).toHaveLength(txFlows)
  // Each transaction saw one backend, one transaction id and its own database; no two shared a txid.
  const txidOf = new Map<number, string>()
  for (const record of transactions) {
    const org = fx.orgs[record.tenant] as TenantOrms
    expect(new Set(record.seen.map((s) => s.txid)).size, `flow ${record.flow} (${record.entry})`).toBe(1)
    expect(new Set(record.seen.map((s) => s.pid)).size).toBe(1)
    for (const seen of record.seen) expectOwn(org, seen)
    txidOf.set(record.flow, record.seen[0]?.txid ?? '?')
  }
  const txTxids = new Set(txidOf.values())
  expect(txTxids.size).toBe(txFlows)
  // No statement outside a transaction joined one: each autocommit statement got a transaction of its own.
  const outsideTxids = outside.map((o) => o.seen.txid)
  expect(outsideTxids.filter((txid) => txTxids.has(txid))).toEqual([])
  expect(new Set(outsideTxids).size).toBe(outsideTxids.length)

  // The databases hold exactly the committed work, each row in its own tenant's database and stamped
  // with its flow's transaction.
  for (let t = 0; t < TENANTS; t++) {
    const org = fx.orgs[t] as TenantOrms
    const rows = await org.rows()
    const expected = new Set<string>()
    for (const record of transactions) {
      if (record.tenant !== t || record.rollback) continue
      for (const via of VIAS) expected.add(`tx${record.flow}-${via}`)
      expected.add(`tx${record.flow}-native`)
      expected.add(`tx${record.flow}-last`)
      if (record.flow % 2 === 1) expected.add(`tx${record.flow}-savepoint`)
    }
    for (let i = t + (KINDS - 1) * TENANTS; i < FLOWS; i += KINDS * TENANTS) {
      for (const round of [1, 2]) for (const orm of ORMS) expected.add(`auto${i}-r${round}-${orm}`)
    }
    expect(new Set(rows.map((r) => r.label))).toEqual(expected)
    for (const row of rows) {
      expect(row.database).toBe(org.database.name)
      const flow = /^tx(\d+)-/.exec(row.label)?.[1]
      if (flow === undefined) expect(txTxids.has(row.txid)).toBe(false)
      else expect(row.txid).toBe(txidOf.get(Number(flow)))
    }
    expect(org.poolStats()).toMatchObject({ checkedOut: 0, waitingCount: 0 })
  }
})
