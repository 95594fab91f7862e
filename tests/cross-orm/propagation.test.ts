import { currentTransactionInfo, isInTransaction, TransactionPropagationError } from '@hyperconn/core'
import type { Propagation } from '@hyperconn/core'
import type { KnexTransactionConfig } from '@hyperconn/knex'
import { describe, expect, it, vi } from 'vitest'
import { rejectionOf, unwrap } from './support/async.js'
import { crossOrmDatabases, ENTRY_POINTS, ORMS, VIAS } from './support/fixture.js'
import type { EntryPoint, TenantOrms, TxOptions, WhereAmI } from './support/fixture.js'

// Issue #3 acceptance 9: the adapters' entry points honour core's transaction options. Isolation level
// and access mode given in each ORM's own spelling reach PostgreSQL (SHOW through every ORM), joining
// with conflicting options throws TransactionPropagationError, and every propagation mode — through
// core's options and through Knex's `propagation` config — decides where Drizzle, Kysely and Knex run.
// (packages/core/test/transaction-propagation.test.ts covers core's full matrix on its own.)

const databases = crossOrmDatabases(1, 'xprop')

describe('isolation level and access mode through each entry point', () => {
  const settings: [string, TxOptions, { isolation: string; readOnly: string }][] = [
    ['serializable, read only', { isolationLevel: 'serializable', readOnly: true }, { isolation: 'serializable', readOnly: 'on' }],
    ['repeatable read, read write', { isolationLevel: 'repeatable read', readOnly: false }, { isolation: 'repeatable read', readOnly: 'off' }],
    ['read committed', { isolationLevel: 'read committed' }, { isolation: 'read committed', readOnly: 'off' }],
    ['read only at the default level', { readOnly: true }, { isolation: 'read committed', readOnly: 'on' }],
  ]
  const cases = ENTRY_POINTS.flatMap((entry) => settings.map(([name, options, expected]) => [entry, name, options, expected] as const))

  it.each(cases)('%s with %s: every ORM sees it in SHOW', async (entry, _name, options, expected) => {
    await using fx = await databases.open()
    const { org } = fx
    await org.transaction(
      entry,
      async () => {
        for (const via of VIAS) expect(await org.show(via), via).toEqual(expected)
      },
      options,
    )
  })

  it.each(ORMS)('a read-only transaction opened by Drizzle rejects a write through %s (25006); nothing is written', async (orm) => {
    await using fx = await databases.open()
    const { org } = fx
    const error = await rejectionOf(
      org.drizzle.transaction(
        async () => {
          await org.insert(orm, 'nope')
        },
        { isolationLevel: 'serializable', accessMode: 'read only' },
      ),
    )
    expect(unwrap(error)).toMatchObject({ code: '25006' })
    expect(await org.rows()).toEqual([])
  })
})

describe('joining an active transaction with conflicting options throws TransactionPropagationError', () => {
  const conflicts: [string, TxOptions, TxOptions][] = [
    ['a different isolation level', { isolationLevel: 'serializable' }, { isolationLevel: 'read committed' }],
    ['read write in a read-only transaction', { readOnly: true }, { readOnly: false }],
    ['read only in a read-write transaction', {}, { readOnly: true }],
  ]
  const cases = ENTRY_POINTS.flatMap((outer) =>
    ENTRY_POINTS.flatMap((inner) => conflicts.map(([name, o, i]) => [outer, inner, name, o, i] as const)),
  )

  it.each(cases)('outer %s, inner %s asking for %s; the outer carries on and commits', async (outer, inner, _name, outerOptions, innerOptions) => {
    await using fx = await databases.open()
    const { org } = fx
    const fn = vi.fn(async () => 'ran')
    const seen: WhereAmI[] = []
    await org.transaction(
      outer,
      async () => {
        seen.push(await org.whereAmI('core'))
        expect(await rejectionOf(org.transaction(inner, fn, innerOptions))).toBeInstanceOf(TransactionPropagationError)
        for (const orm of ORMS) {
          seen.push(await org.whereAmI(orm))
          if (outerOptions.readOnly !== true) await org.insert(orm, `outer-${orm}`)
        }
      },
      outerOptions,
    )
    expect(fn).not.toHaveBeenCalled()
    expect(new Set(seen.map((s) => s.txid)).size).toBe(1)
    expect(await org.labels()).toEqual(outerOptions.readOnly === true ? [] : ORMS.map((orm) => `outer-${orm}`))
  })

  it('the ORMs\' own nested calls check options too: Kysely trx.transaction() and Knex trx.transaction()', async () => {
    await using fx = await databases.open()
    const { org } = fx
    await org.kysely
      .transaction()
      .setIsolationLevel('repeatable read')
      .execute(async (trx) => {
        await expect(trx.transaction().setIsolationLevel('serializable').execute(async () => 1)).rejects.toBeInstanceOf(
          TransactionPropagationError,
        )
        await org.knex.transaction(async (knexTrx) => {
          await expect(knexTrx.transaction(async () => 1, { readOnly: true })).rejects.toBeInstanceOf(TransactionPropagationError)
          // Compatible options nest fine.
          await knexTrx.transaction(() => org.insert('drizzle', 'nested-ok'), { isolationLevel: 'repeatable read' })
        })
      })
    expect(await org.labels()).toEqual(['nested-ok'])
  })
})

type Starter = 'core options' | 'knex config'

