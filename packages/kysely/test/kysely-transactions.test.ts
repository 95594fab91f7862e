import { beforeAll, describe, expect, it } from 'vitest'
import { useTestDatabases } from '@hyperconn/testkit/vitest'
import type { TestDatabase } from '@hyperconn/testkit'
import {
  currentTransactionInfo,
  InvalidOptionsError,
  TransactionClosedError,
  TransactionPropagationError,
  TransactionRolledBackError,
  UnsupportedError,
} from '@hyperconn/core'
import type { Registry } from '@hyperconn/core'
import { CamelCasePlugin, Transaction, sql } from 'kysely'
import type { Kysely } from 'kysely'
import type pg from 'pg'
import { createKyselyAdapter } from '../src/index.js'
import { labels, registryFor, SCHEMA, WHERE_AM_I } from './support.js'
import type { Database, WhereAmI } from './support.js'

const files = useTestDatabases('ksytx', 2, { schema: SCHEMA, reset: 'TRUNCATE items, other.items RESTART IDENTITY' })
let db1: TestDatabase
let db2: TestDatabase
let admin1: pg.Client & AsyncDisposable
let admin2: pg.Client & AsyncDisposable

beforeAll(() => {
  db1 = files.database(0)
  db2 = files.database(1)
  admin1 = files.admin(0)
  admin2 = files.admin(1)
})

function setup(registry: Registry) {
  const { getDb } = createKyselyAdapter<Database>(registry, { service: 'core' })
  return { getDb, db: getDb('org1'), tenant: registry.tenant('org1', 'core') }
}

async function whereAmI(db: Kysely<any>): Promise<WhereAmI> {
  return (await sql<WhereAmI>`${sql.raw(WHERE_AM_I)}`.execute(db)).rows[0] as WhereAmI
}

async function settle(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => 'resolved',
    (error: unknown) => error,
  )
}

