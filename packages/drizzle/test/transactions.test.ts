import {
  createRegistry,
  currentTransactionInfo,
  InvalidOptionsError,
  staticSecrets,
  TransactionClosedError,
  TransactionPropagationError,
  TransactionRolledBackError,
  UnsupportedError,
} from '@hyperconn/core'
import type { Registry } from '@hyperconn/core'
import { testDatabase } from '@hyperconn/testkit/vitest'
import type { TestDatabase } from '@hyperconn/testkit'
import { DrizzleQueryError, eq, sql, TransactionRollbackError } from 'drizzle-orm'
import type { NodePgDatabase } from 'drizzle-orm/node-postgres'
import { PgTransaction } from 'drizzle-orm/pg-core'
import type pg from 'pg'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { createDrizzleAdapter } from '../src/index.js'
import type { DrizzleTransaction } from '../src/index.js'
import { adminClient, CREATE_TABLES, rejection, schema, userNames, users } from './support/schema.js'

type Schema = typeof schema
type Db = NodePgDatabase<Schema> | DrizzleTransaction<Schema>

let database: TestDatabase
let other: TestDatabase
let admin: pg.Client & AsyncDisposable
let otherAdmin: pg.Client & AsyncDisposable
let registry: Registry

beforeAll(async () => {
  database = await testDatabase('drz')
  other = await testDatabase('drz')
  admin = await adminClient(database.url)
  otherAdmin = await adminClient(other.url)
  await admin.query(CREATE_TABLES)
  await otherAdmin.query(CREATE_TABLES)
})

afterAll(async () => {
  await admin?.[Symbol.asyncDispose]()
  await otherAdmin?.[Symbol.asyncDispose]()
  await database?.[Symbol.asyncDispose]()
  await other?.[Symbol.asyncDispose]()
})

beforeEach(async () => {
  await admin.query('TRUNCATE users, posts RESTART IDENTITY CASCADE')
  await otherAdmin.query('TRUNCATE users, posts RESTART IDENTITY CASCADE')
})

function setup() {
  registry = createRegistry({
    project: 'p',
    services: ['core'],
    secrets: staticSecrets({ 'p-org1': { 'core-postgresql': database.url }, 'p-org2': { 'core-postgresql': other.url } }),
  })
  const { getDb } = createDrizzleAdapter(registry, { service: 'core', schema })
  return { registry, getDb, db: getDb('org1'), tenant: registry.tenant('org1', 'core') }
}

interface WhereAmI {
  pid: number
  txid: string
}

async function whereAmI(db: Db): Promise<WhereAmI> {
  const { rows } = await db.execute<{ pid: number; txid: string }>(sql`select pg_backend_pid() as pid, txid_current()::text as txid`)
  return rows[0] as WhereAmI
}

async function show(db: Db, setting: 'transaction_isolation' | 'transaction_read_only'): Promise<string> {
  const { rows } = await db.execute<Record<string, string>>(sql.raw(`SHOW ${setting}`))
  return rows[0]?.[setting] as string
}

function expectNoLeaks(r: Registry): void {
  expect(r.stats().connections.checkedOut).toBe(0)
}

