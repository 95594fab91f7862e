import { TransactionRolledBackError } from '@hyperconn/core'
import { describe, expect, it } from 'vitest'
import { rejectionOf, unwrap } from './support/async.js'
import { crossOrmDatabases, ENTRY_POINTS, ORMS, VIAS } from './support/fixture.js'
import type { Stamp, WhereAmI } from './support/fixture.js'

// Issue #3 acceptance 1, 2 and 4: one transaction, whichever of the four entry points opened it, is
// one connection and one PostgreSQL transaction for Drizzle, Kysely, Knex and tenant.query.

const databases = crossOrmDatabases(1, 'xshared')

describe.each(ENTRY_POINTS)('a transaction opened by %s', (entry) => {
  it('runs every ORM on one backend and one transaction, invisible to others until all commit together', async () => {
    await using fx = await databases.open()
    const { org } = fx
    const adminPid = (await org.admin.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid
    const seen: WhereAmI[] = []
    const stamps: Stamp[] = []
    await org.transaction(entry, async (native) => {
      stamps.push(await native.insert('native'))
      seen.push(await native.whereAmI())
      for (const via of VIAS) {
        stamps.push(await org.insert(via, `via-${via}`))
        seen.push(await org.whereAmI(via))
      }
      // Another session (the admin client, and an autocommit query on the registry's own pool) sees none of it.
      expect(await org.labels()).toEqual([])
      const pool = await fx.registry.getPool('core', org.orgId)
      expect((await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM items')).rows[0]?.n).toBe(0)
    })
    const [first] = seen
    expect(new Set(seen.map((s) => s.pid))).toEqual(new Set([first?.pid]))
    expect(new Set(seen.map((s) => s.txid))).toEqual(new Set([first?.txid]))
    expect(first?.pid).not.toBe(adminPid)
    // Committed together, each row stamped by PostgreSQL with that one backend and transaction.
    const rows = await org.rows()
    expect(rows.map((r) => [r.orm, r.label])).toEqual([
      [entry, 'native'],
      ['core', 'via-core'],
      ['drizzle', 'via-drizzle'],
      ['kysely', 'via-kysely'],
      ['knex', 'via-knex'],
    ])
    expect(rows.every((r) => r.pid === first?.pid && r.txid === first.txid)).toBe(true)
    expect(stamps.map((s) => s.id)).toEqual(rows.map((r) => r.id))
    expect(org.poolStats()).toMatchObject({ checkedOut: 0, waitingCount: 0 })
  })

  it('a throw at the end rolls back the writes of all three ORMs', async () => {
    await using fx = await databases.open()
    const { org } = fx
    const boom = new Error('validation failed after writing')
    const error = await rejectionOf(
      org.transaction(entry, async (native) => {
        await native.insert('native')
        for (const orm of ORMS) await org.insert(orm, `via-${orm}`)
        expect(await org.labels()).toEqual([])
        throw boom
      }),
    )
    expect(error).toBe(boom)
    expect(await org.rows()).toEqual([])
    expect(org.poolStats()).toMatchObject({ checkedOut: 0 })
  })

  it.each(ORMS)('a rejected inner step through %s rolls back the writes of all three ORMs', async (failing) => {
    await using fx = await databases.open()
    const { org } = fx
    await org.insert('core', 'taken') // committed before: the failing step collides with it
    const error = await rejectionOf(
      org.transaction(entry, async (native) => {
        await native.insert('native')
        for (const orm of ORMS) await org.insert(orm, `via-${orm}`)
        await org.insert(failing, 'taken') // not caught: the callback rejects with it
        await org.insert('core', 'never-reached')
      }),
    )
    expect(unwrap(error)).toMatchObject({ code: '23505' })
    expect(await org.labels()).toEqual(['taken'])
    expect(org.poolStats()).toMatchObject({ checkedOut: 0 })
  })
})

describe('an inner error caught and swallowed in join mode makes the outer transaction reject', () => {
  // Every (outer, inner) pair of entry points: the inner joins (propagation 'required') and fails with a
  // unique violation; the caller catches it. Committing would persist half a unit of work.
  const pairs = ENTRY_POINTS.flatMap((outer) => ENTRY_POINTS.map((inner) => [outer, inner] as const))
  it.each(pairs)('outer %s, joined inner %s', async (outer, inner) => {
    await using fx = await databases.open()
    const { org } = fx
    let swallowed: unknown
    let afterwards = false
    const error = await rejectionOf(
      org.transaction(outer, async () => {
        await org.insert('drizzle', 'outer-write')
        try {
          await org.transaction(inner, async () => {
            await org.insert('kysely', 'inner-write')
            await org.insert('kysely', 'outer-write') // unique violation through Kysely
          })
        } catch (e) {
          swallowed = e
        }
        afterwards = true
        return 'looks fine'
      }),
    )
    expect(unwrap(swallowed)).toMatchObject({ code: '23505' })
    expect(afterwards).toBe(true)
    expect(error).toBeInstanceOf(TransactionRolledBackError)
    expect((error as Error).cause).toMatchObject({ code: '23505' })
    expect(await org.rows()).toEqual([])
  })

  it.each(ENTRY_POINTS)('outer %s: a failed statement caught by the user (no inner scope) also rejects', async (outer) => {
    await using fx = await databases.open()
    const { org } = fx
    const error = await rejectionOf(
      org.transaction(outer, async () => {
        await org.insert('knex', 'a')
        await org.insert('kysely', 'a').catch(() => undefined)
        // PostgreSQL refuses everything until the end of the transaction block.
        expect(unwrap(await rejectionOf(org.insert('drizzle', 'b')))).toMatchObject({ code: '25P02' })
      }),
    )
    expect(error).toBeInstanceOf(TransactionRolledBackError)
    expect((error as Error).cause).toMatchObject({ code: '23505' })
    expect(await org.rows()).toEqual([])
  })

  it('a joined Knex callback that throws without any SQL error, caught by the user, also rejects the Drizzle transaction', async () => {
    await using fx = await databases.open()
    const { org } = fx
    const invalid = new Error('business rule violated')
    const error = await rejectionOf(
      org.drizzle.transaction(async () => {
        await org.insert('drizzle', 'a')
        await org.knex
          .transaction(async () => {
            await org.insert('knex', 'b')
            throw invalid
          })
          .catch(() => undefined)
      }),
    )
    expect(error).toBeInstanceOf(TransactionRolledBackError)
    expect((error as Error).cause).toBe(invalid)
    expect(await org.rows()).toEqual([])
  })
})
