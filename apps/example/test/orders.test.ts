import pg from 'pg'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { catalogueFor } from '../src/tenant-databases.js'
import { startShopFixture } from './shop-fixture.js'
import type { ShopFixture } from './shop-fixture.js'

const ACME = 'acme'
const GLOBEX = 'globex'

let shop: ShopFixture

beforeAll(async () => {
  shop = await startShopFixture([ACME, GLOBEX])
})

afterAll(async () => {
  await shop?.close()
})

beforeEach(async () => {
  await Promise.all([shop.reset(ACME), shop.reset(GLOBEX)])
})

function placeOrder(orgId: string, items: Array<{ sku: string; quantity: number }>, customer = 'Wile E. Coyote') {
  return shop.app.http.inject({
    method: 'POST',
    url: '/orders',
    headers: { 'x-org-id': orgId },
    payload: { customer, items },
  })
}

const seededStock = (orgId: string): Record<string, number> =>
  Object.fromEntries(catalogueFor(orgId).map((item) => [item.sku, item.quantity]))

async function stockIn(orgId: string): Promise<Record<string, number>> {
  const rows = await shop.sql<{ sku: string; quantity: number }>(orgId, 'SELECT sku, quantity FROM inventory')
  return Object.fromEntries(rows.map((row) => [row.sku, row.quantity]))
}

async function countIn(orgId: string, table: 'orders' | 'audit_log'): Promise<number> {
  const [row] = await shop.sql<{ n: number }>(orgId, `SELECT count(*)::int AS n FROM ${table}`)
  return row?.n ?? -1
}

/** Nothing of a failed order may survive: no order row, no audit entry, the seeded stock to the unit. */
async function expectUntouched(orgId: string): Promise<void> {
  expect(await countIn(orgId, 'orders')).toBe(0)
  expect(await countIn(orgId, 'audit_log')).toBe(0)
  expect(await stockIn(orgId)).toEqual(seededStock(orgId))
}

/** The errors behind the next 5xx answers, to check that a failure was the injected one. */
function captureErrors(): unknown[] {
  shop.handlerErrors.length = 0
  return shop.handlerErrors
}

function sqlStates(error: unknown): string[] {
  const states: string[] = []
  for (let e: unknown = error; typeof e === 'object' && e !== null; e = (e as { cause?: unknown }).cause) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string') states.push(code)
    if (states.length > 5) break
  }
  return states
}

function messages(error: unknown): string[] {
  const found: string[] = []
  for (let e: unknown = error; e instanceof Error && found.length < 6; e = e.cause) found.push(e.message)
  return found
}

