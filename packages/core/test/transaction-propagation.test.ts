import pg from 'pg'
import { testDatabase } from '@hyperconn/testkit/vitest'
import type { TestDatabase } from '@hyperconn/testkit'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { InvalidOptionsError, TransactionPropagationError } from '../src/hyperconn-error.js'
import { currentTransactionInfo, isInTransaction } from '../src/transactions/transaction-context.js'
import type { IsolationLevel, Propagation, Tenant, TenantKey, TransactionOptions } from '../src/tenant-types.js'
import { TestPoolAccess, WHERE_AM_I } from './support/pool-access.js'
import type { WhereAmI } from './support/pool-access.js'

let db: TestDatabase
let admin: pg.Client
let nextOrg = 0

beforeAll(async () => {
  db = await testDatabase('txprop')
  admin = new pg.Client({ connectionString: db.url })
  await admin.connect()
  await admin.query('CREATE TABLE items (id serial PRIMARY KEY, org text NOT NULL, label text NOT NULL)')
})

afterAll(async () => {
  await admin?.end()
  await db?.[Symbol.asyncDispose]()
})

function setup() {
  const orgId = `org${++nextOrg}`
  const key: TenantKey = { service: 'core', orgId }
  const access = new TestPoolAccess(() => ({ connectionString: db.url, max: 4 }))
  const tenant = access.tenant(orgId)
  const insert = (label: string, on: Tenant = tenant) =>
    on.query('INSERT INTO items (org, label) VALUES ($1, $2)', [on.orgId, label])
  const labels = async (org = orgId): Promise<string[]> =>
    (await admin.query<{ label: string }>('SELECT label FROM items WHERE org = $1 ORDER BY id', [org])).rows.map((r) => r.label)
  return { access, tenant, key, insert, labels }
}

interface Observed extends WhereAmI {
  inTransaction: boolean
  isolation: string
  readOnly: string
  /** txid of a second statement: equal to `txid` inside a transaction, different in autocommit. */
  txid2: string
}

async function observe(tenant: Tenant, key: TenantKey): Promise<Observed> {
  const first = (await tenant.query<WhereAmI>(WHERE_AM_I)).rows[0] as WhereAmI
  const settings = await tenant.query<{ isolation: string; read_only: string }>(
    "SELECT current_setting('transaction_isolation') AS isolation, current_setting('transaction_read_only') AS read_only",
  )
  const second = (await tenant.query<WhereAmI>(WHERE_AM_I)).rows[0] as WhereAmI
  return {
    ...first,
    txid2: second.txid,
    inTransaction: isInTransaction(key),
    isolation: (await tenant.query<{ transaction_isolation: string }>('SHOW transaction_isolation')).rows[0]?.transaction_isolation ?? '?',
    readOnly: settings.rows[0]?.read_only ?? '?',
  }
}

describe('propagation without an active transaction', () => {
  const starts: Propagation[] = ['required', 'requires_new', 'nested']
  it.each(starts)('%s starts a transaction', async (propagation) => {
    const { access, tenant, key } = setup()
    await using _ = access
    const seen = await tenant.transaction(() => observe(tenant, key), { propagation })
    expect(seen).toMatchObject({ inTransaction: true, isolation: 'read committed', readOnly: 'off' })
    expect(seen.txid2).toBe(seen.txid)
  })

  const runsWithout: Propagation[] = ['never', 'not_supported', 'supports']
  it.each(runsWithout)('%s runs the callback without a transaction (each statement autocommits)', async (propagation) => {
    const { access, tenant, key } = setup()
    await using _ = access
    const seen = await tenant.transaction(() => observe(tenant, key), { propagation, isolationLevel: 'serializable', readOnly: true })
    expect(seen.inTransaction).toBe(false)
    expect(seen.txid2).not.toBe(seen.txid)
    // Options are ignored when no transaction is started.
    expect(seen).toMatchObject({ isolation: 'read committed', readOnly: 'off' })
  })

  it('mandatory throws TransactionPropagationError and does not call the callback', async () => {
    const { access, tenant } = setup()
    await using _ = access
    const fn = vi.fn(async () => 1)
    await expect(tenant.transaction(fn, { propagation: 'mandatory' })).rejects.toBeInstanceOf(TransactionPropagationError)
    expect(fn).not.toHaveBeenCalled()
    expect(access.clients).toHaveLength(0)
  })
})