describe('db.transaction().execute(fn) runs in a core transaction', () => {
  it('commits what trx, getDb(orgId), derived instances and tenant.query wrote; nothing is visible before', async () => {
    await using registry = registryFor({ org1: db1.url })
    const { getDb, db, tenant } = setup(registry)
    const result = await db.transaction().execute(async (trx) => {
      await trx.insertInto('items').values({ label: 'trx' }).execute()
      // Deeper code calls getDb(orgId) itself: no trx passed down.
      await getDb('org1').insertInto('items').values({ label: 'getDb' }).execute()
      await getDb('org1').withSchema('other').insertInto('items').values({ label: 'other' }).execute()
      await tenant.query("insert into items (label) values ('tenant.query')")
      expect(await labels(admin1)).toEqual([])
      const pool = await registry.getPool('core', 'org1')
      expect((await pool.query('select count(*)::int as n from items')).rows[0]).toEqual({ n: 0 })
      return 'done'
    })
    expect(result).toBe('done')
    expect(await labels(admin1)).toEqual(['trx', 'getDb', 'tenant.query'])
    expect(await labels(admin1, 'other.items')).toEqual(['other'])
    expect(registry.stats().connections.checkedOut).toBe(0)
  })

  it('rolls back everything and rethrows when the callback throws', async () => {
    await using registry = registryFor({ org1: db1.url })
    const { getDb, db, tenant } = setup(registry)
    const boom = new Error('boom')
    const error = await settle(
      db.transaction().execute(async (trx) => {
        await trx.insertInto('items').values({ label: 'trx' }).execute()
        await getDb('org1').insertInto('items').values({ label: 'getDb' }).execute()
        await tenant.query("insert into other.items (label) values ('tenant.query')")
        throw boom
      }),
    )
    expect(error).toBe(boom)
    expect(await labels(admin1)).toEqual([])
    expect(await labels(admin1, 'other.items')).toEqual([])
    expect(registry.stats().connections.checkedOut).toBe(0)
  })

  it('runs every query on one backend and in one transaction, also concurrently', async () => {
    await using registry = registryFor({ org1: db1.url })
    const { getDb, db, tenant } = setup(registry)
    const adminPid = (await admin1.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]?.pid
    const seen = await db.transaction().execute(async (trx) => {
      const sequential = [
        await whereAmI(trx),
        await whereAmI(db),
        await whereAmI(getDb('org1')),
        await whereAmI(trx.withSchema('other')),
        await whereAmI(db.withPlugin(new CamelCasePlugin())),
        (await tenant.query<WhereAmI>(WHERE_AM_I)).rows[0] as WhereAmI,
      ]
      // Issued at once: core serialises them on the transaction's connection.
      const concurrent = await Promise.all(
        Array.from({ length: 20 }, (_, i) => whereAmI(i % 2 === 0 ? trx : getDb('org1').withSchema('other'))),
      )
      await Promise.all(Array.from({ length: 10 }, (_, i) => trx.insertInto('items').values({ label: `c${i}` }).execute()))
      return [...sequential, ...concurrent]
    })
    expect(new Set(seen.map((s) => s.pid)).size).toBe(1)
    expect(new Set(seen.map((s) => s.txid)).size).toBe(1)
    expect(seen[0]?.pid).not.toBe(adminPid)
    expect((await labels(admin1)).length).toBe(10)
  })

  it('applies setIsolationLevel and setAccessMode (checked with SHOW)', async () => {
    await using registry = registryFor({ org1: db1.url })
    const { db } = setup(registry)
    const show = async (k: Kysely<any>) => {
      const iso = await sql<{ transaction_isolation: string }>`show transaction_isolation`.execute(k)
      const ro = await sql<{ transaction_read_only: string }>`show transaction_read_only`.execute(k)
      return [iso.rows[0]?.transaction_isolation, ro.rows[0]?.transaction_read_only]
    }
    expect(
      await db
        .transaction()
        .setIsolationLevel('serializable')
        .setAccessMode('read only')
        .execute((trx) => show(trx)),
    ).toEqual(['serializable', 'on'])
    expect(
      await db
        .transaction()
        .setAccessMode('read write')
        .setIsolationLevel('repeatable read')
        .execute(() => show(db)),
    ).toEqual(['repeatable read', 'off'])
    // PostgreSQL runs READ UNCOMMITTED as READ COMMITTED; the adapter passes it on and core does the same.
    expect(await db.transaction().setIsolationLevel('read uncommitted').execute((trx) => show(trx))).toEqual([
      'read committed',
      'off',
    ])

    const readOnly = await settle(
      db
        .transaction()
        .setAccessMode('read only')
        .execute((trx) => trx.insertInto('items').values({ label: 'ro' }).execute()),
    )
    expect(readOnly).toMatchObject({ code: '25006' })
    expect(await settle(db.transaction().setIsolationLevel('snapshot').execute(() => Promise.resolve()))).toBeInstanceOf(
      InvalidOptionsError,
    )
    expect(await labels(admin1)).toEqual([])
  })
})