describe('POST /orders', () => {
  it('writes the order (Drizzle), the stock (Kysely) and the audit entry (Knex) in one transaction', async () => {
    const response = await placeOrder(ACME, [
      { sku: 'anvil', quantity: 3 },
      { sku: 'rocket-skates', quantity: 1 },
    ])
    expect(response.statusCode).toBe(201)
    const body = response.json()
    expect(body.order).toMatchObject({ id: 1, customer: 'Wile E. Coyote' })
    expect(body.remaining).toEqual({ anvil: 7, 'rocket-skates': 4 })

    const orders = await shop.sql(ACME, 'SELECT id, customer, items, xmin::text AS tx FROM orders')
    expect(orders).toEqual([
      {
        id: 1,
        customer: 'Wile E. Coyote',
        items: [{ sku: 'anvil', quantity: 3 }, { sku: 'rocket-skates', quantity: 1 }],
        tx: expect.any(String),
      },
    ])
    expect(await stockIn(ACME)).toEqual({ ...seededStock(ACME), anvil: 7, 'rocket-skates': 4 })
    const audit = await shop.sql(ACME, 'SELECT action, order_id, details, xmin::text AS tx FROM audit_log')
    expect(audit).toEqual([
      {
        action: 'order.placed',
        order_id: 1,
        details: { customer: 'Wile E. Coyote', items: [{ sku: 'anvil', quantity: 3 }, { sku: 'rocket-skates', quantity: 1 }] },
        tx: expect.any(String),
      },
    ])
    // xmin is the id of the transaction that wrote a row: the three ORMs' rows share one.
    const stockTx = await shop.sql<{ tx: string }>(ACME, `SELECT DISTINCT xmin::text AS tx FROM inventory WHERE sku IN ('anvil', 'rocket-skates')`)
    expect(stockTx).toEqual([{ tx: orders[0]?.tx }])
    expect(audit[0]?.tx).toBe(orders[0]?.tx)
  })

  it('serves what it wrote through the GET endpoints', async () => {
    expect((await placeOrder(ACME, [{ sku: 'giant-magnet', quantity: 2 }])).statusCode).toBe(201)
    const get = (url: string) => shop.app.http.inject({ method: 'GET', url, headers: { 'x-org-id': ACME } })

    const orders = await get('/orders')
    expect(orders.statusCode).toBe(200)
    expect(orders.json().orders).toMatchObject([{ id: 1, customer: 'Wile E. Coyote', items: [{ sku: 'giant-magnet', quantity: 2 }] }])
    const stock = await get('/stock')
    expect(stock.json().stock).toContainEqual({ sku: 'giant-magnet', name: 'Giant magnet', quantity: 1 })
    const audit = await get('/audit')
    expect(audit.json().entries).toMatchObject([{ action: 'order.placed', orderId: 1 }])
  })

  it('rolls back all three writes on insufficient stock (409), including an earlier stock update', async () => {
    // Lines are taken in SKU order: 'anvil' is decremented inside the transaction before 'giant-magnet' fails.
    const response = await placeOrder(ACME, [
      { sku: 'anvil', quantity: 1 },
      { sku: 'giant-magnet', quantity: 4 },
    ])
    expect(response.statusCode).toBe(409)
    expect(response.json()).toMatchObject({ error: 'insufficient_stock', sku: 'giant-magnet', available: 3 })
    await expectUntouched(ACME)
  })

  it('rolls back all three writes when the audit insert (Knex) fails after the Kysely update', async () => {
    const errors = captureErrors()
    await shop.sql(
      ACME,
      `CREATE FUNCTION reject_audit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'audit log is read-only (injected by the test)'; END $$`,
    )
    await shop.sql(ACME, 'CREATE TRIGGER reject_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION reject_audit()')
    try {
      const response = await placeOrder(ACME, [{ sku: 'anvil', quantity: 2 }])
      expect(response.statusCode).toBe(500)
      expect(response.json()).toEqual({ error: 'internal_error', message: 'Internal error.' })
      expect(errors.flatMap(sqlStates)).toContain('P0001') // raise_exception: our trigger, nothing else
      await expectUntouched(ACME)
    } finally {
      await shop.sql(ACME, 'DROP TRIGGER reject_audit ON audit_log')
      await shop.sql(ACME, 'DROP FUNCTION reject_audit()')
    }
  })

  it('rolls back all three writes when COMMIT fails after all of them succeeded (deferred constraint)', async () => {
    const errors = captureErrors()
    await shop.sql(
      ACME,
      `CREATE FUNCTION fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'deferred check failed (injected by the test)'; END $$`,
    )
    // Deferred: runs at COMMIT, after the Drizzle, Kysely and Knex statements have all succeeded.
    await shop.sql(
      ACME,
      `CREATE CONSTRAINT TRIGGER fail_at_commit AFTER INSERT ON audit_log
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_at_commit()`,
    )
    try {
      const response = await placeOrder(ACME, [{ sku: 'anvil', quantity: 2 }])
      expect(response.statusCode).toBe(500)
      expect(errors.flatMap(sqlStates)).toContain('P0001')
      await expectUntouched(ACME)
    } finally {
      await shop.sql(ACME, 'DROP TRIGGER fail_at_commit ON audit_log')
      await shop.sql(ACME, 'DROP FUNCTION fail_at_commit()')
    }
  })

  it('rejects an unknown product with 422 and writes nothing', async () => {
    const response = await placeOrder(ACME, [{ sku: 'earthquake-pills', quantity: 1 }])
    expect(response.statusCode).toBe(422)
    expect(response.json()).toMatchObject({ error: 'unknown_product', sku: 'earthquake-pills' })
    await expectUntouched(ACME)
  })

  it('never oversells under concurrent orders', async () => {
    const responses = await Promise.all(Array.from({ length: 5 }, () => placeOrder(ACME, [{ sku: 'giant-magnet', quantity: 1 }])))
    const statuses = responses.map((r) => r.statusCode).sort()
    expect(statuses).toEqual([201, 201, 201, 409, 409])
    expect((await stockIn(ACME))['giant-magnet']).toBe(0)
    expect(await countIn(ACME, 'orders')).toBe(3)
    expect(await countIn(ACME, 'audit_log')).toBe(3)
  })

  it('validates the body (400) before touching the database', async () => {
    const response = await placeOrder(ACME, [{ sku: 'anvil', quantity: 0 }])
    expect(response.statusCode).toBe(400)
    expect(response.json()).toMatchObject({ error: 'invalid_request' })
    await expectUntouched(ACME)
  })
})