describe('propagation inside an active transaction', () => {
  const joins: Propagation[] = ['required', 'mandatory', 'supports']
  it.each(joins)('%s joins it: same backend, same transaction, writes commit or roll back with it', async (propagation) => {
    const { access, tenant, key, insert, labels } = setup()
    await using _ = access
    const boom = new Error('outer fails')
    await expect(
      tenant.transaction(
        async () => {
          const outer = await observe(tenant, key)
          const inner = await tenant.transaction(
            async () => {
              await insert('inner')
              expect(currentTransactionInfo(key)).toMatchObject({ depth: 0, status: 'active' })
              return observe(tenant, key)
            },
            { propagation },
          )
          expect(inner).toMatchObject({ pid: outer.pid, txid: outer.txid, isolation: 'repeatable read', inTransaction: true })
          throw boom
        },
        { isolationLevel: 'repeatable read' },
      ),
    ).rejects.toBe(boom)
    expect(await labels()).toEqual([])
  })

  it('nested opens a savepoint in the same transaction', async () => {
    const { access, tenant, key } = setup()
    await using _ = access
    await tenant.transaction(async () => {
      const outer = await observe(tenant, key)
      const inner = await tenant.transaction(
        async () => {
          expect(currentTransactionInfo(key)).toMatchObject({ depth: 1, savepoint: 'hc_sp_1' })
          return observe(tenant, key)
        },
        { propagation: 'nested' },
      )
      expect(inner).toMatchObject({ pid: outer.pid, txid: outer.txid, inTransaction: true })
    })
  })

  it('requires_new runs on a second connection and commits independently even if the outer rolls back', async () => {
    const { access, tenant, key, insert, labels } = setup()
    await using _ = access
    const boom = new Error('outer fails')
    await expect(
      tenant.transaction(async () => {
        await insert('outer')
        const outer = await observe(tenant, key)
        const inner = await tenant.transaction(
          async () => {
            await insert('independent')
            return observe(tenant, key)
          },
          { propagation: 'requires_new', isolationLevel: 'serializable' },
        )
        expect(inner.pid).not.toBe(outer.pid)
        expect(inner.txid).not.toBe(outer.txid)
        expect(inner).toMatchObject({ inTransaction: true, isolation: 'serializable' })
        // Committed already: visible to others while the outer is still open.
        expect(await labels()).toEqual(['independent'])
        // Back in the outer frame, queries join the outer transaction again.
        expect((await observe(tenant, key)).txid).toBe(outer.txid)
        throw boom
      }),
    ).rejects.toBe(boom)
    expect(await labels()).toEqual(['independent'])
  })

  it('not_supported runs the callback outside it: autocommit writes survive the outer rollback', async () => {
    const { access, tenant, key, insert, labels } = setup()
    await using _ = access
    const boom = new Error('outer fails')
    await expect(
      tenant.transaction(async () => {
        const outer = await observe(tenant, key)
        const inner = await tenant.transaction(
          async () => {
            await insert('audit')
            return observe(tenant, key)
          },
          { propagation: 'not_supported' },
        )
        expect(inner.inTransaction).toBe(false)
        expect(inner.pid).not.toBe(outer.pid)
        expect(inner.txid2).not.toBe(inner.txid)
        expect(isInTransaction(key)).toBe(true)
        throw boom
      }),
    ).rejects.toBe(boom)
    expect(await labels()).toEqual(['audit'])
  })

  it('never throws TransactionPropagationError without calling the callback; the outer can still commit', async () => {
    const { access, tenant, insert, labels } = setup()
    await using _ = access
    const fn = vi.fn(async () => 1)
    await tenant.transaction(async () => {
      await insert('outer')
      await expect(tenant.transaction(fn, { propagation: 'never' })).rejects.toBeInstanceOf(TransactionPropagationError)
    })
    expect(fn).not.toHaveBeenCalled()
    expect(await labels()).toEqual(['outer'])
  })
})

describe('isolation level and access mode', () => {
  const levels: IsolationLevel[] = ['read committed', 'repeatable read', 'serializable']
  it.each(levels)('BEGIN ISOLATION LEVEL %s is applied', async (isolationLevel) => {
    const { access, tenant, key } = setup()
    await using _ = access
    const seen = await tenant.transaction(() => observe(tenant, key), { isolationLevel })
    expect(seen.isolation).toBe(isolationLevel)
    expect(seen.readOnly).toBe('off')
  })

  it('readOnly: true gives a READ ONLY transaction that rejects writes; readOnly: false a READ WRITE one', async () => {
    const { access, tenant, key, insert } = setup()
    await using _ = access
    await expect(
      tenant.transaction(
        async () => {
          expect(await observe(tenant, key)).toMatchObject({ readOnly: 'on', isolation: 'serializable' })
          expect(currentTransactionInfo(key)).toMatchObject({ readOnly: true, isolationLevel: 'serializable' })
          await insert('nope')
        },
        { readOnly: true, isolationLevel: 'serializable' },
      ),
    ).rejects.toMatchObject({ code: '25006' })
    const seen = await tenant.transaction(() => observe(tenant, key), { readOnly: false })
    expect(seen.readOnly).toBe('off')
  })
})