describe('db.transaction', () => {
  it('commits: rows are visible to another connection afterwards, not before', async () => {
    const { registry, db } = setup()
    await using _ = registry
    const result = await db.transaction(async (tx) => {
      await tx.insert(users).values([{ name: 'ada' }, { name: 'bob' }])
      expect(await userNames(admin)).toEqual([])
      return 'done'
    })
    expect(result).toBe('done')
    expect(await userNames(admin)).toEqual(['ada', 'bob'])
    expectNoLeaks(registry)
  })

  it('rolls back when the callback throws, and rejects with that error', async () => {
    const { registry, db } = setup()
    await using _ = registry
    const boom = new Error('boom')
    await expect(
      db.transaction(async (tx) => {
        await tx.insert(users).values({ name: 'ada' })
        throw boom
      }),
    ).rejects.toBe(boom)
    expect(await userNames(admin)).toEqual([])
    expectNoLeaks(registry)
  })

  it('passes a drizzle PgTransaction whose relational queries see its own uncommitted rows', async () => {
    const { registry, db } = setup()
    await using _ = registry
    await db.transaction(async (tx) => {
      expect(tx).toBeInstanceOf(PgTransaction)
      await tx.insert(users).values({ name: 'ada' })
      expect(await tx.query.users.findMany({ columns: { name: true } })).toEqual([{ name: 'ada' }])
      expect(await db.query.users.findFirst({ where: eq(users.name, 'ada'), columns: { name: true } })).toEqual({ name: 'ada' })
    })
  })

  it('runs tx, the tenant-bound db, tenant.query and relational queries on one backend and one transaction', async () => {
    const { registry, db, getDb, tenant } = setup()
    await using _ = registry
    const adminPid = (await admin.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]?.pid
    const seen: WhereAmI[] = []
    await db.transaction(async (tx) => {
      seen.push(await whereAmI(tx))
      await tx.insert(users).values({ name: 'via-tx' })
      seen.push(await whereAmI(db))
      await getDb('org1').insert(users).values({ name: 'via-db' })
      seen.push((await tenant.query<WhereAmI>('select pg_backend_pid() as pid, txid_current()::text as txid')).rows[0] as WhereAmI)
      // concurrent queries inside one transaction are serialised on its connection
      seen.push(...(await Promise.all([whereAmI(tx), whereAmI(db), whereAmI(tx)])))
      await tx.query.users.findMany()
      // another connection sees none of it yet
      expect(await userNames(admin)).toEqual([])
    })
    expect(new Set(seen.map((s) => s.pid)).size).toBe(1)
    expect(new Set(seen.map((s) => s.txid)).size).toBe(1)
    expect(seen[0]?.pid).not.toBe(adminPid)
    expect(await userNames(admin)).toEqual(['via-tx', 'via-db'])

    // outside the transaction, two queries are two transactions
    const [a, b] = [await whereAmI(db), await whereAmI(db)]
    expect(a.txid).not.toBe(b.txid)
    expect(a.txid).not.toBe(seen[0]?.txid)
  })

  it('joins a transaction opened by tenant.transaction (core) and one opened by an outer db.transaction', async () => {
    const { registry, db, tenant } = setup()
    await using _ = registry
    await tenant.transaction(async () => {
      const outer = await whereAmI(db)
      await db.transaction(async (tx) => {
        expect(await whereAmI(tx)).toEqual(outer)
        await db.transaction(async (tx2) => {
          expect(await whereAmI(tx2)).toEqual(outer)
          await tx2.insert(users).values({ name: 'joined' })
        })
      })
      expect(await userNames(admin)).toEqual([])
    })
    expect(await userNames(admin)).toEqual(['joined'])
  })

  it('logs queries of tx and of savepoints with the configured logger', async () => {
    const { registry } = setup()
    await using _ = registry
    const logged: string[] = []
    const { getDb } = createDrizzleAdapter(registry, { service: 'core', schema, logger: { logQuery: (query) => logged.push(query) } })
    await getDb('org1').transaction(async (tx) => {
      await tx.insert(users).values({ name: 'logged' })
      await tx.transaction(async (inner) => {
        await inner.query.users.findMany()
      })
    })
    expect(logged.some((q) => q.startsWith('insert into "users"'))).toBe(true)
    expect(logged.some((q) => q.startsWith('select') && q.includes('"users"'))).toBe(true)
  })

  it('leaves other tenants outside the transaction, on their own pools', async () => {
    const { registry, db, getDb } = setup()
    await using _ = registry
    await expect(
      db.transaction(async (tx) => {
        await tx.insert(users).values({ name: 'org1' })
        await getDb('org2').insert(users).values({ name: 'org2' })
        expect(await userNames(otherAdmin)).toEqual(['org2']) // autocommitted already
        throw new Error('undo org1 only')
      }),
    ).rejects.toThrow('undo org1 only')
    expect(await userNames(admin)).toEqual([])
    expect(await userNames(otherAdmin)).toEqual(['org2'])
  })
})