describe('derived instances stay in the transaction', () => {
  it('trx.withSchema / withPlugin / withoutPlugins / withTables and db.withSchema run in it and roll back with it', async () => {
    await using registry = registryFor({ org1: db1.url })
    const { getDb, db } = setup(registry)
    const error = await settle(
      db.transaction().execute(async (trx) => {
        const other = trx.withSchema('other')
        expect(other).toBeInstanceOf(Transaction)
        expect(other.isTransaction).toBe(true)
        await other.insertInto('items').values({ label: 'trx.withSchema' }).execute()
        await getDb('org1').withSchema('other').insertInto('items').values({ label: 'db.withSchema' }).execute()
        await trx.withPlugin(new CamelCasePlugin()).insertInto('items').values({ label: 'withPlugin' }).execute()
        await trx.withoutPlugins().insertInto('items').values({ label: 'withoutPlugins' }).execute()
        const extended = trx.withTables<{ items_view: { label: string } }>()
        await sql`create temp view items_view as select label from items`.execute(extended)
        expect(await extended.selectFrom('items_view').select('label').orderBy('label').execute()).toHaveLength(2)
        const txids = new Set([
          (await whereAmI(trx)).txid,
          (await whereAmI(other)).txid,
          (await whereAmI(db.withSchema('other'))).txid,
          (await whereAmI(db.withoutPlugins())).txid,
          (await whereAmI(db.withTables<{ x: { y: number } }>())).txid,
        ])
        expect(txids.size).toBe(1)
        expect(await labels(admin1, 'other.items')).toEqual([])
        throw new Error('roll back')
      }),
    )
    expect(error).toMatchObject({ message: 'roll back' })
    expect(await labels(admin1)).toEqual([])
    expect(await labels(admin1, 'other.items')).toEqual([])
  })

  it('db.withSchema(x).transaction() still routes into core, and its trx keeps the schema', async () => {
    await using registry = registryFor({ org1: db1.url })
    const { getDb, db } = setup(registry)
    const txids = await db
      .withSchema('other')
      .withPlugin(new CamelCasePlugin())
      .transaction()
      .execute(async (trx) => {
        await trx.insertInto('items').values({ label: 'in other' }).execute()
        await getDb('org1').insertInto('items').values({ label: 'in public' }).execute()
        return [(await whereAmI(trx)).txid, (await whereAmI(getDb('org1'))).txid]
      })
    expect(txids[0]).toBe(txids[1])
    expect(await labels(admin1, 'other.items')).toEqual(['in other'])
    expect(await labels(admin1)).toEqual(['in public'])

    await settle(
      db
        .withSchema('other')
        .transaction()
        .execute(async (trx) => {
          await trx.insertInto('items').values({ label: 'rolled back' }).execute()
          throw new Error('no')
        }),
    )
    expect(await labels(admin1, 'other.items')).toEqual(['in other'])
  })
})

describe('nesting', () => {
  it('trx.transaction() is a savepoint: a failed inner block rolls back alone, the outer commits', async () => {
    await using registry = registryFor({ org1: db1.url })
    const { db } = setup(registry)
    await db.transaction().execute(async (trx) => {
      await trx.insertInto('items').values({ label: 'outer' }).execute()
      const outerTx = (await whereAmI(trx)).txid
      const inner = await settle(
        trx.transaction().execute(async (nested) => {
          expect(nested).not.toBe(trx)
          expect(nested.isTransaction).toBe(true)
          await nested.insertInto('items').values({ label: 'inner-failed' }).execute()
          expect((await whereAmI(nested)).txid).toBe(outerTx)
          throw new Error('inner')
        }),
      )
      expect(inner).toMatchObject({ message: 'inner' })
      await trx.transaction().execute(async (nested) => {
        await nested.insertInto('items').values({ label: 'inner-ok' }).execute()
        // A savepoint from a derived trx: the deeper trx keeps its schema.
        await nested
          .withSchema('other')
          .transaction()
          .execute(async (deeper) => {
            await deeper.insertInto('items').values({ label: 'depth-2' }).execute()
          })
        // Both the outer trx and getDb(orgId) run inside the open savepoint, on the same connection.
        await trx.insertInto('items').values({ label: 'outer-in-savepoint' }).execute()
      })
      await trx.insertInto('items').values({ label: 'outer-after' }).execute()
    })
    expect(await labels(admin1)).toEqual(['outer', 'inner-ok', 'outer-in-savepoint', 'outer-after'])
    expect(await labels(admin1, 'other.items')).toEqual(['depth-2'])
  })

  it('db.transaction() inside a transaction joins it (propagation "required"); a swallowed failure there rolls back all', async () => {
    await using registry = registryFor({ org1: db1.url })
    const { getDb, db } = setup(registry)
    const [outer, inner] = await db.transaction().execute(async (trx) => {
      const t = await whereAmI(trx)
      const joined = await getDb('org1')
        .transaction()
        .execute((inner) => whereAmI(inner))
      return [t, joined]
    })
    expect(inner).toEqual(outer)

    const error = await settle(
      db.transaction().execute(async (trx) => {
        await trx.insertInto('items').values({ label: 'outer' }).execute()
        await settle(
          db.transaction().execute(async (joined) => {
            await joined.insertInto('items').values({ label: 'joined' }).execute()
            throw new Error('joined unit failed')
          }),
        )
      }),
    )
    // Core's policy for joined work: it must not commit half-done; use trx.transaction() for a savepoint.
    expect(error).toBeInstanceOf(TransactionRolledBackError)
    expect(await labels(admin1)).toEqual([])
  })

  it('joins a transaction started by tenant.transaction() (or by another adapter)', async () => {
    await using registry = registryFor({ org1: db1.url })
    const { getDb, tenant } = setup(registry)
    const error = await settle(
      tenant.transaction(async () => {
        const outer = (await tenant.query<WhereAmI>(WHERE_AM_I)).rows[0]
        await getDb('org1').insertInto('items').values({ label: 'plain' }).execute()
        const inside = await getDb('org1')
          .transaction()
          .execute(async (trx) => {
            await trx.insertInto('items').values({ label: 'kysely trx' }).execute()
            return whereAmI(trx)
          })
        expect(inside).toEqual(outer)
        throw new Error('outer rolls back')
      }),
    )
    expect(error).toMatchObject({ message: 'outer rolls back' })
    expect(await labels(admin1)).toEqual([])
  })

  it('queries of another org inside the callback run on that org\'s own database, outside the transaction', async () => {
    await using registry = registryFor({ org1: db1.url, org2: db2.url })
    const { getDb, db } = setup(registry)
    await settle(
      db.transaction().execute(async (trx) => {
        await trx.insertInto('items').values({ label: 'org1' }).execute()
        await getDb('org2').insertInto('items').values({ label: 'org2' }).execute()
        expect((await whereAmI(getDb('org2'))).pid).not.toBe((await whereAmI(trx)).pid)
        throw new Error('org1 rolls back')
      }),
    )
    expect(await labels(admin1)).toEqual([])
    expect(await labels(admin2)).toEqual(['org2'])
  })
})

