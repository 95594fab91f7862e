import { isInTransaction } from '@hyperconn/core'
import { describe, expect, it } from 'vitest'
import { crossOrmDatabases, ENTRY_POINTS, ORMS, VIAS } from './support/fixture.js'
import type { EntryPoint, TenantOrms, WhereAmI } from './support/fixture.js'

// Issue #3 acceptance 10: statements for tenant B inside tenant A's transaction run on B's own pool
// and database, outside A's transaction, through every ORM.

const databases = crossOrmDatabases(2, 'xtenants')

/** The next entry point after `entry`, so B's own transaction is never opened the same way as A's. */
function other(entry: EntryPoint): EntryPoint {
  return ENTRY_POINTS[(ENTRY_POINTS.indexOf(entry) + 1) % ENTRY_POINTS.length] as EntryPoint
}

describe.each(ENTRY_POINTS)("tenant A's transaction opened by %s", (entry) => {
  it("B's statements run on B's pool outside it: B's writes survive A's rollback", async () => {
    await using fx = await databases.open()
    const [a, b] = fx.orgs as [TenantOrms, TenantOrms]
    const boom = new Error('A rolls back')
    let inA!: WhereAmI
    const bOutside: WhereAmI[] = []
    const bInOwn: WhereAmI[] = []
    await expect(
      a.transaction(entry, async (native) => {
        inA = await native.whereAmI()
        await a.insert('core', 'a-first')
        for (const orm of ORMS) {
          expect(isInTransaction(b.tenant)).toBe(false)
          bOutside.push(await b.whereAmI(orm))
          await b.insert(orm, `b-autocommit-${orm}`)
          // ...and A's statements through the same ORM still join A.
          expect((await a.whereAmI(orm)).txid).toBe(inA.txid)
        }
        // B's own transaction inside A's: separate; A's statements inside it still join A.
        await b.transaction(other(entry), async () => {
          for (const orm of ORMS) {
            bInOwn.push(await b.whereAmI(orm))
            await b.insert(orm, `b-tx-${orm}`)
            expect((await a.whereAmI(orm)).txid).toBe(inA.txid)
            await a.insert(orm, `a-${orm}`)
          }
        })
        // Committed already, while A is still open.
        expect(await b.labels()).toHaveLength(2 * ORMS.length)
        throw boom
      }),
    ).rejects.toBe(boom)

    expect(inA.database).toBe(a.database.name)
    for (const seen of [...bOutside, ...bInOwn]) {
      expect(seen.database).toBe(b.database.name)
      expect(seen.pid).not.toBe(inA.pid)
      expect(seen.txid).not.toBe(inA.txid)
    }
    // Autocommit: every statement its own transaction. B's transaction: one for all three ORMs.
    expect(new Set(bOutside.map((s) => s.txid)).size).toBe(ORMS.length)
    expect(new Set(bInOwn.map((s) => s.txid)).size).toBe(1)
    expect(await a.rows()).toEqual([])
    const bRows = await b.rows()
    expect(bRows.map((r) => r.label)).toEqual([...ORMS.map((orm) => `b-autocommit-${orm}`), ...ORMS.map((orm) => `b-tx-${orm}`)])
    expect(bRows.every((r) => r.database === b.database.name && r.pid !== inA.pid)).toBe(true)
    for (const org of [a, b]) expect(org.poolStats()).toMatchObject({ checkedOut: 0 })
  })

  it("B's own transaction rolling back inside A's leaves A's work to commit", async () => {
    await using fx = await databases.open()
    const [a, b] = fx.orgs as [TenantOrms, TenantOrms]
    await a.transaction(entry, async () => {
      for (const via of VIAS) await a.insert(via, `a-${via}`)
      await expect(
        b.transaction(other(entry), async () => {
          for (const orm of ORMS) await b.insert(orm, `b-${orm}`)
          throw new Error('B rolls back')
        }),
      ).rejects.toThrow('B rolls back')
      // B's failure is B's: A's transaction is not marked failed.
      await a.insert('kysely', 'a-after')
    })
    expect(await a.labels()).toEqual([...VIAS.map((via) => `a-${via}`), 'a-after'])
    expect(await b.rows()).toEqual([])
  })
})