describe('joining with conflicting options', () => {
  const cases: [string, TransactionOptions, TransactionOptions][] = [
    ['a different isolation level', { isolationLevel: 'serializable' }, { isolationLevel: 'read committed' }],
    ['an isolation level other than the server default', {}, { isolationLevel: 'serializable' }],
    ['readOnly: true in a read-write transaction', { readOnly: false }, { readOnly: true }],
    ['readOnly: true in a default (read-write) transaction', {}, { readOnly: true }],
    ['readOnly: false in a read-only transaction', { readOnly: true }, { readOnly: false }],
  ]
  const modes: Propagation[] = ['required', 'mandatory', 'supports', 'nested']
  for (const propagation of modes) {
    it.each(cases)(`${propagation} with %s throws TransactionPropagationError; the outer is unaffected`, async (_name, outer, inner) => {
      const { access, tenant, insert, labels } = setup()
      await using _ = access
      const fn = vi.fn(async () => 1)
      await tenant.transaction(async () => {
        if (outer.readOnly !== true) await insert('outer')
        await expect(tenant.transaction(fn, { ...inner, propagation })).rejects.toBeInstanceOf(TransactionPropagationError)
      }, outer)
      expect(fn).not.toHaveBeenCalled()
      expect(await labels()).toEqual(outer.readOnly === true ? [] : ['outer'])
    })
  }

  const compatible: [string, TransactionOptions, TransactionOptions][] = [
    ['the same isolation level', { isolationLevel: 'serializable' }, { isolationLevel: 'serializable' }],
    ['the server default isolation level, named', {}, { isolationLevel: 'read committed' }],
    ['readOnly left out in a read-only transaction', { readOnly: true }, {}],
    ['readOnly: false in a default transaction', {}, { readOnly: false }],
    ['readOnly: true in a read-only transaction', { readOnly: true }, { readOnly: true }],
  ]
  it.each(compatible)('joining with %s is fine', async (_name, outer, inner) => {
    const { access, tenant } = setup()
    await using _ = access
    const result = await tenant.transaction(() => tenant.transaction(async () => 'joined', inner), outer)
    expect(result).toBe('joined')
  })

  it('rejects malformed options with InvalidOptionsError', async () => {
    const { access, tenant } = setup()
    await using _ = access
    const bad = [
      { propagation: 'sometimes' },
      { isolationLevel: 'snapshot' },
      { readOnly: 'yes' },
    ] as unknown as TransactionOptions[]
    for (const options of bad) {
      await expect(tenant.transaction(async () => 1, options)).rejects.toBeInstanceOf(InvalidOptionsError)
    }
    await expect(tenant.transaction('nope' as unknown as () => Promise<void>)).rejects.toBeInstanceOf(InvalidOptionsError)
    expect(access.clients).toHaveLength(0)
  })
})

describe('several tenants in one async context', () => {
  it("tenant B's queries inside A's transaction run on B's pool, outside A's transaction", async () => {
    const a = setup()
    const b = setup()
    await using _a = a.access
    await using _b = b.access
    const boom = new Error('A fails')
    await expect(
      a.tenant.transaction(async () => {
        const inA = await observe(a.tenant, a.key)
        const inB = await observe(b.tenant, b.key)
        expect(inB.inTransaction).toBe(false)
        expect(inB.pid).not.toBe(inA.pid)
        expect(inB.txid2).not.toBe(inB.txid)
        await a.insert('a1')
        await b.insert('b-autocommit', b.tenant)
        // B's own transaction inside A's: separate; A's queries inside it still join A.
        await b.tenant.transaction(async () => {
          const inBtx = await observe(b.tenant, b.key)
          expect(inBtx.txid2).toBe(inBtx.txid)
          expect(inBtx.txid).not.toBe(inA.txid)
          expect((await observe(a.tenant, a.key)).txid).toBe(inA.txid)
          await b.insert('b-tx', b.tenant)
          await a.insert('a2')
        })
        expect(b.access.clients.every((c) => !a.access.clients.includes(c))).toBe(true)
        throw boom
      }),
    ).rejects.toBe(boom)
    expect(await a.labels()).toEqual([])
    expect(await b.labels()).toEqual(['b-autocommit', 'b-tx'])
  })

  it('the same org under another service is another tenant', async () => {
    const { access, tenant, key } = setup()
    await using _ = access
    const other = access.tenant(key.orgId, 'billing')
    await tenant.transaction(async () => {
      expect(isInTransaction(key)).toBe(true)
      expect(isInTransaction({ service: 'billing', orgId: key.orgId })).toBe(false)
      const mine = await observe(tenant, key)
      const theirs = await observe(other, { service: 'billing', orgId: key.orgId })
      expect(theirs.pid).not.toBe(mine.pid)
    })
  })
})

describe("isolationLevel 'read uncommitted'", () => {
  it('runs as read committed, as PostgreSQL does, and joins a read committed transaction', async () => {
    const { access, tenant } = setup()
    await using _ = access
    const shown = await tenant.transaction(async () => {
      const inner = await tenant.transaction(async () => (await tenant.query('SHOW transaction_isolation')).rows[0], {
        isolationLevel: 'read uncommitted',
      })
      return inner
    }, { isolationLevel: 'read committed' })
    expect(shown).toEqual({ transaction_isolation: 'read committed' })
  })
})
