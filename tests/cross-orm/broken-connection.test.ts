import pg from 'pg'
import { describe, expect, it } from 'vitest'
import { deferred, rejectionOf, unwrap, until } from './support/async.js'
import { crossOrmDatabases, ENTRY_POINTS, ORMS } from './support/fixture.js'
import type { CrossOrm, Orm, TenantOrms } from './support/fixture.js'

// Issue #3 acceptance 8: the backend of a transaction is killed (pg_terminate_backend from an admin
// connection) while the transaction holds its connection. The transaction rejects with the connection
// error, the process lives, the client is destroyed rather than recycled, and the pool's counts return
// to their baseline.

const databases = crossOrmDatabases(1, 'xkill')

function expectConnectionError(error: unknown): void {
  const cause = unwrap(error) as { message?: unknown; code?: unknown }
  expect(`${String(cause.message)} ${String(cause.code)}`).toMatch(/terminat|57P01/i)
}

/** One idle pooled connection, opened through the registry: the baseline the pool must come back to. */
async function baseline(fx: CrossOrm, org: TenantOrms): Promise<number> {
  await org.whereAmI('core')
  expect(org.poolStats()).toMatchObject({ totalCount: 1, idleCount: 1, waitingCount: 0, checkedOut: 0 })
  return fx.registry.stats().connectionErrors
}

/** After the failure: nothing checked out, the killed client is gone, and every ORM works on a new one. */
async function expectRecovered(org: TenantOrms, killedPid: number): Promise<void> {
  expect(org.poolStats()).toMatchObject({ totalCount: 0, idleCount: 0, waitingCount: 0, checkedOut: 0 })
  await until(
    async () => (await org.admin.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [killedPid])).rowCount === 0,
    'the killed backend to go away',
  )
  for (const orm of ORMS) {
    const seen = await org.whereAmI(orm)
    expect(seen.pid).not.toBe(killedPid)
  }
  expect(org.poolStats()).toMatchObject({ totalCount: 1, idleCount: 1, waitingCount: 0, checkedOut: 0 })
  expect(await org.rows()).toEqual([])
}

// The killer learns the pid through one ORM; the next statement goes through another.
const cases = ENTRY_POINTS.map((entry, i) => [entry, ORMS[i % ORMS.length] as Orm, ORMS[(i + 1) % ORMS.length] as Orm] as const)

describe('backend killed mid-transaction', () => {
  it.each(cases)('opened by %s, idle in transaction (pid via %s, next statement via %s)', async (entry, first, next) => {
    await using fx = await databases.open()
    const { org } = fx
    const errorsBefore = await baseline(fx, org)
    const reported = deferred<{ phase: string }>()
    const unsubscribe = fx.registry.on('connection:error', (event) => reported.resolve(event))
    let killedPid = 0
    let callbackFinished = false
    const error = await rejectionOf(
      org.transaction(entry, async (native) => {
        await native.insert('before-kill')
        killedPid = (await org.whereAmI(first)).pid
        await org.admin.query('SELECT pg_terminate_backend($1)', [killedPid])
        // The registry's listener on the checked-out client reports the death: no crash, no sleep.
        expect(await reported.promise).toMatchObject({ phase: 'checked-out' })
        await org.insert(next, 'after-kill')
        callbackFinished = true
      }),
    )
    unsubscribe()
    expect(callbackFinished).toBe(false)
    expectConnectionError(error)
    expect(fx.registry.stats().connectionErrors).toBeGreaterThan(errorsBefore)
    await expectRecovered(org, killedPid)
  })

  it.each(cases)('opened by %s, killed while a statement waits on a lock (pid via %s, blocked via %s)', async (entry, first, blocked) => {
    await using fx = await databases.open()
    const { org } = fx
    await baseline(fx, org)
    // A second admin session holds a lock the transaction's insert has to wait for.
    const locker = new pg.Client({ connectionString: org.database.url })
    locker.on('error', () => {})
    await locker.connect()
    try {
      await locker.query('BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE')
      let killedPid = 0
      const error = await rejectionOf(
        org.transaction(entry, async () => {
          killedPid = (await org.whereAmI(first)).pid
          // Observed at once: it rejects while the admin's terminate call is still in flight.
          const waiting = rejectionOf(org.insert(blocked, 'blocked'))
          await until(
            async () =>
              (await org.admin.query("SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'", [killedPid]))
                .rowCount === 1,
            'the insert to wait on the lock',
          )
          await org.admin.query('SELECT pg_terminate_backend($1)', [killedPid])
          const failed = await waiting
          expectConnectionError(failed)
          throw failed
        }),
      )
      expectConnectionError(error)
      await locker.query('ROLLBACK')
      await expectRecovered(org, killedPid)
    } finally {
      await locker.end()
    }
  })
})
