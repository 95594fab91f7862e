import { describe, expect, it } from 'vitest'
import type { Knex } from 'knex'
import {
  currentTransactionInfo,
  InvalidOptionsError,
  TransactionClosedError,
  TransactionPropagationError,
  TransactionRolledBackError,
  UnsupportedError,
} from '@hyperconn/core'
import { createKnexAdapter } from '../src/index.js'
import { committedRows, createFixture } from './support.js'
import type { Fixture } from './support.js'

interface Session {
  pid: number
  txid: string
}

async function session(db: Knex): Promise<Session> {
  const result = await db.raw<{ rows: Session[] }>('SELECT pg_backend_pid() AS pid, txid_current()::text AS txid')
  const row = result.rows[0]
  if (row === undefined) throw new Error('no row')
  return row
}

async function setup(fx: Fixture): Promise<{ db: Knex; getDb: (orgId: string) => Knex }> {
  const { getDb } = createKnexAdapter(fx.registry, { service: 'core' })
  const db = getDb('org1')
  await db.schema.createTable('t', (table) => table.text('name').primary())
  return { db, getDb }
}

describe('@hyperconn/knex transactions', () => {
  it('commits db.transaction(fn) and resolves with its value; a throw rolls back and rejects with the error', async () => {
    await using fx = await createFixture()
    const { db } = await setup(fx)
    const observer = await fx.observe()

    const value = await db.transaction(async (trx) => {
      await trx('t').insert({ name: 'a' })
      await trx('t').insert({ name: 'b' })
      expect(await committedRows(observer, 't')).toEqual([])
      return 'done'
    })
    expect(value).toBe('done')
    expect(await committedRows(observer, 't')).toEqual(['a', 'b'])

    const boom = new Error('boom')
    await expect(
      db.transaction(async (trx) => {
        await trx('t').insert({ name: 'c' })
        throw boom
      }),
    ).rejects.toBe(boom)
    expect(await committedRows(observer, 't')).toEqual(['a', 'b'])
  })

  it('runs every query of the transaction on one connection and transaction, including getDb(org) without trx', async () => {
    await using fx = await createFixture()
    const { db, getDb } = await setup(fx)
    const observer = await fx.observe()
    const tenant = fx.registry.tenant('org1', 'core')
    const warnings: Error[] = []
    const onWarning = (warning: Error) => warnings.push(warning)
    process.on('warning', onWarning)

    await db.transaction(async (trx) => {
      const first = await session(trx)
      await trx('t').insert({ name: 'via-trx' })
      await getDb('org1')('t').insert({ name: 'via-db' })
      await trx.schema.createTable('made_in_tx', (table) => table.integer('n'))
      const seen = [await session(trx), await session(getDb('org1')), await session(db)]
      const viaTenant = await tenant.query<Session>('SELECT pg_backend_pid() AS pid, txid_current()::text AS txid')
      seen.push(viaTenant.rows[0]!)
      for (const s of seen) expect(s).toEqual(first)
      // Concurrent queries inside the transaction are serialised on its one connection.
      const parallel = await Promise.all(Array.from({ length: 10 }, () => session(trx)))
      for (const s of parallel) expect(s).toEqual(first)
      expect(await trx('t').pluck('name')).toEqual(['via-trx', 'via-db'])
      expect(await committedRows(observer, 't')).toEqual([])
      const outside = await observer.query("SELECT to_regclass('made_in_tx') AS r")
      expect(outside.rows[0]).toEqual({ r: null })
    })
    expect(await committedRows(observer, 't')).toEqual(['via-db', 'via-trx'])
    process.off('warning', onWarning)
    // pg deprecates a second query on a busy client; core must have queued them.
    expect(warnings.filter((w) => /already executing a query/.test(w.message))).toEqual([])
    // Outside the callback the instance is back on autocommit connections.
    const a = await session(db)
    const b = await session(db)
    expect(a.txid).not.toBe(b.txid)
  })

  it('joins a transaction started by tenant.transaction, and db.transaction inside it joins too (required)', async () => {
    await using fx = await createFixture()
    const { db } = await setup(fx)
    const tenant = fx.registry.tenant('org1', 'core')
    await tenant.transaction(async () => {
      const outer = await session(db)
      await db('t').insert({ name: 'x' })
      await db.transaction(async (trx) => {
        expect(await session(trx)).toEqual(outer)
        await trx('t').insert({ name: 'y' })
      })
      const row = await tenant.query<{ n: number }>('SELECT count(*)::int AS n FROM t')
      expect(row.rows[0]?.n).toBe(2)
    })
    expect(await committedRows(await fx.observe(), 't')).toEqual(['x', 'y'])
  })

  it('passes propagation from the knex config to core', async () => {
    await using fx = await createFixture()
    const { db } = await setup(fx)
    await expect(db.transaction(async () => undefined, { propagation: 'mandatory' })).rejects.toBeInstanceOf(
      TransactionPropagationError,
    )
    await db.transaction(async (outer) => {
      const own = await session(outer)
      await outer('t').insert({ name: 'outer-rolled-back' })
      await db.transaction(
        async (separate) => {
          expect((await session(separate)).pid).not.toBe(own.pid)
          await separate('t').insert({ name: 'independent' })
        },
        { propagation: 'requires_new' },
      )
      await outer.transaction(async (joined) => expect(await session(joined)).toEqual(own), { propagation: 'required' })
      await outer.rollback()
    })
    expect(await committedRows(await fx.observe(), 't')).toEqual(['independent'])
    // 'supports' with no transaction runs the callback without one: each query autocommits.
    await db.transaction(
      async (trx) => {
        const [a, b] = [await session(trx), await session(trx)]
        expect(a.txid).not.toBe(b.txid)
        expect(trx.executionPromise).toBeInstanceOf(Promise)
      },
      { propagation: 'supports' },
    )
    expect(fx.registry.stats().connections.checkedOut).toBe(0)
  })

  it('keeps sibling async flows apart: concurrent transactions and an autocommit query do not share', async () => {
    await using fx = await createFixture()
    const { db, getDb } = await setup(fx)
    const observer = await fx.observe()
    let release!: () => void
    const bothInside = new Promise<void>((resolve) => {
      release = resolve
    })
    let inside = 0
    const flow = (name: string, fail: boolean) =>
      db.transaction(async (trx) => {
        await trx('t').insert({ name })
        if (++inside === 2) release()
        await bothInside
        const s = await session(getDb('org1'))
        if (fail) throw new Error(name)
        return s
      })
    const [a, b, plain] = await Promise.allSettled([
      flow('kept', false),
      flow('dropped', true),
      bothInside.then(() => session(getDb('org1'))),
    ])
    expect(a.status).toBe('fulfilled')
    expect(b.status).toBe('rejected')
    const kept = (a as PromiseFulfilledResult<Session>).value
    const autocommit = (plain as PromiseFulfilledResult<Session>).value
    expect(autocommit.txid).not.toBe(kept.txid)
    expect(await committedRows(observer, 't')).toEqual(['kept'])
  })

  it('maps trx.transaction to a savepoint: an inner failure is undone, the outer transaction commits', async () => {
    await using fx = await createFixture()
    const { db } = await setup(fx)
    const observer = await fx.observe()

    await db.transaction(async (trx) => {
      const outer = await session(trx)
      await trx('t').insert({ name: 'outer' })
      await expect(
        trx.transaction(async (inner) => {
          expect(inner.isTransaction).toBe(true)
          expect(await session(inner)).toEqual(outer)
          await inner('t').insert({ name: 'inner-undone' })
          // The outer trx used inside the nested callback runs in the savepoint, as on knex's one connection.
          await trx('t').insert({ name: 'outer-handle-in-savepoint' })
          throw new Error('inner')
        }),
      ).rejects.toThrow('inner')
      const kept = await trx.transaction(async (inner) => {
        await inner('t').insert({ name: 'inner-kept' })
        return inner.transaction(async (deepest) => {
          await deepest('t').insert({ name: 'deepest' })
          return 'deep'
        })
      })
      expect(kept).toBe('deep')
      expect(await trx('t').orderBy('name').pluck('name')).toEqual(['deepest', 'inner-kept', 'outer'])
    })
    expect(await committedRows(observer, 't')).toEqual(['deepest', 'inner-kept', 'outer'])
  })

  it('swallowing a failed statement still rolls the transaction back (rejects with TransactionRolledBackError)', async () => {
    await using fx = await createFixture()
    const { db } = await setup(fx)
    await db('t').insert({ name: 'dup' })
    await expect(
      db.transaction(async (trx) => {
        await trx('t').insert({ name: 'lost' })
        await trx('t')
          .insert({ name: 'dup' })
          .catch(() => undefined)
      }),
    ).rejects.toBeInstanceOf(TransactionRolledBackError)
    expect(await committedRows(await fx.observe(), 't')).toEqual(['dup'])
  })

  it('supports trx.commit(value) and trx.rollback(error) like knex, and refuses the trx afterwards', async () => {
    await using fx = await createFixture()
    const { db } = await setup(fx)
    const observer = await fx.observe()

    let late: Promise<unknown> | undefined
    const committed = await db.transaction(async (trx) => {
      await trx('t').insert({ name: 'early-commit' })
      const ended = trx.commit('value')
      expect(trx.isCompleted()).toBe(true)
      late = trx('t').insert({ name: 'after-commit' }).then(
        () => 'inserted',
        (e: unknown) => e,
      )
      await ended
      return 'ignored'
    })
    expect(committed).toBe('value')
    expect(await late).toBeInstanceOf(TransactionClosedError)
    expect(await committedRows(observer, 't')).toEqual(['early-commit'])

    // rollback() without an error resolves with undefined (knex's doNotRejectOnRollback default).
    const rolledBack = await db.transaction(async (trx) => {
      await trx('t').insert({ name: 'rolled-back' })
      await trx.rollback()
      return 'ignored'
    })
    expect(rolledBack).toBeUndefined()
    const reason = new Error('reason')
    await expect(
      db.transaction(async (trx) => {
        await trx('t').insert({ name: 'rolled-back-2' })
        await trx.rollback(reason)
      }),
    ).rejects.toBe(reason)
    await expect(
      db.transaction(
        async (trx) => {
          await trx.rollback()
        },
        { doNotRejectOnRollback: false },
      ),
    ).rejects.toThrow(/non-error/)

    // Nested: rollback() undoes only the savepoint.
    await db.transaction(async (trx) => {
      await trx('t').insert({ name: 'outer-2' })
      await trx.transaction(async (inner) => {
        await inner('t').insert({ name: 'inner-rolled-back' })
        await inner.rollback()
      })
    })
    expect(await committedRows(observer, 't')).toEqual(['early-commit', 'outer-2'])
  })

  it('supports the callback style: .transacting(trx), then(trx.commit).catch(trx.rollback), returning a builder', async () => {
    await using fx = await createFixture()
    const { db } = await setup(fx)
    const result = await db.transaction((trx) => {
      db('t')
        .transacting(trx)
        .insert({ name: 'callback-style' })
        .then(trx.commit)
        .catch(trx.rollback)
    })
    expect(result).toMatchObject({ command: 'INSERT', rowCount: 1 })
    await db.transaction((trx) => trx('t').insert({ name: 'returned-builder' }))
    await expect(
      db.transaction((trx) => {
        db('t')
          .transacting(trx)
          .insert({ name: 'callback-style' })
          .then(trx.commit)
          .catch(trx.rollback)
      }),
    ).rejects.toThrow(/duplicate key/)
    expect(await committedRows(await fx.observe(), 't')).toEqual(['callback-style', 'returned-builder'])
  })

  it('applies isolationLevel (knex spellings) and readOnly', async () => {
    await using fx = await createFixture()
    const { db } = await setup(fx)
    const show = async (trx: Knex.Transaction) => {
      const iso = await trx.raw<{ rows: { transaction_isolation: string }[] }>('SHOW transaction_isolation')
      const ro = await trx.raw<{ rows: { transaction_read_only: string }[] }>('SHOW transaction_read_only')
      return [iso.rows[0]?.transaction_isolation, ro.rows[0]?.transaction_read_only]
    }
    expect(await db.transaction(show, { isolationLevel: 'serializable' })).toEqual(['serializable', 'off'])
    expect(await db.transaction(show, { isolationLevel: 'repeatable read', readOnly: true })).toEqual(['repeatable read', 'on'])
    expect(await db.transaction(show, { isolationLevel: 'read uncommitted' })).toEqual(['read committed', 'off'])
    expect(await db.transaction(show)).toEqual(['read committed', 'off'])
    await expect(
      db.transaction(async (trx) => trx('t').insert({ name: 'no' }), { readOnly: true }),
    ).rejects.toThrow(/read-only transaction/)
    // Joining with a conflicting level is core's decision: it refuses.
    await expect(
      db.transaction(async () => db.transaction(async () => undefined, { isolationLevel: 'read committed' }), {
        isolationLevel: 'serializable',
      }),
    ).rejects.toBeInstanceOf(TransactionPropagationError)
    // 'snapshot' is not a PostgreSQL level (its 'repeatable read' is snapshot isolation): core refuses it.
    await expect(db.transaction(async () => undefined, { isolationLevel: 'snapshot' })).rejects.toBeInstanceOf(
      InvalidOptionsError,
    )
    await expect(
      db.transaction(async () => undefined, { isolationLevel: 'chaos' as never }),
    ).rejects.toBeInstanceOf(InvalidOptionsError)
  })

  it('rejects use of a trx after its transaction ended with TransactionClosedError, without touching a connection', async () => {
    await using fx = await createFixture()
    const { db } = await setup(fx)
    let leaked: Knex.Transaction | undefined
    let timer: Promise<unknown> | undefined
    await db.transaction(async (trx) => {
      leaked = trx
      timer = new Promise((resolve) => setTimeout(resolve, 50)).then(() => db('t').insert({ name: 'from-timer' }))
      timer.catch(() => undefined)
    })
    // knex emits 'query' only once it holds a connection (trx events reach db's listeners too).
    let queries = 0
    db.on('query', () => queries++)
    await expect(timer).rejects.toBeInstanceOf(TransactionClosedError)
    await expect(leaked!('t').insert({ name: 'late' })).rejects.toBeInstanceOf(TransactionClosedError)
    await expect(leaked!.raw('SELECT 1')).rejects.toBeInstanceOf(TransactionClosedError)
    // A new transaction, possibly on the very same pooled connection, does not revive the old trx.
    await db.transaction(async () => {
      await expect(leaked!('t').insert({ name: 'late-2' })).rejects.toBeInstanceOf(TransactionClosedError)
    })
    await expect(leaked!.transaction(async () => undefined)).rejects.toBeInstanceOf(TransactionClosedError)
    expect(queries).toBe(0)
    expect(await committedRows(await fx.observe(), 't')).toEqual([])
  })

  it('work after `await trx.commit()` inside the callback rejects with TransactionClosedError and writes nothing', async () => {
    await using fx = await createFixture()
    const { db, getDb } = await setup(fx)
    const tenant = fx.registry.tenant('org1', 'core')
    await db.transaction(async (trx) => {
      await trx('t').insert({ name: 'before-commit' })
      await trx.commit()
      await expect(trx('t').insert({ name: 'trx' })).rejects.toBeInstanceOf(TransactionClosedError)
      await expect(getDb('org1')('t').insert({ name: 'getdb' })).rejects.toBeInstanceOf(TransactionClosedError)
      await expect(tenant.query("INSERT INTO t VALUES ('query')")).rejects.toBeInstanceOf(TransactionClosedError)
    })
    await db.transaction(async (trx) => {
      await trx('t').insert({ name: 'before-rollback' })
      await trx.rollback()
      await expect(getDb('org1')('t').insert({ name: 'getdb-2' })).rejects.toBeInstanceOf(TransactionClosedError)
    })
    expect(await committedRows(await fx.observe(), 't')).toEqual(['before-commit'])
  })

  it('work issued right after an un-awaited trx.commit(): trx refuses it, getDb(orgId) joins the committing transaction', async () => {
    await using fx = await createFixture()
    const { db, getDb } = await setup(fx)
    let viaTrx: Promise<unknown> | undefined
    let viaGetDb: Promise<unknown> | undefined
    await db.transaction(async (trx) => {
      await trx('t').insert({ name: 'before-commit' })
      void trx.commit()
      viaTrx = trx('t').insert({ name: 'trx' }).then(() => 'ran', (e: unknown) => e)
      viaGetDb = getDb('org1')('t').insert({ name: 'getdb' }).then(() => 'ran', (e: unknown) => e)
    })
    expect(await viaTrx).toBeInstanceOf(TransactionClosedError)
    // Issued before core began the COMMIT: it runs in the transaction and commits with it. Issued once the
    // COMMIT is under way, it would be refused instead; never does it autocommit on its own.
    const outcome = await viaGetDb
    const rows = await committedRows(await fx.observe(), 't')
    if (outcome === 'ran') expect(rows).toEqual(['before-commit', 'getdb'])
    else {
      expect(outcome).toBeInstanceOf(TransactionClosedError)
      expect(rows).toEqual(['before-commit'])
    }
  })

  it('the outer trx used inside requires_new rejects with TransactionPropagationError and writes nothing', async () => {
    await using fx = await createFixture()
    const { db } = await setup(fx)
    const tenant = fx.registry.tenant('org1', 'core')
    let queries = 0
    await expect(
      db.transaction(async (trx) => {
        const own = await session(trx)
        await trx('t').insert({ name: 'outer' })
        db.on('query', () => queries++)
        // Through core's options and through knex's own propagation config.
        await tenant.transaction(
          async () => {
            await expect(trx('t').insert({ name: 'outer-trx-in-core-inner' })).rejects.toBeInstanceOf(TransactionPropagationError)
            await expect(trx.raw('SELECT 1')).rejects.toBeInstanceOf(TransactionPropagationError)
            // A savepoint from it there would land in the inner transaction: refused as well.
            await expect(trx.transaction(async () => undefined)).rejects.toBeInstanceOf(TransactionPropagationError)
          },
          { propagation: 'requires_new' },
        )
        await db.transaction(
          async (inner) => {
            await expect(trx('t').insert({ name: 'outer-trx-in-knex-inner' })).rejects.toBeInstanceOf(TransactionPropagationError)
            expect(queries).toBe(0)
            // The inner transaction's own trx and getDb(orgId) run in the inner transaction.
            const other = await session(inner)
            expect(other.pid).not.toBe(own.pid)
            expect(await session(db)).toEqual(other)
            await inner('t').insert({ name: 'inner' })
          },
          { propagation: 'requires_new' },
        )
        // The refusals did not fail the outer transaction: back in it, trx works.
        expect(await session(trx)).toEqual(own)
        throw new Error('roll back the outer')
      }),
    ).rejects.toThrow('roll back the outer')
    expect(await committedRows(await fx.observe(), 't')).toEqual(['inner'])
    expect(fx.registry.stats().connections.checkedOut).toBe(0)
  })

  it('the outer trx used inside not_supported rejects with TransactionPropagationError instead of autocommitting', async () => {
    await using fx = await createFixture()
    const { db } = await setup(fx)
    const tenant = fx.registry.tenant('org1', 'core')
    const observer = await fx.observe()
    await db.transaction(async (trx) => {
      await tenant.transaction(
        async () => {
          await expect(trx('t').insert({ name: 'autocommit?' })).rejects.toBeInstanceOf(TransactionPropagationError)
          await expect(trx.transaction(async () => undefined)).rejects.toBeInstanceOf(TransactionPropagationError)
          // getDb(orgId) follows the context instead: here it autocommits.
          await db('t').insert({ name: 'db-autocommit' })
          expect(await committedRows(observer, 't')).toEqual(['db-autocommit'])
        },
        { propagation: 'not_supported' },
      )
      await db.transaction(
        async () => {
          await expect(trx('t').insert({ name: 'autocommit-2?' })).rejects.toBeInstanceOf(TransactionPropagationError)
        },
        { propagation: 'not_supported' },
      )
      await trx('t').insert({ name: 'in-trx' })
    })
    expect(await committedRows(observer, 't')).toEqual(['db-autocommit', 'in-trx'])
  })

  it('a trx used from an async context outside its transaction rejects with TransactionPropagationError', async () => {
    await using fx = await createFixture()
    const { db } = await setup(fx)
    // A continuation registered outside any transaction runs in that (empty) async context.
    let release!: (trx: Knex.Transaction) => void
    const gate = new Promise<Knex.Transaction>((resolve) => {
      release = resolve
    })
    const foreign = gate.then(async (trx) => {
      await expect(trx('t').insert({ name: 'foreign-context' })).rejects.toBeInstanceOf(TransactionPropagationError)
      await expect(trx.transaction(async () => undefined)).rejects.toBeInstanceOf(TransactionPropagationError)
    })
    await db.transaction(async (trx) => {
      release(trx)
      await foreign
      await trx('t').insert({ name: 'own' })
    })
    expect(await committedRows(await fx.observe(), 't')).toEqual(['own'])
  })

  it('the outer trx used inside its own savepoint callback runs in the savepoint (no deadlock)', async () => {
    await using fx = await createFixture()
    const { db } = await setup(fx)
    const tenant = fx.registry.tenant('org1', 'core')
    await db.transaction(async (trx) => {
      await trx('t').insert({ name: 'outer' })
      const own = await session(trx)
      let kept: Knex.Transaction | undefined
      await expect(
        trx.transaction(async (inner) => {
          kept = inner
          expect(currentTransactionInfo(tenant)?.depth).toBe(1)
          expect(await session(trx)).toEqual(own)
          await trx('t').insert({ name: 'outer-trx-in-savepoint' })
          await Promise.all([trx('t').insert({ name: 'concurrent-1' }), inner('t').insert({ name: 'concurrent-2' })])
          throw new Error('undo the savepoint')
        }),
      ).rejects.toThrow('undo the savepoint')
      // The savepoint's trx belongs to the same transaction: back in the outer scope it runs there.
      await kept!('t').insert({ name: 'savepoint-trx-after' })
      await trx('t').insert({ name: 'after' })
    })
    expect(await committedRows(await fx.observe(), 't')).toEqual(['after', 'outer', 'savepoint-trx-after'])
  })

  it('a trx from a joined db.transaction is bound to the transaction it joined', async () => {
    await using fx = await createFixture()
    const { db } = await setup(fx)
    const tenant = fx.registry.tenant('org1', 'core')
    await tenant.transaction(async () => {
      const outer = await session(db)
      const joined = await db.transaction(async (trx) => {
        expect(await session(trx)).toEqual(outer)
        return trx
      })
      expect(await session(joined)).toEqual(outer)
      await joined('t').insert({ name: 'joined-later' })
    })
    expect(await committedRows(await fx.observe(), 't')).toEqual(['joined-later'])
  })

  it('refuses the transaction-provider form with a clear error', async () => {
    await using fx = await createFixture()
    const { db } = await setup(fx)
    expect(() => db.transaction()).toThrow(UnsupportedError)
    expect(() => db.transaction({ isolationLevel: 'serializable' })).toThrow(/Pass a callback/)
    expect(() => db.transaction(null, {})).toThrow(UnsupportedError)
    expect(() => db.transactionProvider()).toThrow(UnsupportedError)
    expect(() => db.client.transaction(() => undefined, {}, null)).toThrow(/client.transaction/)
    await db.transaction(async (trx) => {
      expect(() => trx.transaction()).toThrow(UnsupportedError)
      expect(() => trx.transactionProvider()).toThrow(UnsupportedError)
      expect(() => trx.withUserParams({})).toThrow(/Cannot set user params/)
    })
    expect(() => db.transaction(async () => undefined, { connection: {} })).toThrow(UnsupportedError)
    expect(() => db.transaction(async () => undefined, { connection: {} })).toThrow(/Leave out `connection`/)
    expect(fx.registry.stats().connections.checkedOut).toBe(0)
  })

  it('forwards transaction query events to the parent instance and tags them with the transaction id', async () => {
    await using fx = await createFixture()
    const { db } = await setup(fx)
    const seen: { sql: string; __knexTxId?: string }[] = []
    const listener = (q: { sql: string; __knexTxId?: string }) => seen.push(q)
    db.on('query', listener)
    await db.transaction(async (trx) => {
      await trx('t').insert({ name: 'evt' })
      await trx.transaction(async (inner) => inner('t').select())
    })
    db.removeListener('query', listener)
    const insert = seen.find((q) => q.sql.startsWith('insert'))
    const select = seen.find((q) => q.sql.startsWith('select'))
    expect(insert?.__knexTxId).toMatch(/^hyperconn_trx\d+$/)
    expect(select?.__knexTxId).toMatch(/^hyperconn_trx\d+$/)
    expect(select?.__knexTxId).not.toBe(insert?.__knexTxId)
  })

  it('leaves every connection returned to the pool', async () => {
    await using fx = await createFixture()
    const { db } = await setup(fx)
    await db.transaction(async (trx) => {
      await trx('t').insert({ name: 'one' })
      await trx.transaction(async (inner) => inner('t').insert({ name: 'two' })).catch(() => undefined)
    })
    await db.transaction(async () => {
      throw new Error('x')
    }).catch(() => undefined)
    await db('t').select()
    const stats = fx.registry.stats()
    expect(stats.connections.checkedOut).toBe(0)
    expect(stats.connections.idle).toBe(stats.connections.total)
  })
})