describe('a trx is bound to its transaction', () => {
  it('rejects with TransactionClosedError when used after the transaction ended, without touching a connection', async () => {
    await using registry = registryFor({ org1: db1.url })
    const { db } = setup(registry)
    let captured: Transaction<Database> | undefined
    let late: Promise<unknown> | undefined
    let lateDb: Promise<unknown> | undefined
    let ended!: () => void
    const transactionEnded = new Promise<void>((resolve) => (ended = resolve))
    await db.transaction().execute(async (trx) => {
      captured = trx
      await trx.insertInto('items').values({ label: 'committed' }).execute()
      // Timers capture the transaction's async context; these fire only after it ended.
      late = new Promise((resolve) => {
        setTimeout(() => void transactionEnded.then(() => resolve(settle(trx.insertInto('items').values({ label: 'late trx' }).execute()))), 1)
      })
      lateDb = new Promise((resolve) => {
        setTimeout(() => void transactionEnded.then(() => resolve(settle(db.insertInto('items').values({ label: 'late db' }).execute()))), 1)
      })
    })
    const pool = await registry.getPool('core', 'org1')
    let acquired = 0
    pool.on('acquire', () => acquired++)
    ended()
    expect(await late).toBeInstanceOf(TransactionClosedError)
    expect(await lateDb).toBeInstanceOf(TransactionClosedError)
    const trx = captured as Transaction<Database>
    expect(await settle(trx.selectFrom('items').selectAll().execute())).toBeInstanceOf(TransactionClosedError)
    expect(await settle(trx.withSchema('other').selectFrom('items').selectAll().execute())).toBeInstanceOf(
      TransactionClosedError,
    )
    expect(await settle(trx.transaction().execute(() => Promise.resolve()))).toBeInstanceOf(TransactionClosedError)
    expect(acquired).toBe(0)
    expect(await labels(admin1)).toEqual(['committed'])
  })

  it('a kept trx does not join a later transaction of the same org: TransactionClosedError', async () => {
    await using registry = registryFor({ org1: db1.url })
    const { db } = setup(registry)
    let kept: Transaction<Database> | undefined
    await db.transaction().execute(async (trx) => {
      kept = trx
      await trx.insertInto('items').values({ label: 'first' }).execute()
    })
    const stale = kept as Transaction<Database>
    await db.transaction().execute(async (trx) => {
      expect(await settle(stale.insertInto('items').values({ label: 'stale' }).execute())).toBeInstanceOf(TransactionClosedError)
      expect(await settle(stale.transaction().execute(() => Promise.resolve()))).toBeInstanceOf(TransactionClosedError)
      await trx.insertInto('items').values({ label: 'second' }).execute()
    })
    expect(await labels(admin1)).toEqual(['first', 'second'])
  })

  it('the outer trx used inside requires_new rejects with TransactionPropagationError and writes nothing', async () => {
    await using registry = registryFor({ org1: db1.url })
    const { db, tenant } = setup(registry)
    const error = await settle(
      db.transaction().execute(async (trx) => {
        const outer = await whereAmI(trx)
        await trx.insertInto('items').values({ label: 'outer' }).execute()
        await tenant.transaction(
          async () => {
            expect(await settle(trx.insertInto('items').values({ label: 'outer-trx-in-inner' }).execute())).toBeInstanceOf(
              TransactionPropagationError,
            )
            expect(await settle(trx.withSchema('other').selectFrom('items').selectAll().execute())).toBeInstanceOf(
              TransactionPropagationError,
            )
            // A savepoint from it there would land in the inner transaction: refused as well.
            expect(await settle(trx.transaction().execute(() => Promise.resolve()))).toBeInstanceOf(TransactionPropagationError)
            // getDb(orgId) follows the context: the inner transaction, on another connection.
            expect((await whereAmI(db)).txid).not.toBe(outer.txid)
            await db.insertInto('items').values({ label: 'inner-db' }).execute()
          },
          { propagation: 'requires_new' },
        )
        // The refusal did not fail the outer transaction: back in it, trx works.
        expect(await whereAmI(trx)).toEqual(outer)
        throw new Error('roll back the outer')
      }),
    )
    expect(error).toMatchObject({ message: 'roll back the outer' })
    expect(await labels(admin1)).toEqual(['inner-db'])
    expect(registry.stats().connections.checkedOut).toBe(0)
  })

  it('the outer trx used inside not_supported rejects with TransactionPropagationError instead of autocommitting', async () => {
    await using registry = registryFor({ org1: db1.url })
    const { db, tenant } = setup(registry)
    await db.transaction().execute(async (trx) => {
      const insert = () => trx.insertInto('items').values({ label: 'elsewhere' }).execute()
      expect(await settle(tenant.transaction(insert, { propagation: 'not_supported' }))).toBeInstanceOf(
        TransactionPropagationError,
      )
      // A nested trx.transaction() there would otherwise start an unrelated top-level transaction.
      expect(
        await settle(tenant.transaction(() => trx.transaction().execute(insert), { propagation: 'not_supported' })),
      ).toBeInstanceOf(TransactionPropagationError)
      // getDb(orgId) follows the context instead: here it autocommits.
      await tenant.transaction(() => db.insertInto('items').values({ label: 'autocommit' }).execute(), {
        propagation: 'not_supported',
      })
      expect(await labels(admin1)).toEqual(['autocommit'])
      await trx.insertInto('items').values({ label: 'in trx' }).execute()
    })
    expect(await labels(admin1)).toEqual(['autocommit', 'in trx'])
    expect(registry.stats().connections.checkedOut).toBe(0)
  })

  it('the outer trx used inside its own savepoint callback runs in the savepoint (no deadlock)', async () => {
    await using registry = registryFor({ org1: db1.url })
    const { db, tenant } = setup(registry)
    await db.transaction().execute(async (trx) => {
      await trx.insertInto('items').values({ label: 'outer' }).execute()
      const outer = await whereAmI(trx)
      let kept: Transaction<Database> | undefined
      const failed = await settle(
        trx.transaction().execute(async (nested) => {
          kept = nested
          expect(currentTransactionInfo(tenant)?.depth).toBe(1)
          expect(await whereAmI(trx)).toEqual(outer)
          await trx.insertInto('items').values({ label: 'outer-trx-in-savepoint' }).execute()
          await Promise.all([
            trx.insertInto('items').values({ label: 'concurrent-1' }).execute(),
            nested.insertInto('items').values({ label: 'concurrent-2' }).execute(),
          ])
          throw new Error('undo the savepoint')
        }),
      )
      expect(failed).toMatchObject({ message: 'undo the savepoint' })
      // The savepoint's trx belongs to the same transaction: back in the outer scope it runs there.
      await (kept as Transaction<Database>).insertInto('items').values({ label: 'savepoint-trx-after' }).execute()
      await trx.insertInto('items').values({ label: 'after' }).execute()
    })
    expect(await labels(admin1)).toEqual(['outer', 'savepoint-trx-after', 'after'])
  })

  it('a trx from a joined db.transaction() is bound to the transaction it joined', async () => {
    await using registry = registryFor({ org1: db1.url })
    const { db, tenant } = setup(registry)
    await tenant.transaction(async () => {
      const outer = await whereAmI(db)
      const joined = await db.transaction().execute(async (trx) => {
        expect(await whereAmI(trx)).toEqual(outer)
        return trx
      })
      expect(await whereAmI(joined)).toEqual(outer)
      await joined.insertInto('items').values({ label: 'joined-later' }).execute()
    })
    expect(await labels(admin1)).toEqual(['joined-later'])
  })

  it('binds and checks a trx without leasing a pooled connection, also when it refuses', async () => {
    await using registry = registryFor({ org1: db1.url })
    const { db, tenant } = setup(registry)
    await db.transaction().execute(async (trx) => {
      await trx.insertInto('items').values({ label: 'one' }).execute()
      await trx.transaction().execute(async (nested) => {
        await nested.insertInto('items').values({ label: 'two' }).execute()
        await trx.withSchema('other').insertInto('items').values({ label: 'three' }).execute()
      })
      // Refused outside its transaction before any connection is taken from the pool.
      await tenant.transaction(
        async () => {
          expect(await settle(trx.selectFrom('items').selectAll().execute())).toBeInstanceOf(TransactionPropagationError)
          expect(await settle(trx.transaction().execute(() => Promise.resolve()))).toBeInstanceOf(TransactionPropagationError)
        },
        { propagation: 'not_supported' },
      )
      // Only the transaction's own connection is checked out, and no second one was ever opened.
      expect(registry.stats().tenants.active).toEqual([{ service: 'core', orgId: 'org1', checkedOut: 1, waiting: 0 }])
    })
    expect(registry.stats().pools.list.map((p) => p.total)).toEqual([1])
    expect(await labels(admin1)).toEqual(['one', 'two'])
  })

  it('keeps Kysely\'s Transaction API: isTransaction, no connection(), destroy() or startTransaction()', async () => {
    await using registry = registryFor({ org1: db1.url })
    const { db } = setup(registry)
    await db.transaction().execute(async (trx) => {
      expect(trx).toBeInstanceOf(Transaction)
      expect(trx.isTransaction).toBe(true)
      expect(db.isTransaction).toBe(false)
      expect(() => trx.connection()).toThrow(/not supported/)
      await expect(trx.destroy()).rejects.toThrow(/not supported/)
      expect(() => trx.startTransaction()).toThrow(UnsupportedError)
    })
  })

  it('a statement error swallowed inside the callback still fails the transaction', async () => {
    await using registry = registryFor({ org1: db1.url })
    const { db } = setup(registry)
    await db.insertInto('items').values({ label: 'dup' }).execute()
    const error = await settle(
      db.transaction().execute(async (trx) => {
        await trx.insertInto('items').values({ label: 'kept?' }).execute()
        await settle(trx.insertInto('items').values({ label: 'dup' }).execute())
      }),
    )
    expect(error).toBeInstanceOf(TransactionRolledBackError)
    expect(await labels(admin1)).toEqual(['dup'])
  })
})