describe('lost database connection', () => {
  /** A superuser connection of its own to one tenant database, to hold locks across statements. */
  async function lockingClient(orgId: string): Promise<pg.Client> {
    const database = shop.env.local?.databases.find((d) => d.orgId === orgId)
    if (database === undefined) throw new Error(`no test database for ${orgId}`)
    const client = new pg.Client({ connectionString: database.adminUrl })
    client.on('error', () => {})
    await client.connect()
    return client
  }

  /** The backend of the app's stock update, once it waits for the row lock. */
  async function blockedStockUpdate(orgId: string): Promise<number> {
    const deadline = Date.now() + 10_000
    while (Date.now() < deadline) {
      const [row] = await shop.sql<{ pid: number }>(
        orgId,
        `SELECT pid FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock' AND query ILIKE 'update "inventory"%'`,
      )
      if (row !== undefined) return row.pid
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    throw new Error('the order never blocked on the locked inventory row')
  }

  it("answers 503 with Retry-After: 1 when the order's backend is killed mid-transaction, and writes nothing", async () => {
    const errors = captureErrors()
    const locker = await lockingClient(ACME)
    try {
      await locker.query('BEGIN')
      await locker.query(`SELECT 1 FROM inventory WHERE sku = 'anvil' FOR UPDATE`)
      // Drizzle inserts the order row, then Kysely's stock update waits for the lock held above.
      const pending = placeOrder(ACME, [{ sku: 'anvil', quantity: 2 }])
      const pid = await blockedStockUpdate(ACME)
      await shop.sql(ACME, 'SELECT pg_terminate_backend($1)', [pid])
      const response = await pending
      expect(response.statusCode).toBe(503)
      expect(response.headers['retry-after']).toBe('1')
      expect(response.json()).toEqual({ error: 'tenant_unavailable', message: expect.stringContaining('retry') })
      // The injected failure, nothing else: admin shutdown (57P01) or pg's code-less "Connection terminated".
      const reasons = errors.flatMap((error) => [...sqlStates(error), ...messages(error)])
      expect(reasons.some((r) => r === '57P01' || r.startsWith('Connection terminated'))).toBe(true)
    } finally {
      await locker.query('ROLLBACK').catch(() => {})
      await locker.end()
    }
    await expectUntouched(ACME)
    // The pool replaced the dead connection: the next order goes through.
    expect((await placeOrder(ACME, [{ sku: 'anvil', quantity: 2 }])).statusCode).toBe(201)
  })
})

describe('tenant isolation', () => {
  it("an order for one tenant never shows up for another, and the other's stock is unchanged", async () => {
    // Both catalogues have an 'anvil': same SKU, different databases.
    expect((await placeOrder(ACME, [{ sku: 'anvil', quantity: 4 }])).statusCode).toBe(201)

    const get = (orgId: string, url: string) => shop.app.http.inject({ method: 'GET', url, headers: { 'x-org-id': orgId } })
    expect((await get(ACME, '/orders')).json().orders).toHaveLength(1)
    expect((await get(GLOBEX, '/orders')).json().orders).toEqual([])
    expect((await get(GLOBEX, '/audit')).json().entries).toEqual([])
    expect((await get(GLOBEX, '/stock')).json().stock).toContainEqual({ sku: 'anvil', name: 'Anvil (budget)', quantity: 40 })

    await expectUntouched(GLOBEX)
    expect((await stockIn(ACME)).anvil).toBe(6)
  })

  it("each tenant's order ids are its own", async () => {
    const acme = await placeOrder(ACME, [{ sku: 'anvil', quantity: 1 }])
    const globex = await placeOrder(GLOBEX, [{ sku: 'hammock', quantity: 1 }], 'Hank Scorpio')
    expect(acme.json().order.id).toBe(1)
    expect(globex.json().order.id).toBe(1)
    expect(await shop.sql(ACME, 'SELECT customer FROM orders')).toEqual([{ customer: 'Wile E. Coyote' }])
    expect(await shop.sql(GLOBEX, 'SELECT customer FROM orders')).toEqual([{ customer: 'Hank Scorpio' }])
    expect(await stockIn(GLOBEX)).toEqual({ ...seededStock(GLOBEX), hammock: 24 })
  })
})
