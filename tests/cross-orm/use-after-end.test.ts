import { TransactionClosedError } from '@hyperconn/core'
import pg from 'pg'
import { describe, expect, it, vi } from 'vitest'
import { deferred, unwrap } from './support/async.js'
import { crossOrmDatabases, ENTRY_POINTS, VIAS } from './support/fixture.js'
import type { NativeTx, Stamp, Via, WhereAmI } from './support/fixture.js'

// Issue #3 acceptance 7: work that outlives its transaction (a timer, an un-awaited promise chain, a
// kept transaction object) is refused with TransactionClosedError through every ORM: it never runs in
// autocommit on its own and never touches the connection the transaction gave back.

const databases = crossOrmDatabases(1, 'xlate')

const outcomes = ['commits', 'rolls back'] as const
const cases = ENTRY_POINTS.flatMap((entry) => outcomes.map((outcome) => [entry, outcome] as const))

/** Settles without ever being an unhandled rejection: late work is checked after several of them fail. */
function settle<T>(run: Promise<T>): Promise<{ value: T } | { error: unknown }> {
  return run.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  )
}

type Late = { what: string; outcome: Promise<{ value: unknown } | { error: unknown }> }

describe('use after the transaction ended', () => {
  it.each(cases)('opened by %s, which %s: timers, un-awaited chains and kept handles of every ORM reject', async (entry, outcome) => {
    await using fx = await databases.open()
    const { org } = fx
    const ended = deferred()
    const late: Late[] = []
    const timers: Promise<Late>[] = []
    let kept!: NativeTx
    const boom = new Error('roll back')

    const run = org.transaction(entry, async (native) => {
      await org.insert('core', 'inside')
      kept = native
      for (const via of VIAS) {
        // An un-awaited chain started inside the callback that queries once the transaction is over.
        late.push({ what: `un-awaited ${via}`, outcome: settle(ended.promise.then(() => org.insert(via, `late-chain-${via}`))) })
        // A timer scheduled inside the callback: it carries the callback's async context.
        const fired = deferred<Late>()
        timers.push(fired.promise)
        setTimeout(() => {
          fired.resolve({ what: `timer ${via}`, outcome: settle(ended.promise.then(() => org.insert(via, `late-timer-${via}`))) })
        }, 0)
      }
      if (outcome === 'rolls back') throw boom
    })
    if (outcome === 'rolls back') await expect(run).rejects.toBe(boom)
    else await run

    const before = org.poolStats()
    // pg clients must not see a single statement from here on.
    const sent = vi.spyOn(pg.Client.prototype, 'query')
    try {
      ended.resolve()
      // A kept tx/trx object of the ORM that opened it (core has none: tenant.query outside autocommits).
      if (entry !== 'core') {
        late.push({ what: `kept ${entry} handle: insert`, outcome: settle(kept.insert('late-kept')) })
        late.push({ what: `kept ${entry} handle: select`, outcome: settle(kept.whereAmI()) })
      }
      late.push(...(await Promise.all(timers)))
      for (const { what, outcome: settled } of late) {
        const result = await settled
        expect('error' in result ? unwrap(result.error) : result, what).toBeInstanceOf(TransactionClosedError)
      }
      expect(sent).not.toHaveBeenCalled()
      expect(org.poolStats()).toEqual(before)
      // Control: the spy does see the registry's clients.
      await org.whereAmI('core')
      expect(sent).toHaveBeenCalled()
    } finally {
      sent.mockRestore()
    }
    expect(late).toHaveLength(2 * VIAS.length + (entry === 'core' ? 0 : 2))
    expect(await org.labels()).toEqual(outcome === 'commits' ? ['inside'] : [])
    // getDb(orgId) outside the ended context is fine: a fresh autocommit statement per ORM.
    for (const via of VIAS) await org.insert(via, `after-${via}`)
    expect((await org.labels()).filter((l) => l.startsWith('after-'))).toHaveLength(VIAS.length)
  })

  it.each(ENTRY_POINTS)(
    'opened by %s: an un-awaited query issued just before the callback returns never runs outside the transaction',
    async (entry) => {
      await using fx = await databases.open()
      const { org } = fx
      const issued: { via: Via; outcome: Promise<{ value: Stamp } | { error: unknown }> }[] = []
      let inside!: WhereAmI
      await org.transaction(entry, async () => {
        inside = await org.whereAmI('core')
        for (const via of VIAS) issued.push({ via, outcome: settle(org.insert(via, `fire-and-forget-${via}`)) })
      })
      const labels = await org.labels()
      // Whether such a statement made it into the transaction depends on how many async steps the ORM
      // takes before it reaches core (see the report); it is never committed on its own.
      for (const { via, outcome } of issued) {
        const result = await outcome
        if ('value' in result) {
          expect(result.value.txid, via).toBe(inside.txid)
          expect(labels).toContain(`fire-and-forget-${via}`)
        } else {
          expect(unwrap(result.error), via).toBeInstanceOf(TransactionClosedError)
          expect(labels).not.toContain(`fire-and-forget-${via}`)
        }
      }
    },
  )
})
