import { currentTransactionInfo, TransactionRolledBackError } from '@hyperconn/core'
import { TransactionRollbackError } from 'drizzle-orm'
import { describe, expect, it } from 'vitest'
import { deferred, rejectionOf } from './support/async.js'
import { crossOrmDatabases, ENTRY_POINTS, ORMS } from './support/fixture.js'
import type { EntryPoint, NativeTx, TenantOrms } from './support/fixture.js'

// Issue #3 acceptance 3: savepoints opened by different mechanisms (core 'nested', Drizzle
// tx.transaction, Kysely trx.transaction().execute, Knex trx.transaction) stack into one
// transaction, three levels deep, and a failure undoes exactly its own scope, whichever ORM wrote.

const databases = crossOrmDatabases(1, 'xnested')

/**
 * Opens a savepoint with one ORM's own nesting call. Drizzle, Kysely and Knex only nest from their
 * transaction object, so their entry point first joins the current scope ('required') to get one.
 * The failure is carried past the join: a joined callback that throws would doom the whole transaction.
 */
async function savepoint(org: TenantOrms, mechanism: EntryPoint, fn: (native: NativeTx) => Promise<void>): Promise<void> {
  if (mechanism === 'core') return org.tenant.transaction(() => fn(coreNative(org)), { propagation: 'nested' })
  let failure: { error: unknown } | undefined
  await org.transaction(mechanism, async (native) => {
    try {
      await native.savepoint(fn)
    } catch (error) {
      failure = { error }
    }
  })
  if (failure !== undefined) throw failure.error
}

function coreNative(org: TenantOrms): NativeTx {
  return {
    entry: 'core',
    insert: (label) => org.insert('core', label),
    whereAmI: () => org.whereAmI('core'),
    savepoint: (fn) => org.tenant.transaction(() => fn(coreNative(org)), { propagation: 'nested' }),
  }
}

/** One write through every ORM's getDb(orgId) and one through the scope's own transaction object. */
async function writeAll(org: TenantOrms, native: NativeTx, tag: string): Promise<void> {
  for (const orm of ORMS) await org.insert(orm, `${tag}:${orm}`)
  await native.insert(`${tag}:native-${native.entry}`)
}

function expectedLabels(tag: string, native: EntryPoint): string[] {
  return [...ORMS.map((orm) => `${tag}:${orm}`), `${tag}:native-${native}`]
}

function expectDepth(org: TenantOrms, depth: number): void {
  expect(currentTransactionInfo(org.tenant)).toMatchObject({ depth, status: 'active', savepoint: depth === 0 ? undefined : `hc_sp_${depth}` })
}

// Every ordered choice of three distinct nesting mechanisms; the transaction is opened by the fourth.
const mechanisms = ENTRY_POINTS.flatMap((a) =>
  ENTRY_POINTS.flatMap((b) => ENTRY_POINTS.filter((c) => c !== a && c !== b && a !== b).map((c) => [a, b, c] as const)),
)

