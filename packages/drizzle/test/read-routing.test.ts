import type { Registry, Tenant } from '@hyperconn/core'
import { eq, sql } from 'drizzle-orm'
import type { QueryConfig } from 'pg'
import { describe, expect, it } from 'vitest'
import { createDrizzleAdapter } from '../src/index.js'
import { posts, schema, users } from './support/schema.js'

interface Seen {
  text: string
  read: boolean
}

/** A tenant that records what each statement was sent with, and a registry that hands it out. */
function fakeDb() {
  const seen: Seen[] = []
  const tenant = {
    orgId: 'org1',
    service: 'core',
    schema: undefined,
    query(config: string | QueryConfig, _values?: unknown[], options?: { read?: boolean }) {
      const text = typeof config === 'string' ? config : config.text
      seen.push({ text, read: options?.read === true })
      // $count reads rows[0].count; every other statement gets no rows.
      const rows = text.startsWith('select count(*)') ? [{ count: '0' }] : []
      return Promise.resolve({ command: 'SELECT', rowCount: rows.length, rows, fields: [], oid: 0 })
    },
  } as unknown as Tenant
  const registry = { tenant: () => tenant } as unknown as Registry
  const db = createDrizzleAdapter(registry, { service: 'core', schema }).getDb('org1')
  return { db, seen }
}

describe('drizzle read routing', () => {
  it('marks select builders, $count and relational queries { read: true }', async () => {
    const { db, seen } = fakeDb()
    await db.select().from(users).where(eq(users.id, 1))
    await db.selectDistinct().from(users)
    await db.selectDistinctOn([users.name]).from(users)
    await db.$count(users)
    await db.query.users.findMany({ with: { posts: true } })
    await db.query.posts.findFirst()
    expect(seen.map((s) => s.read)).toEqual([true, true, true, true, true, true])
  })

  it('does not mark writes, raw SQL, CTEs or locking selects', async () => {
    const { db, seen } = fakeDb()
    await db.insert(users).values({ name: 'a' })
    await db.update(users).set({ name: 'b' }).where(eq(users.id, 1))
    await db.delete(posts)
    await db.execute(sql`select 1`)
    const cte = db.$with('u').as(db.select().from(users))
    await db.with(cte).select().from(cte)
    await db.select().from(users).for('update')
    await db.select().from(users).for('no key update', { skipLocked: true })
    await db.select().from(users).for('share')
    await db.select({ n: sql<number>`nextval('users_id_seq')` }).from(users)
    expect(seen.map((s) => s.read)).toEqual([false, false, false, false, false, false, false, false, false])
  })
})