describe('nested transactions (savepoints)', () => {
  it('undoes a failed tx.transaction while the outer transaction commits', async () => {
    const { registry, db } = setup()
    await using _ = registry
    await db.transaction(async (tx) => {
      await tx.insert(users).values({ name: 'outer-1' })
      const outer = await whereAmI(tx)
      await expect(
        tx.transaction(async (inner) => {
          expect(await whereAmI(inner)).toEqual(outer)
          const { rows } = await inner.execute<{ sp: string }>(sql`select 1 as sp`)
          expect(rows).toHaveLength(1)
          await inner.insert(users).values({ name: 'inner' })
          throw new Error('inner fails')
        }),
      ).rejects.toThrow('inner fails')
      await tx.transaction(async (inner) => {
        await inner.insert(users).values({ name: 'inner-ok' })
      })
      await tx.insert(users).values({ name: 'outer-2' })
    })
    expect(await userNames(admin)).toEqual(['outer-1', 'inner-ok', 'outer-2'])
    expectNoLeaks(registry)
  })

  it('recovers from a failed statement inside a savepoint (unique violation)', async () => {
    const { registry, db } = setup()
    await using _ = registry
    await db.transaction(async (tx) => {
      await tx.insert(users).values({ name: 'ada' })
      const error = await rejection(
        tx.transaction(async (inner) => {
          await inner.insert(users).values({ name: 'ada' })
        }),
      )
      expect(error).toBeInstanceOf(DrizzleQueryError)
      expect((error as { cause?: { code?: string } }).cause?.code).toBe('23505')
      await tx.insert(users).values({ name: 'bob' })
    })
    expect(await userNames(admin)).toEqual(['ada', 'bob'])
  })

  it('nests three levels deep', async () => {
    const { registry, db } = setup()
    await using _ = registry
    await db.transaction(async (tx) => {
      await tx.transaction(async (l1) => {
        await l1.insert(users).values({ name: 'l1' })
        await l1
          .transaction(async (l2) => {
            await l2.insert(users).values({ name: 'l2' })
            await l2.transaction(async (l3) => {
              await l3.insert(users).values({ name: 'l3' })
            })
            throw new Error('undo l2 and l3')
          })
          .catch(() => {})
      })
    })
    expect(await userNames(admin)).toEqual(['l1'])
  })
})