/** An inner scope with an explicit propagation: core `tenant.transaction(fn, { propagation })`, or Knex `db.transaction(fn, { propagation })`. */
function startInner<T>(org: TenantOrms, starter: Starter, propagation: Propagation, fn: () => Promise<T>): Promise<T> {
  if (starter === 'core options') return org.tenant.transaction(fn, { propagation })
  const config: KnexTransactionConfig = { propagation }
  return org.knex.transaction(() => fn(), config)
}

interface Inner {
  seen: WhereAmI[]
  inTransaction: boolean
  depth: number | undefined
}

/** What the inner callback observes: a statement through each ORM, and a write through each. */
async function innerWork(org: TenantOrms, tag: string): Promise<Inner> {
  const seen: WhereAmI[] = []
  for (const orm of ORMS) {
    seen.push(await org.whereAmI(orm))
    await org.insert(orm, `${tag}-${orm}`)
  }
  return { seen, inTransaction: isInTransaction(org.tenant), depth: currentTransactionInfo(org.tenant)?.depth }
}

const PROPAGATIONS: readonly Propagation[] = ['required', 'requires_new', 'nested', 'mandatory', 'never', 'not_supported', 'supports']
const STARTERS: readonly Starter[] = ['core options', 'knex config']

describe('propagation inside an active transaction (opened by each entry point in turn)', () => {
  const cases = STARTERS.flatMap((starter) =>
    PROPAGATIONS.map((propagation, i) => [propagation, starter, ENTRY_POINTS[i % ENTRY_POINTS.length] as EntryPoint] as const),
  )

  it.each(cases)('%s via %s inside a %s transaction', async (propagation, starter, outerEntry) => {
    await using fx = await databases.open()
    const { org } = fx
    const boom = new Error('outer rolls back')
    let outer!: WhereAmI
    let inner: Inner | undefined
    let innerError: unknown
    let visibleBeforeOuterEnds: string[] = []
    await expect(
      org.transaction(outerEntry, async () => {
        outer = await org.whereAmI('kysely')
        await org.insert('knex', 'outer')
        try {
          inner = await startInner(org, starter, propagation, () => innerWork(org, 'inner'))
        } catch (error) {
          innerError = error
        }
        visibleBeforeOuterEnds = await org.labels()
        // Back in the outer scope, every ORM joins the outer transaction again.
        for (const orm of ORMS) expect((await org.whereAmI(orm)).txid).toBe(outer.txid)
        throw boom
      }),
    ).rejects.toBe(boom)
    const survivors = await org.labels()
    const innerLabels = ORMS.map((orm) => `inner-${orm}`)

    switch (propagation) {
      case 'required':
      case 'mandatory':
      case 'supports':
      case 'nested':
        // Same backend, same transaction; undone with the outer.
        expect(inner?.seen.every((s) => s.pid === outer.pid && s.txid === outer.txid)).toBe(true)
        expect(inner?.depth).toBe(propagation === 'nested' ? 1 : 0)
        expect(visibleBeforeOuterEnds).toEqual([])
        expect(survivors).toEqual([])
        break
      case 'requires_new': {
        // A second connection and transaction shared by all three ORMs, committed before the outer ends.
        const [first] = inner?.seen ?? []
        expect(first?.pid).not.toBe(outer.pid)
        expect(inner?.seen.every((s) => s.pid === first?.pid && s.txid === first.txid)).toBe(true)
        expect(first?.txid).not.toBe(outer.txid)
        expect(visibleBeforeOuterEnds).toEqual(innerLabels)
        expect(survivors).toEqual(innerLabels)
        break
      }
      case 'not_supported':
        // Outside any transaction: each statement autocommits on its own.
        expect(inner?.inTransaction).toBe(false)
        expect(inner?.seen.every((s) => s.pid !== outer.pid && s.txid !== outer.txid)).toBe(true)
        expect(new Set(inner?.seen.map((s) => s.txid)).size).toBe(ORMS.length)
        expect(survivors).toEqual(innerLabels)
        break
      case 'never':
        expect(innerError).toBeInstanceOf(TransactionPropagationError)
        expect(inner).toBeUndefined()
        expect(survivors).toEqual([])
        break
    }
    if (propagation !== 'never') expect(innerError).toBeUndefined()
    expect(org.poolStats()).toMatchObject({ checkedOut: 0 })
  })
})

describe('propagation without an active transaction', () => {
  const cases = STARTERS.flatMap((starter) => PROPAGATIONS.map((propagation) => [propagation, starter] as const))

  it.each(cases)('%s via %s', async (propagation, starter) => {
    await using fx = await databases.open()
    const { org } = fx
    const run = startInner(org, starter, propagation, () => innerWork(org, 'inner'))
    if (propagation === 'mandatory') {
      expect(await rejectionOf(run)).toBeInstanceOf(TransactionPropagationError)
      expect(await org.labels()).toEqual([])
      return
    }
    const inner = await run
    const txids = new Set(inner.seen.map((s) => s.txid))
    if (propagation === 'required' || propagation === 'requires_new' || propagation === 'nested') {
      // A new transaction for all three ORMs.
      expect(inner.inTransaction).toBe(true)
      expect(inner.depth).toBe(0)
      expect(txids.size).toBe(1)
    } else {
      expect(inner.inTransaction).toBe(false)
      expect(txids.size).toBe(ORMS.length)
    }
    expect(await org.labels()).toEqual(ORMS.map((orm) => `inner-${orm}`))
  })
})
