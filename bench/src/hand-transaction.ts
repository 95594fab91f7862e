import type pg from 'pg'

/** The baseline way to run a transaction with bare pg: one client, BEGIN, work, COMMIT (ROLLBACK on error). */
export async function handTransaction(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<void>): Promise<void> {
  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    await work(client)
    await client.query('COMMIT')
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {})
    throw error
  } finally {
    client.release()
  }
}