describe('a tx is bound to its own transaction', () => {
  it('keeps concurrent transactions of one tenant apart, each with its own tx', async () => {
    const { registry, db } = setup()
    await using _ = registry
    let undone: WhereAmI | undefined
    const handles: DrizzleTransaction<Schema>[] = []
    const [committed, rolledBack] = await Promise.allSettled([
      db.transaction(async (tx) => {
        handles.push(tx)
        await tx.insert(users).values({ name: 'a' })
        await new Promise((resolve) => setTimeout(resolve, 20))
        return whereAmI(tx)
      }),
      db.transaction(async (tx) => {
        handles.push(tx)
        await tx.insert(users).values({ name: 'b' })
        await new Promise((resolve) => setTimeout(resolve, 10))
        undone = await whereAmI(tx)
        throw new Error('undo b')
      }),
    ])
    expect(committed.status).toBe('fulfilled')
    expect(rolledBack.status).toBe('rejected')
    expect(handles).toHaveLength(2)
    expect(handles[0]).not.toBe(handles[1])
    const kept = (committed as PromiseFulfilledResult<WhereAmI>).value
    expect(undone?.txid).toBeDefined()
    expect(undone?.txid).not.toBe(kept.txid)
    expect(undone?.pid).not.toBe(kept.pid)
    expect(await userNames(admin)).toEqual(['a'])
  })

  it('used inside a savepoint callback, the outer tx runs in the savepoint (no deadlock)', async () => {
    const { registry, db, tenant } = setup()
    await using _ = registry
    await db.transaction(async (tx) => {
      await tx.insert(users).values({ name: 'outer' })
      const outer = await whereAmI(tx)
      await tx
        .transaction(async (inner) => {
          expect(inner).toBe(tx)
          expect(currentTransactionInfo(tenant)?.depth).toBe(1)
          expect(await whereAmI(tx)).toEqual(outer)
          await tx.insert(users).values({ name: 'in-savepoint' })
          // Nested savepoints opened from the outer tx inside the savepoint stack below it.
          await tx.transaction(async () => {
            expect(currentTransactionInfo(tenant)?.depth).toBe(2)
            await tx.insert(users).values({ name: 'in-savepoint-2' })
          })
          throw new Error('undo the savepoint')
        })
        .catch(() => {})
      await tx.insert(users).values({ name: 'after' })
    })
    expect(await userNames(admin)).toEqual(['outer', 'after'])
    expectNoLeaks(registry)
  })

  it('the outer tx used inside requires_new rejects with TransactionPropagationError and writes nothing', async () => {
    const { registry, db, tenant } = setup()
    await using _ = registry
    await expect(
      db.transaction(async (tx) => {
        const outer = await whereAmI(tx)
        await tx.insert(users).values({ name: 'outer' })
        await tenant.transaction(
          async () => {
            const error = await rejection(tx.insert(users).values({ name: 'outer-tx-in-inner' }))
            expect(error).toBeInstanceOf(DrizzleQueryError)
            expect((error as Error).cause).toBeInstanceOf(TransactionPropagationError)
            expect((await rejection(tx.execute(sql`select 1`)) as Error).cause).toBeInstanceOf(TransactionPropagationError)
            // A savepoint from it there would land in the inner transaction: refused as well.
            await expect(tx.transaction(async () => 1)).rejects.toBeInstanceOf(TransactionPropagationError)
            // getDb(orgId) follows the context: the inner transaction, on another connection.
            const inner = await whereAmI(db)
            expect(inner.txid).not.toBe(outer.txid)
            await db.insert(users).values({ name: 'inner-db' })
          },
          { propagation: 'requires_new' },
        )
        // The refusal did not fail the outer transaction: back in it, tx works.
        expect(await whereAmI(tx)).toEqual(outer)
        throw new Error('roll back the outer')
      }),
    ).rejects.toThrow('roll back the outer')
    expect(await userNames(admin)).toEqual(['inner-db'])
    expectNoLeaks(registry)
  })

  it('the outer tx used inside not_supported rejects with TransactionPropagationError instead of autocommitting', async () => {
    const { registry, db, tenant } = setup()
    await using _ = registry
    await db.transaction(async (tx) => {
      await tenant.transaction(
        async () => {
          const error = await rejection(tx.insert(users).values({ name: 'autocommit?' }))
          expect((error as Error).cause).toBeInstanceOf(TransactionPropagationError)
          expect((await rejection(tx.query.users.findMany()) as Error).cause).toBeInstanceOf(TransactionPropagationError)
          await expect(tx.transaction(async () => 1)).rejects.toBeInstanceOf(TransactionPropagationError)
          await db.insert(users).values({ name: 'db-autocommit' })
          expect(await userNames(admin)).toEqual(['db-autocommit'])
        },
        { propagation: 'not_supported' },
      )
      await tx.insert(users).values({ name: 'in-tx' })
    })
    expect(await userNames(admin)).toEqual(['db-autocommit', 'in-tx'])
  })

  it('a tx from a joined db.transaction is bound to the transaction it joined', async () => {
    const { registry, db, tenant } = setup()
    await using _ = registry
    await tenant.transaction(async () => {
      const outer = await whereAmI(db)
      let joined: DrizzleTransaction<Schema> | undefined
      await db.transaction(async (tx) => {
        joined = tx
        expect(await whereAmI(tx)).toEqual(outer)
      })
      // Same transaction, still active here: the joined tx keeps working in it.
      const tx = joined as DrizzleTransaction<Schema>
      expect(await whereAmI(tx)).toEqual(outer)
      await tx.insert(users).values({ name: 'joined-later' })
    })
    expect(await userNames(admin)).toEqual(['joined-later'])
  })

  it('a tx kept from an ended transaction does not join a later transaction of the same org', async () => {
    const { registry, db } = setup()
    await using _ = registry
    let kept: DrizzleTransaction<Schema> | undefined
    await db.transaction(async (tx) => {
      kept = tx
      await tx.insert(users).values({ name: 'first' })
    })
    const stale = kept as DrizzleTransaction<Schema>
    await db.transaction(async (tx) => {
      expect(tx).not.toBe(stale)
      const error = await rejection(stale.insert(users).values({ name: 'stale' }))
      expect((error as Error).cause).toBeInstanceOf(TransactionClosedError)
      await expect(stale.transaction(async () => 1)).rejects.toBeInstanceOf(TransactionClosedError)
      await tx.insert(users).values({ name: 'second' })
    })
    expect(await userNames(admin)).toEqual(['first', 'second'])
  })
})

