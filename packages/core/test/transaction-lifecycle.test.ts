import { once } from 'node:events'
import { AsyncResource } from 'node:async_hooks'
import pg from 'pg'
import { testDatabase } from '@hyperconn/testkit/vitest'
import { concurrentQueryWarning } from '@hyperconn/testkit'
import type { TestDatabase } from '@hyperconn/testkit'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { TransactionClosedError, TransactionRolledBackError } from '../src/hyperconn-error.js'
import { currentTransactionInfo, isInTransaction } from '../src/transactions/transaction-context.js'
import type { Tenant, TenantKey } from '../src/tenant-types.js'
import { deferred, poolCounts, TestPoolAccess, WHERE_AM_I } from './support/pool-access.js'
import type { TestPoolAccessOptions, WhereAmI } from './support/pool-access.js'

let db: TestDatabase
let admin: pg.Client
let nextOrg = 0

beforeAll(async () => {
  db = await testDatabase('txlife')
  admin = new pg.Client({ connectionString: db.url })
  admin.on('error', () => {})
  await admin.connect()
  await admin.query(`
    CREATE TABLE items (id serial PRIMARY KEY, org text NOT NULL, label text NOT NULL UNIQUE);
    CREATE TABLE parent (id int PRIMARY KEY);
    CREATE TABLE child (parent_id int REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);
  `)
})

afterAll(async () => {
  await admin?.end()
  await db?.[Symbol.asyncDispose]()
})

/** A fresh org id per test, so rows never collide between tests. */
function setup(options: TestPoolAccessOptions = {}, max = 4) {
  const orgId = `org${++nextOrg}`
  const key: TenantKey = { service: 'core', orgId }
  const access = new TestPoolAccess(() => ({ connectionString: db.url, max }), options)
  const tenant = access.tenant(orgId)
  const insert = (label: string) =>
    tenant.query<{ id: number }>('INSERT INTO items (org, label) VALUES ($1, $2) RETURNING id', [orgId, `${orgId}:${label}`])
  const labels = async (): Promise<string[]> => {
    const { rows } = await admin.query<{ label: string }>('SELECT label FROM items WHERE org = $1 ORDER BY id', [orgId])
    return rows.map((r) => r.label.slice(orgId.length + 1))
  }
  return { access, tenant, key, insert, labels, pool: access.poolFor(key) }
}

async function whereAmI(tenant: Pick<Tenant, 'query'>): Promise<WhereAmI> {
  const { rows } = await tenant.query<WhereAmI>(WHERE_AM_I)
  return rows[0] as WhereAmI
}

