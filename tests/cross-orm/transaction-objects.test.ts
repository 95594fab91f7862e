import { currentTransactionInfo, TransactionClosedError, TransactionPropagationError } from '@hyperconn/core'
import type { Propagation } from '@hyperconn/core'
import type { KnexTransactionConfig } from '@hyperconn/knex'
import { describe, expect, it, vi } from 'vitest'
import { deferred, rejectionOf, unwrap } from './support/async.js'
import { crossOrmDatabases, ENTRY_POINTS, ORMS } from './support/fixture.js'
import type { EntryPoint, NativeTx, Orm, TenantOrms } from './support/fixture.js'

// One rule for every ORM's transaction object (Drizzle tx, Kysely trx, Knex trx), core's
// TransactionBinding: inside its own transaction and that transaction's savepoints it runs in the
// innermost scope of the current context; after its transaction ended it rejects with
// TransactionClosedError; anywhere else (requires_new, not_supported, code that kept it) with
// TransactionPropagationError, before touching a connection. getDb(orgId) follows the context.

const databases = crossOrmDatabases(1, 'xtxobj')

type Starter = 'core options' | 'knex config'
const STARTERS: readonly Starter[] = ['core options', 'knex config']

function startInner<T>(org: TenantOrms, starter: Starter, propagation: Propagation, fn: () => Promise<T>): Promise<T> {
  if (starter === 'core options') return org.tenant.transaction(fn, { propagation })
  const config: KnexTransactionConfig = { propagation }
  return org.knex.transaction(() => fn(), config)
}

/** Every way the native object could be used: a write, a read, and its own savepoint call. */
async function expectRefused(native: NativeTx, expected: typeof TransactionClosedError | typeof TransactionPropagationError, tag: string): Promise<void> {
  const fn = vi.fn(async () => undefined)
  expect(unwrap(await rejectionOf(native.insert(`${tag}-insert`))), `${native.entry} insert`).toBeInstanceOf(expected)
  expect(unwrap(await rejectionOf(native.whereAmI())), `${native.entry} select`).toBeInstanceOf(expected)
  expect(unwrap(await rejectionOf(native.savepoint(fn))), `${native.entry} savepoint`).toBeInstanceOf(expected)
  expect(fn).not.toHaveBeenCalled()
}

describe('the outer transaction object inside another scope of its org', () => {
  const cases = ORMS.flatMap((orm) =>
    STARTERS.flatMap((starter) => (['requires_new', 'not_supported'] as const).map((propagation) => [orm, propagation, starter] as const)),
  )

  it.each(cases)('%s object inside %s via %s: TransactionPropagationError, nothing written through it', async (orm, propagation, starter) => {
    await using fx = await databases.open()
    const { org } = fx
    const boom = new Error('outer rolls back')
    await expect(
      org.transaction(orm, async (native) => {
        const outer = await native.whereAmI()
        await native.insert('outer')
        await startInner(org, starter, propagation, async () => {
          await expectRefused(native, TransactionPropagationError, 'refused')
          // getDb(orgId) of every ORM follows the context: the inner transaction, or autocommit.
          for (const via of ORMS) {
            expect((await org.whereAmI(via)).txid).not.toBe(outer.txid)
            await org.insert(via, `inner-${via}`)
          }
        })
        // The refusals did not fail the outer transaction: back in it, the object works.
        expect(await native.whereAmI()).toEqual(outer)
        throw boom
      }),
    ).rejects.toBe(boom)
    expect(await org.labels()).toEqual(ORMS.map((via) => `inner-${via}`))
    expect(org.poolStats()).toMatchObject({ checkedOut: 0 })
  })

  it.each(ORMS)('%s object used from an async context outside any transaction: TransactionPropagationError', async (orm) => {
    await using fx = await databases.open()
    const { org } = fx
    // A continuation registered outside the transaction runs in that (empty) async context.
    const handed = deferred<NativeTx>()
    const foreign = handed.promise.then((native) => expectRefused(native, TransactionPropagationError, 'foreign'))
    await org.transaction(orm, async (native) => {
      handed.resolve(native)
      await foreign
      await native.insert('own')
    })
    expect(await org.labels()).toEqual(['own'])
  })
})