describe('tx.rollback()', () => {
  it('rolls the transaction back and rejects with drizzle\'s TransactionRollbackError', async () => {
    const { registry, db } = setup()
    await using _ = registry
    await expect(
      db.transaction(async (tx) => {
        await tx.insert(users).values({ name: 'ada' })
        tx.rollback()
      }),
    ).rejects.toBeInstanceOf(TransactionRollbackError)
    expect(await userNames(admin)).toEqual([])
    expectNoLeaks(registry)
  })

  it('inside tx.transaction rolls back only the savepoint', async () => {
    const { registry, db } = setup()
    await using _ = registry
    await db.transaction(async (tx) => {
      await tx.insert(users).values({ name: 'outer' })
      await expect(
        tx.transaction(async (inner) => {
          await inner.insert(users).values({ name: 'inner' })
          inner.rollback()
        }),
      ).rejects.toBeInstanceOf(TransactionRollbackError)
    })
    expect(await userNames(admin)).toEqual(['outer'])
  })

  it('in a db.transaction that joined an outer one rolls back the whole unit of work', async () => {
    const { registry, db } = setup()
    await using _ = registry
    const outcome = await rejection(
      db.transaction(async () => {
        await db.insert(users).values({ name: 'outer' })
        await db
          .transaction(async (tx) => {
            tx.rollback()
          })
          .catch((error: unknown) => {
            expect(error).toBeInstanceOf(TransactionRollbackError)
          })
      }),
    )
    // a joined unit of work that failed is never committed half-done (core's rule)
    expect(outcome).toBeInstanceOf(TransactionRolledBackError)
    expect(await userNames(admin)).toEqual([])
  })
})