describe('three levels of savepoints across ORMs', () => {
  it.each(mechanisms)('levels via %s → %s → %s: an inner failure undoes only the inner scope', async (m1, m2, m3) => {
    await using fx = await databases.open()
    const { org } = fx
    const outer = ENTRY_POINTS.find((e) => e !== m1 && e !== m2 && e !== m3) as EntryPoint
    const expected: string[] = []
    const keep = (tag: string, native: EntryPoint) => expected.push(...expectedLabels(tag, native))

    await org.transaction(outer, async (l0) => {
      expectDepth(org, 0)
      await writeAll(org, l0, 'L0-a')
      keep('L0-a', outer)
      await savepoint(org, m1, async (l1) => {
        expectDepth(org, 1)
        await writeAll(org, l1, 'L1-a')
        keep('L1-a', m1)
        await savepoint(org, m2, async (l2) => {
          expectDepth(org, 2)
          await writeAll(org, l2, 'L2-a')
          keep('L2-a', m2)
          // The innermost scope fails after writing through every ORM: only it is undone.
          const boom = new Error('L3 fails')
          const error = await rejectionOf(
            savepoint(org, m3, async (l3) => {
              expectDepth(org, 3)
              await writeAll(org, l3, 'L3-failed')
              throw boom
            }),
          )
          expect(error).toBe(boom)
          expectDepth(org, 2)
          // A statement error swallowed inside a savepoint fails that savepoint only.
          const swallowed = await rejectionOf(
            savepoint(org, m3, async (l3) => {
              await writeAll(org, l3, 'L3-swallowed')
              await org.insert('kysely', 'L0-a:kysely').catch(() => undefined) // unique violation, caught
            }),
          )
          expect(swallowed).toBeInstanceOf(TransactionRolledBackError)
          expect((swallowed as Error).cause).toMatchObject({ code: '23505' })
          // A successful innermost scope is released into its parent.
          await savepoint(org, m3, async (l3) => {
            await writeAll(org, l3, 'L3-ok')
            keep('L3-ok', m3)
          })
          await writeAll(org, l2, 'L2-b')
          keep('L2-b', m2)
        })
        await writeAll(org, l1, 'L1-b')
        keep('L1-b', m1)
        // A middle scope that fails undoes its own inner savepoints too, even the released ones.
        await expect(
          savepoint(org, m2, async (l2) => {
            await writeAll(org, l2, 'L2-failed')
            await savepoint(org, m3, (l3) => writeAll(org, l3, 'L3-under-failed-L2'))
            throw new Error('L2 fails')
          }),
        ).rejects.toThrow('L2 fails')
      })
      await writeAll(org, l0, 'L0-b')
      keep('L0-b', outer)
    })

    const rows = await org.rows()
    expect(rows.map((r) => r.label)).toEqual(expected)
    // One transaction throughout: savepoints share the top-level transaction id and the backend.
    expect(new Set(rows.map((r) => `${r.pid}/${r.txid}`)).size).toBe(1)
    expect(org.poolStats()).toMatchObject({ checkedOut: 0 })
  })

  it('a failing savepoint rolls back a unique violation hit through Knex and the outer Drizzle transaction commits', async () => {
    await using fx = await databases.open()
    const { org } = fx
    await org.drizzle.transaction(async (tx) => {
      await org.insert('kysely', 'dup')
      await expect(
        tx.transaction(async () => {
          await org.insert('drizzle', 'inner')
          await org.insert('knex', 'dup')
        }),
      ).rejects.toMatchObject({ code: '23505' })
      await org.insert('knex', 'after')
    })
    expect(await org.labels()).toEqual(['dup', 'after'])
  })

  it('queries of the parent frame issued while a savepoint is open wait for it and stay outside it', async () => {
    await using fx = await databases.open()
    const { org } = fx
    await org.knex.transaction(async (trx) => {
      const entered = deferred()
      const gate = deferred()
      let insideId = 0
      const nested = trx.transaction(async () => {
        entered.resolve()
        await gate.promise
        insideId = (await org.insert('drizzle', 'inside-savepoint')).id
        throw new Error('undo the savepoint')
      })
      await entered.promise
      // Parent-frame queries through two other ORMs, issued while the savepoint is open.
      const siblings = Promise.all([org.insert('kysely', 'parent-kysely'), org.insert('core', 'parent-core')])
      gate.resolve()
      await expect(nested).rejects.toThrow('undo the savepoint')
      // Sequence values survive rollbacks: the siblings ran after the savepoint's insert, yet their rows stay.
      for (const sibling of await siblings) expect(sibling.id).toBeGreaterThan(insideId)
    })
    expect((await org.labels()).sort()).toEqual(['parent-core', 'parent-kysely'])
  })

  it('Drizzle tx.rollback() inside a Kysely-opened transaction undoes only its savepoint', async () => {
    await using fx = await databases.open()
    const { org } = fx
    await org.kysely.transaction().execute(async () => {
      await org.insert('kysely', 'outer')
      await org.drizzle.transaction(async (tx) => {
        const error = await rejectionOf(
          tx.transaction(async (inner) => {
            await org.insert('knex', 'inner')
            inner.rollback()
          }),
        )
        expect(error).toBeInstanceOf(TransactionRollbackError)
      })
      await org.insert('drizzle', 'after')
    })
    expect(await org.labels()).toEqual(['outer', 'after'])
  })
})