/** A savepoint opened by one mechanism; ORMs other than core open it from a joined transaction object. */
async function savepoint(org: TenantOrms, mechanism: EntryPoint, fn: () => Promise<void>): Promise<void> {
  if (mechanism === 'core') return org.tenant.transaction(fn, { propagation: 'nested' })
  let failure: { error: unknown } | undefined
  await org.transaction(mechanism, async (joined) => {
    try {
      await joined.savepoint(fn)
    } catch (error) {
      failure = { error }
    }
  })
  if (failure !== undefined) throw failure.error
}

describe('the outer transaction object inside its own savepoints', () => {
  const cases = ORMS.flatMap((orm) => ENTRY_POINTS.map((mechanism) => [orm, mechanism] as const))

  it.each(cases)('%s object inside a savepoint opened via %s runs in the savepoint (no deadlock)', async (orm, mechanism) => {
    await using fx = await databases.open()
    const { org } = fx
    await org.transaction(orm, async (native) => {
      const outer = await native.whereAmI()
      await native.insert('outer')
      await expect(
        savepoint(org, mechanism, async () => {
          expect(currentTransactionInfo(org.tenant)?.depth).toBe(1)
          expect(await native.whereAmI()).toEqual(outer)
          // Concurrently with getDb(orgId): both queue in the savepoint's scope.
          await Promise.all([native.insert('in-savepoint'), org.insert('core', 'in-savepoint-core')])
          // Its own savepoint call there nests one level deeper.
          await native.savepoint(async () => {
            expect(currentTransactionInfo(org.tenant)?.depth).toBe(2)
            await native.insert('in-savepoint-2')
          })
          throw new Error('undo the savepoint')
        }),
      ).rejects.toThrow('undo the savepoint')
      await native.insert('after')
    })
    const rows = await org.rows()
    expect(rows.map((r) => r.label)).toEqual(['outer', 'after'])
    expect(new Set(rows.map((r) => r.txid)).size).toBe(1)
  })
})

describe('a transaction object kept after its transaction ended', () => {
  const cases = ORMS.flatMap((orm) => ENTRY_POINTS.map((later) => [orm, later] as const))

  it.each(cases)('%s object used inside a later transaction opened by %s: TransactionClosedError, never joins it', async (orm, later) => {
    await using fx = await databases.open()
    const { org } = fx
    let kept!: NativeTx
    await org.transaction(orm, async (native) => {
      kept = native
      await native.insert('first')
    })
    await org.transaction(later, async () => {
      await expectRefused(kept, TransactionClosedError, 'kept')
      await org.insert('kysely', 'second')
    })
    expect(await org.labels()).toEqual(['first', 'second'])
  })
})

describe('the same rule for every ORM', () => {
  it('Drizzle, Kysely and Knex objects of one transaction (each joined) refuse together inside requires_new and work together back in it', async () => {
    await using fx = await databases.open()
    const { org } = fx
    await org.tenant.transaction(async () => {
      const natives: Partial<Record<Orm, NativeTx>> = {}
      // Each ORM's entry point joins the core transaction; its object stays bound to it afterwards.
      for (const orm of ORMS) await org.transaction(orm, async (native) => void (natives[orm] = native))
      const outer = await org.whereAmI('core')
      await org.tenant.transaction(
        async () => {
          for (const orm of ORMS) await expectRefused(natives[orm] as NativeTx, TransactionPropagationError, `rn-${orm}`)
        },
        { propagation: 'requires_new' },
      )
      for (const orm of ORMS) expect((await (natives[orm] as NativeTx).insert(`joined-${orm}`)).txid).toBe(outer.txid)
    })
    expect(await org.labels()).toEqual(ORMS.map((orm) => `joined-${orm}`))
  })
})