describe('transaction config', () => {
  it('applies isolationLevel and accessMode', async () => {
    const { registry, db } = setup()
    await using _ = registry
    const readOnly = await rejection(
      db.transaction(
        async (tx) => {
          expect(await show(tx, 'transaction_isolation')).toBe('serializable')
          expect(await show(tx, 'transaction_read_only')).toBe('on')
          const error = await rejection(tx.insert(users).values({ name: 'nope' }))
          expect((error as { cause?: { code?: string } }).cause?.code).toBe('25006') // read_only_sql_transaction
        },
        { isolationLevel: 'serializable', accessMode: 'read only' },
      ),
    )
    // the failed insert aborted the transaction, so core reports a rollback instead of committing
    expect(readOnly).toBeInstanceOf(TransactionRolledBackError)

    await db.transaction(
      async (tx) => {
        expect(await show(tx, 'transaction_isolation')).toBe('repeatable read')
        expect(await show(tx, 'transaction_read_only')).toBe('off')
        await tx.insert(users).values({ name: 'rw' })
      },
      { isolationLevel: 'repeatable read', accessMode: 'read write' },
    )
    expect(await userNames(admin)).toEqual(['rw'])

    const isolation = await db.transaction(async (tx) => show(tx, 'transaction_isolation'), {
      isolationLevel: 'read uncommitted',
    })
    expect(isolation).toBe('read committed')
    expectNoLeaks(registry)
  })

  it('supports tx.setTransaction as the first statement', async () => {
    const { registry, db } = setup()
    await using _ = registry
    await db.transaction(async (tx) => {
      await tx.setTransaction({ isolationLevel: 'serializable', accessMode: 'read only' })
      expect(await show(tx, 'transaction_isolation')).toBe('serializable')
      expect(await show(tx, 'transaction_read_only')).toBe('on')
    })
  })

  it('joins an active transaction only with compatible config', async () => {
    const { registry, db } = setup()
    await using _ = registry
    const joined = await db.transaction(
      async () => {
        await expect(db.transaction(async () => 1, { isolationLevel: 'serializable' })).rejects.toBeInstanceOf(
          TransactionPropagationError,
        )
        await expect(db.transaction(async () => 1, { accessMode: 'read write' })).rejects.toBeInstanceOf(
          TransactionPropagationError,
        )
        // no config: joins whatever is active, also a read-only transaction
        return db.transaction(async (tx) => show(tx, 'transaction_read_only'))
      },
      { isolationLevel: 'read committed', accessMode: 'read only' },
    )
    expect(joined).toBe('on')
  })

  it('rejects deferrable: true (UnsupportedError) and unknown options without touching a connection', async () => {
    const { registry, db } = setup()
    await using _ = registry
    await expect(db.transaction(async () => 1, { deferrable: true })).rejects.toBeInstanceOf(UnsupportedError)
    await expect(db.transaction(async () => 1, { accessMode: 'readonly' as 'read only' })).rejects.toBeInstanceOf(
      InvalidOptionsError,
    )
    await expect(db.transaction(async () => 1, { isolationLevel: 'snapshot' as 'serializable' })).rejects.toBeInstanceOf(
      InvalidOptionsError,
    )
    expect(registry.stats().pools.count).toBe(0)
    // deferrable: false is PostgreSQL's default
    expect(await db.transaction(async () => 2, { deferrable: false })).toBe(2)
  })
})

describe('use after the transaction ended', () => {
  it('rejects queries from a timer scheduled inside, through tx and through db, and runs nothing', async () => {
    const { registry, db } = setup()
    await using _ = registry
    let late: Promise<unknown[]> | undefined
    let fired!: () => void
    const timerFired = new Promise<void>((resolve) => (fired = resolve))
    await db.transaction(async (tx) => {
      setTimeout(() => {
        late = Promise.all([
          rejection(tx.insert(users).values({ name: 'late-tx' })),
          rejection(db.insert(users).values({ name: 'late-db' })),
          rejection(tx.query.users.findMany()),
          rejection(tx.transaction(async () => 1)),
          rejection(db.transaction(async () => 1)),
        ])
        fired()
      }, 20)
      await tx.insert(users).values({ name: 'in-time' })
    })
    await timerFired
    const errors = (await late) ?? []
    expect(errors).toHaveLength(5)
    for (const error of errors.slice(0, 3)) {
      expect(error).toBeInstanceOf(DrizzleQueryError)
      expect((error as Error).cause).toBeInstanceOf(TransactionClosedError)
    }
    expect(errors[3]).toBeInstanceOf(TransactionClosedError)
    expect(errors[4]).toBeInstanceOf(TransactionClosedError)
    expect(await userNames(admin)).toEqual(['in-time'])
    expectNoLeaks(registry)
  })

  it('rejects a kept tx used after its transaction ended with TransactionClosedError, instead of autocommitting', async () => {
    const { registry, db } = setup()
    await using _ = registry
    let stashed: DrizzleTransaction<Schema> | undefined
    await db.transaction(async (tx) => {
      stashed = tx
    })
    const tx = stashed as DrizzleTransaction<Schema>
    const error = await rejection(tx.insert(users).values({ name: 'stashed' }))
    expect((error as Error).cause).toBeInstanceOf(TransactionClosedError)
    await expect(tx.transaction(async () => 1)).rejects.toBeInstanceOf(TransactionClosedError)
    expect(await userNames(admin)).toEqual([])
    // the db itself autocommits as usual
    await db.insert(users).values({ name: 'db' })
    expect(await userNames(admin)).toEqual(['db'])
  })
})
