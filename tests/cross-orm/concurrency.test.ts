import { concurrentQueryWarning } from '@hyperconn/testkit'
import { describe, expect, it } from 'vitest'
import { collectWarnings } from './support/async.js'
import { crossOrmDatabases, ENTRY_POINTS, VIAS } from './support/fixture.js'
import type { Stamp, Via, WhereAmI } from './support/fixture.js'

// Issue #3 acceptance 5: queries issued concurrently inside one transaction, through every ORM, are
// serialised on its one connection: pg never sees two at once (its DeprecationWarning), nothing fails,
// and each ORM's statements run in the order they were issued.

const databases = crossOrmDatabases(1, 'xconc')

const QUERIES = 50

describe('Promise.all of 50 mixed-ORM queries inside one transaction', () => {
  it.each(ENTRY_POINTS)('opened by %s: all succeed, in issue order per ORM, on one connection, without a DeprecationWarning', async (entry) => {
    await using fx = await databases.open()
    const { org } = fx
    // Query i goes through VIAS[i % 4]; every fifth one is a SELECT, the others INSERT.
    const viaOf = (i: number): Via => VIAS[i % VIAS.length] as Via
    const isSelect = (i: number): boolean => i % 5 === 4
    const stamps = new Map<number, Stamp>()
    const seen: WhereAmI[] = []
    const warnings = await collectWarnings(async () => {
      await org.transaction(entry, async () => {
        const results = await Promise.all(
          Array.from({ length: QUERIES }, (_, i) =>
            isSelect(i) ? org.whereAmI(viaOf(i)) : org.insert(viaOf(i), `q${String(i).padStart(2, '0')}`),
          ),
        )
        results.forEach((result, i) => {
          if (isSelect(i)) seen.push(result)
          else stamps.set(i, result as Stamp)
        })
      })
    })
    expect(warnings.filter((w) => w.name === 'DeprecationWarning')).toEqual([])

    const inserted = [...stamps.keys()]
    const rows = await org.rows()
    expect(rows).toHaveLength(inserted.length)
    // One backend, one transaction for all 50.
    const where = new Set([...seen, ...rows].map((r) => `${r.pid}/${r.txid}`))
    expect(where.size).toBe(1)
    // The serial ids follow issue order within each ORM. (Across ORMs the order is the order in which
    // the statements reach core's queue, after each adapter's own async steps; see the report.)
    for (const via of VIAS) {
      const ids = inserted.filter((i) => viaOf(i) === via).map((i) => stamps.get(i)?.id ?? -1)
      expect(ids, `ids of ${via}`).toEqual([...ids].sort((a, b) => a - b))
    }
    // Every statement took effect exactly once, as committed.
    expect(rows.map((r) => r.label).sort()).toEqual(inserted.map((i) => `q${String(i).padStart(2, '0')}`))
    expect(org.poolStats()).toMatchObject({ checkedOut: 0, waitingCount: 0 })
  })

  it('a Promise.all that mixes nested savepoints of different ORMs with plain queries keeps every scope intact', async () => {
    await using fx = await databases.open()
    const { org } = fx
    const warnings = await collectWarnings(async () => {
      await org.kysely.transaction().execute(async () => {
        await Promise.all([
          org.insert('drizzle', 'plain-1'),
          org.drizzle.transaction((tx) => tx.transaction(async () => {
            await org.insert('knex', 'sp-drizzle-kept')
          })),
          // Caught inside the joined Knex callback: only the savepoint fails, not the joined scope.
          org.knex.transaction(async (trx) => {
            await trx
              .transaction(async () => {
                await org.insert('kysely', 'sp-knex-undone')
                throw new Error('undo')
              })
              .catch(() => undefined)
          }),
          org.insert('kysely', 'plain-2'),
          org.tenant.transaction(() => org.insert('core', 'sp-core-kept'), { propagation: 'nested' }),
        ])
      })
    })
    expect(warnings.filter((w) => w.name === 'DeprecationWarning')).toEqual([])
    expect((await org.labels()).sort()).toEqual(['plain-1', 'plain-2', 'sp-core-kept', 'sp-drizzle-kept'])
  })

  // Runs last: pg warns once per process, so this also proves no earlier test here triggered it.
  it('control: the same Promise.all straight on one pg client does warn (the checks above are live)', async () => {
    await using fx = await databases.open()
    const warning = await concurrentQueryWarning(fx.org.database.url)
    expect(warning.name).toBe('DeprecationWarning')
  })
})
