import { describe, expect, it } from 'vitest'
import { crossOrmDatabases, ENTRY_POINTS, VIAS } from './support/fixture.js'
import type { CrossOrm, WhereAmI } from './support/fixture.js'

// API contract: every adapter runs on the registry's pools, and no destroy() of an ORM instance can end
// a registry pool — not inside a transaction, not after it.

const databases = crossOrmDatabases(1, 'xdestroy')

/** Pool lifecycle events of the registry, to prove none happened. */
function watchPools(fx: CrossOrm): { events: string[]; stop: () => void } {
  const events: string[] = []
  const stops = [
    fx.registry.on('pool:end', (e) => events.push(`end ${e.pool}`)),
    fx.registry.on('pool:evict', (e) => events.push(`evict ${e.pool} ${e.reason}`)),
    fx.registry.on('pool:create', (e) => events.push(`create ${e.pool}`)),
  ]
  return { events, stop: () => stops.forEach((stop) => stop()) }
}

describe("the adapters' destroy()", () => {
  it.each(ENTRY_POINTS)('Kysely and Knex destroy() inside a transaction opened by %s, and after it, end no pool', async (entry) => {
    await using fx = await databases.open()
    const { org } = fx
    await org.whereAmI('core') // the pool exists before we start watching
    const pool = await fx.registry.getPool('core', org.orgId)
    const watch = watchPools(fx)
    const seen: WhereAmI[] = []
    await org.transaction(entry, async () => {
      await org.insert('drizzle', 'before-destroy')
      await org.kysely.destroy()
      await org.knex.destroy()
      {
        // Kysely 0.28 instances are AsyncDisposable too; disposing calls destroy().
        await using _disposed = org.kysely
      }
      // The transaction carries on, on the same connection, through every ORM.
      for (const via of VIAS) {
        seen.push(await org.whereAmI(via))
        await org.insert(via, `after-destroy-${via}`)
      }
    })
    expect(new Set(seen.map((s) => s.txid)).size).toBe(1)
    expect(await org.labels()).toEqual(['before-destroy', ...VIAS.map((via) => `after-destroy-${via}`)])

    await org.kysely.destroy()
    await org.knex.destroy()
    // The same instances (getDb caches them) keep working on the same, live pool.
    for (const via of VIAS) await org.insert(via, `after-second-destroy-${via}`)
    watch.stop()
    expect(watch.events).toEqual([])
    expect(pool.ended).toBe(false)
    expect(pool.ending).toBe(false)
    expect(await fx.registry.getPool('core', org.orgId)).toBe(pool)
    expect(fx.registry.stats()).toMatchObject({ pools: { count: 1, created: 1, draining: 0 }, evictions: { total: 0 } })
    expect(org.poolStats()).toMatchObject({ checkedOut: 0 })
  })

  it("Drizzle's client is the adapter's query facade: its end() ends no pool, no connect()", async () => {
    await using fx = await databases.open()
    const { org } = fx
    await org.whereAmI('core')
    const pool = await fx.registry.getPool('core', org.orgId)
    const watch = watchPools(fx)
    // drizzle() puts the client it was given on $client (not in NodePgDatabase's type).
    const client = Reflect.get(org.drizzle, '$client') as Record<string, unknown>
    expect(pool).not.toBe(client)
    expect(client.connect).toBeUndefined()
    // `await db.$client.end()`, the usual Drizzle shutdown line, is a no-op: the registry owns the pools.
    await (client.end as () => Promise<void>)()
    await org.insert('drizzle', 'after-end')
    watch.stop()
    expect(watch.events).toEqual([])
    expect(pool.ended).toBe(false)
    expect(await org.labels()).toEqual(['after-end'])
  })
})