describe('one transaction, one connection', () => {
  it('runs every query inside on the same backend and transaction; others see nothing before COMMIT', async () => {
    const { access, tenant, insert, labels, pool } = setup()
    await using _ = access
    const seen: WhereAmI[] = []
    const adminPid = (await admin.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid
    await tenant.transaction(async () => {
      seen.push(await whereAmI(tenant))
      await insert('a')
      seen.push(await whereAmI(tenant))
      const connection = await tenant.acquire()
      expect(connection.inTransaction).toBe(true)
      seen.push((await connection.query<WhereAmI>(WHERE_AM_I)).rows[0] as WhereAmI)
      expect(connection.processID).toBe(seen[0]?.pid)
      connection.release()
      await insert('b')
      seen.push(await whereAmI(tenant))
      // Another connection does not see the uncommitted rows.
      expect(await labels()).toEqual([])
      expect((await pool.query('SELECT count(*)::int AS n FROM items WHERE label LIKE $1', ['%:a'])).rows[0]?.n).toBe(0)
    })
    expect(new Set(seen.map((s) => s.pid)).size).toBe(1)
    expect(new Set(seen.map((s) => s.txid)).size).toBe(1)
    expect(seen[0]?.pid).not.toBe(adminPid)
    expect(await labels()).toEqual(['a', 'b'])
    expect(access.openLeases).toBe(0)
    expect(pool.idleCount).toBe(pool.totalCount)
  })

  it('rolls back when the callback throws and rejects with that error', async () => {
    const { access, tenant, insert, labels, pool } = setup()
    await using _ = access
    const boom = new Error('boom')
    await expect(
      tenant.transaction(async () => {
        await insert('x')
        throw boom
      }),
    ).rejects.toBe(boom)
    expect(await labels()).toEqual([])
    expect(access.openLeases).toBe(0)
    expect(access.releases).toEqual([undefined])
    expect(pool.idleCount).toBe(pool.totalCount)
  })

  it('passes QueryConfig objects through untouched (rowMode, types) inside and outside a transaction', async () => {
    const { access, tenant } = setup()
    await using _ = access
    const config = () => ({
      text: 'SELECT 1 AS a, 42::int4 AS b',
      rowMode: 'array' as const,
      types: { getTypeParser: () => (value: string) => `parsed:${value}` },
    })
    expect((await tenant.query(config())).rows).toEqual([['parsed:1', 'parsed:42']])
    await tenant.transaction(async () => {
      expect((await tenant.query(config())).rows).toEqual([['parsed:1', 'parsed:42']])
      const connection = await tenant.acquire()
      expect((await connection.query(config())).rows).toEqual([['parsed:1', 'parsed:42']])
      connection.release()
    })
  })

  it('sends every error through the lease redaction', async () => {
    const redacted = new Error('redacted')
    const { access, tenant } = setup({ redact: () => redacted })
    await using _ = access
    await expect(tenant.query('SELECT 1/0')).rejects.toBe(redacted)
    const outer = tenant.transaction(async () => {
      await expect(tenant.query('SELECT 1/0')).rejects.toBe(redacted)
    })
    await expect(outer).rejects.toMatchObject({ cause: redacted })
    const connection = await tenant.acquire()
    await expect(connection.query('SELECT 1/0')).rejects.toBe(redacted)
    connection.release()
    expect(access.redacted).toHaveLength(3)
    expect(access.redacted.every((e) => (e as { code?: string }).code === '22012')).toBe(true)
  })
})

describe('nested scopes (savepoints)', () => {
  it('three levels deep: an inner failure undoes only the inner scope', async () => {
    const { access, tenant, key, insert, labels } = setup()
    await using _ = access
    const nested = { propagation: 'nested' } as const
    await tenant.transaction(async () => {
      await insert('L0')
      expect(currentTransactionInfo(key)).toMatchObject({ depth: 0, savepoint: undefined, status: 'active' })
      await tenant.transaction(async () => {
        await insert('L1')
        expect(currentTransactionInfo(key)).toMatchObject({ depth: 1, savepoint: 'hc_sp_1' })
        await tenant.transaction(async () => {
          await insert('L2')
          expect(currentTransactionInfo(key)).toMatchObject({ depth: 2, savepoint: 'hc_sp_2' })
          await expect(
            tenant.transaction(async () => {
              expect(currentTransactionInfo(key)).toMatchObject({ depth: 3, savepoint: 'hc_sp_3' })
              await insert('L3')
              throw new Error('inner')
            }, nested),
          ).rejects.toThrow('inner')
          // A failed SQL statement swallowed inside a savepoint: only that savepoint is rolled back.
          await expect(
            tenant.transaction(async () => {
              await insert('L3b')
              await tenant.query('SELECT 1/0').catch(() => undefined)
            }, nested),
          ).rejects.toBeInstanceOf(TransactionRolledBackError)
          await insert('L2b')
        }, nested)
        await insert('L1b')
      }, nested)
      expect(currentTransactionInfo(key)?.depth).toBe(0)
    })
    expect(await labels()).toEqual(['L0', 'L1', 'L2', 'L2b', 'L1b'])
  })

  it('releases savepoints on success (ROLLBACK TO a finished savepoint fails)', async () => {
    const { access, tenant, insert, labels } = setup()
    await using _ = access
    const outer = tenant.transaction(async () => {
      await tenant.transaction(() => insert('inner'), { propagation: 'nested' })
      await expect(tenant.query('ROLLBACK TO SAVEPOINT hc_sp_1')).rejects.toMatchObject({ code: '3B001' })
    })
    // ...and that swallowed error makes the outer transaction roll back instead of committing.
    await expect(outer).rejects.toBeInstanceOf(TransactionRolledBackError)
    expect(await labels()).toEqual([])
  })

  it('holds the parent queue: a parent-frame query waits and does not run inside the savepoint', async () => {
    const { access, tenant, insert, labels } = setup()
    await using _ = access
    await tenant.transaction(async () => {
      const entered = deferred()
      const gate = deferred()
      let innerId = 0
      const nested = tenant.transaction(
        async () => {
          entered.resolve()
          await gate.promise
          innerId = (await insert('inner')).rows[0]?.id ?? 0
          throw new Error('undo inner')
        },
        { propagation: 'nested' },
      )
      await entered.promise
      const sibling = insert('sibling') // parent frame, while the savepoint is open
      gate.resolve()
      await expect(nested).rejects.toThrow('undo inner')
      const siblingId = (await sibling).rows[0]?.id ?? 0
      expect(siblingId).toBeGreaterThan(innerId)
    })
    expect(await labels()).toEqual(['sibling'])
  })
})

describe('failures inside joined scopes', () => {
  it('a swallowed SQL error in a joined scope makes the outer transaction reject', async () => {
    const { access, tenant, insert, labels, pool } = setup()
    await using _ = access
    const outer = tenant.transaction(async () => {
      await insert('outer')
      await tenant
        .transaction(async () => {
          await insert('outer') // unique violation
        })
        .catch(() => undefined)
    })
    const error = await outer.then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(TransactionRolledBackError)
    expect((error as Error).cause).toMatchObject({ code: '23505' })
    expect(await labels()).toEqual([])
    expect(pool.idleCount).toBe(pool.totalCount)
  })

  it('a joined callback that throws (no SQL error) also prevents the commit', async () => {
    const { access, tenant, insert, labels } = setup()
    await using _ = access
    const outer = tenant.transaction(async () => {
      await insert('a')
      await tenant
        .transaction(async () => {
          await insert('b')
          throw new Error('validation failed')
        })
        .catch(() => undefined)
    })
    await expect(outer).rejects.toMatchObject({ name: 'TransactionRolledBackError', cause: { message: 'validation failed' } })
    expect(await labels()).toEqual([])
  })

  it('a swallowed error in the transaction itself makes it reject', async () => {
    const { access, tenant, insert, labels } = setup()
    await using _ = access
    await expect(
      tenant.transaction(async () => {
        await insert('a')
        await tenant.query('SELECT 1/0').catch(() => undefined)
      }),
    ).rejects.toBeInstanceOf(TransactionRolledBackError)
    expect(await labels()).toEqual([])
  })

  it('checks the COMMIT result: PostgreSQL answering ROLLBACK rejects even if core saw no error', async () => {
    const { access, tenant, insert, labels } = setup()
    await using _ = access
    await expect(
      tenant.transaction(async () => {
        await insert('a')
        // A failure core never saw (as if a driver had swallowed it): straight on the leased client.
        await access.clients.at(-1)?.query('SELECT 1/0').catch(() => undefined)
      }),
    ).rejects.toBeInstanceOf(TransactionRolledBackError)
    expect(await labels()).toEqual([])
  })
})

describe('queries issued concurrently inside one transaction', () => {
  it('runs Promise.all of 50 queries in order on one connection without a DeprecationWarning', async () => {
    const { access, tenant, insert, labels } = setup()
    await using _ = access
    const warnings: Error[] = []
    const onWarning = (warning: Error) => warnings.push(warning)
    process.on('warning', onWarning)
    try {
      await tenant.transaction(async () => {
        const connection = await tenant.acquire()
        const results = await Promise.all(
          Array.from({ length: 50 }, (_, i) =>
            i % 5 === 4 ? connection.query<WhereAmI>(WHERE_AM_I) : i % 5 === 3 ? tenant.query<WhereAmI>(WHERE_AM_I) : insert(`q${i}`),
          ),
        )
        connection.release()
        const where = results.filter((r) => r.command === 'SELECT').map((r) => r.rows[0] as WhereAmI)
        expect(new Set(where.map((w) => w.txid)).size).toBe(1)
        const ids = results.filter((r) => r.command === 'INSERT').map((r) => (r.rows[0] as { id: number }).id)
        expect(ids).toEqual([...ids].sort((a, b) => a - b))
      })
      // Let a warning emitted on the last tick surface before checking.
      await new Promise<void>((resolve) => setImmediate(resolve))
    } finally {
      process.off('warning', onWarning)
    }
    expect(warnings.filter((w) => w.name === 'DeprecationWarning')).toEqual([])
    const expected = Array.from({ length: 50 }, (_, i) => i)
      .filter((i) => i % 5 < 3)
      .map((i) => `q${i}`)
    expect(await labels()).toEqual(expected)
  })

  it('control: the same Promise.all straight on one pg client does warn (the check above is live)', async () => {
    const warning = await concurrentQueryWarning(db.url)
    expect(warning.name).toBe('DeprecationWarning')
  })
})

describe('use after the end', () => {
  it('rejects with TransactionClosedError from un-awaited promises, timers, bound handlers and kept handles', async () => {
    const { access, tenant, key } = setup()
    await using _ = access
    const ended = deferred()
    let unawaited!: Promise<unknown>
    const fromTimer = deferred<{ late: Promise<unknown> }>()
    let boundHandler!: () => Promise<unknown>
    let kept!: Awaited<ReturnType<typeof tenant.acquire>>
    let staleJoin!: () => Promise<unknown>
    await tenant.transaction(async () => {
      await tenant.query('SELECT 1')
      unawaited = ended.promise.then(() => tenant.query('SELECT 2'))
      setTimeout(() => fromTimer.resolve({ late: ended.promise.then(() => tenant.query('SELECT 3')) }), 0)
      boundHandler = AsyncResource.bind(() => tenant.query('SELECT 4'))
      staleJoin = AsyncResource.bind(() => tenant.transaction(async () => 'joined'))
      kept = await tenant.acquire()
    })
    expect(isInTransaction(key)).toBe(false)
    const client = access.clients[0] as pg.PoolClient
    const spy = vi.spyOn(client, 'query')
    ended.resolve()
    await expect(unawaited).rejects.toBeInstanceOf(TransactionClosedError)
    await expect((await fromTimer.promise).late).rejects.toBeInstanceOf(TransactionClosedError)
    await expect(boundHandler()).rejects.toBeInstanceOf(TransactionClosedError)
    await expect(kept.query('SELECT 5')).rejects.toBeInstanceOf(TransactionClosedError)
    await expect(staleJoin()).rejects.toBeInstanceOf(TransactionClosedError)
    // The released connection was never touched.
    expect(spy).not.toHaveBeenCalled()
    spy.mockRestore()
  })

  it('refuses new work once the callback returned, but runs what was queued before COMMIT', async () => {
    const { access, tenant, insert, labels } = setup()
    await using _ = access
    let queued!: Promise<unknown>
    await tenant.transaction(async () => {
      await insert('a')
      queued = insert('queued-before-return') // not awaited: queued before COMMIT, so it is part of the transaction
    })
    await queued
    expect(await labels()).toEqual(['a', 'queued-before-return'])
  })

  it('an un-awaited nested scope that outlives its parent is cut off and rolled back to its savepoint', async () => {
    const { access, tenant, insert, labels } = setup()
    await using _ = access
    const entered = deferred()
    const gate = deferred()
    let child!: Promise<unknown>
    const outer = tenant.transaction(async () => {
      await insert('outer')
      child = tenant.transaction(
        async () => {
          await insert('child-early')
          entered.resolve()
          await gate.promise
          await insert('child-late') // after the parent returned: refused
        },
        { propagation: 'nested' },
      )
      await entered.promise
    })
    // The outer callback returns right after `entered`; its COMMIT then waits for the child's savepoint.
    // setImmediate runs after every pending microtask, i.e. after the runner marked the transaction committing.
    await entered.promise
    await new Promise<void>((resolve) => setImmediate(resolve))
    gate.resolve()
    await expect(child).rejects.toBeInstanceOf(TransactionClosedError)
    await outer
    expect(await labels()).toEqual(['outer'])
  })

  it('a grandchild savepoint that outlives its savepoint parent is cut off too', async () => {
    const { access, tenant, insert, labels } = setup()
    await using _ = access
    const entered = deferred()
    const gate = deferred()
    let grandchild!: Promise<unknown>
    const nested = { propagation: 'nested' } as const
    const outer = tenant.transaction(async () => {
      await insert('outer')
      await tenant.transaction(async () => {
        await insert('child')
        grandchild = tenant.transaction(async () => {
          await insert('grandchild-early')
          entered.resolve()
          await gate.promise
          await insert('grandchild-late')
        }, nested)
        await entered.promise
      }, nested)
      await insert('outer-after')
    })
    await entered.promise
    await new Promise<void>((resolve) => setImmediate(resolve))
    gate.resolve()
    await expect(grandchild).rejects.toBeInstanceOf(TransactionClosedError)
    await outer
    expect(await labels()).toEqual(['outer', 'child', 'outer-after'])
  })

  it('acquire() outside a transaction leases a pooled client: release returns it, release(err) destroys it', async () => {
    const { access, tenant, pool } = setup()
    await using _ = access
    const first = await tenant.acquire()
    expect(first.inTransaction).toBe(false)
    const pid = (await first.query<WhereAmI>(WHERE_AM_I)).rows[0]?.pid
    // Decided at acquire time: used inside a transaction, it still autocommits on its own client.
    await tenant.transaction(async () => {
      const inside = await whereAmI(tenant)
      const viaFirst = (await first.query<WhereAmI>(WHERE_AM_I)).rows[0]
      expect(viaFirst?.pid).toBe(pid)
      expect(viaFirst?.pid).not.toBe(inside.pid)
    })
    first.release()
    first.release() // idempotent
    await expect(first.query('SELECT 1')).rejects.toBeInstanceOf(TransactionClosedError)
    expect(poolCounts(pool)).toEqual({ total: 2, idle: 2, waiting: 0 })
    const second = await tenant.acquire()
    second.release(new Error('poisoned'))
    expect(poolCounts(pool)).toEqual({ total: 1, idle: 1, waiting: 0 })
  })
})

describe('broken connections', () => {
  it('backend killed mid-transaction: rejects with the connection error, process lives, client destroyed', async () => {
    const { access, tenant, pool } = setup()
    await using _ = access
    expect(poolCounts(pool)).toEqual({ total: 0, idle: 0, waiting: 0 })
    const error = await tenant
      .transaction(async () => {
        const { pid } = await whereAmI(tenant)
        await admin.query('SELECT pg_terminate_backend($1)', [pid])
        await tenant.query('SELECT 1')
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      )
    expect(error).toBeInstanceOf(Error)
    expect(String((error as Error).message) + String((error as { code?: string }).code)).toMatch(/terminat|57P01/i)
    expect(access.openLeases).toBe(0)
    expect(access.releases).toHaveLength(1)
    expect(access.releases[0]).toBeInstanceOf(Error)
    expect(poolCounts(pool)).toEqual({ total: 0, idle: 0, waiting: 0 })
    // The pool still works.
    expect((await tenant.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }])
  })

  it('backend killed while idle in the transaction and the callback returns: COMMIT is not sent, the transaction rejects', async () => {
    const { access, tenant, key, pool } = setup()
    await using _ = access
    const error = await tenant
      .transaction(async () => {
        const { pid } = await whereAmI(tenant)
        const client = access.clients[0] as pg.PoolClient
        const died = once(client, 'error')
        await admin.query('SELECT pg_terminate_backend($1)', [pid])
        await died
        expect(currentTransactionInfo(key)?.status).toBe('broken')
        // A swallowed query error does not help: the transaction is broken.
        await tenant.query('SELECT 1').catch(() => undefined)
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      )
    expect(String((error as Error).message) + String((error as { code?: string }).code)).toMatch(/terminat|57P01/i)
    expect(access.releases[0]).toBeInstanceOf(Error)
    expect(poolCounts(pool)).toEqual({ total: 0, idle: 0, waiting: 0 })
  })

  it('a failed BEGIN destroys the client and rethrows; the callback never runs', async () => {
    const { access, tenant, pool } = setup({
      onAcquire: async (client) => {
        const died = once(client, 'error')
        await admin.query('SELECT pg_terminate_backend($1)', [(client as unknown as { processID: number }).processID])
        await died
      },
    })
    await using _ = access
    const fn = vi.fn(async () => 'never')
    await expect(tenant.transaction(fn)).rejects.toBeInstanceOf(Error)
    expect(fn).not.toHaveBeenCalled()
    expect(access.releases).toHaveLength(1)
    expect(access.releases[0]).toBeInstanceOf(Error)
    expect(poolCounts(pool)).toEqual({ total: 0, idle: 0, waiting: 0 })
  })

  it('a failed COMMIT (deferred constraint) rejects with its error and destroys the client', async () => {
    const { access, tenant, pool } = setup()
    await using _ = access
    await expect(
      tenant.transaction(async () => {
        await tenant.query('INSERT INTO child (parent_id) VALUES (-1)')
      }),
    ).rejects.toMatchObject({ code: '23503' })
    expect(access.releases[0]).toBeInstanceOf(Error)
    expect(poolCounts(pool)).toEqual({ total: 0, idle: 0, waiting: 0 })
    expect((await admin.query('SELECT count(*)::int AS n FROM child')).rows[0]?.n).toBe(0)
  })
})
