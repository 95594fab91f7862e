import { drizzle } from 'drizzle-orm/node-postgres'
import type { NodePgDatabase } from 'drizzle-orm/node-postgres'
import knexFactory from 'knex'
import type { Knex } from 'knex'
import { Kysely, PostgresDialect } from 'kysely'
import type { PostgresPool, PostgresPoolClient } from 'kysely'
import type pg from 'pg'
import { items, TABLE } from './bench-schema.js'
import type { KyselyDatabase } from './bench-schema.js'
import type { ItemRow } from './orm-clients.js'
import { handTransaction } from './hand-transaction.js'

/**
 * The three ORMs without @hyperconn, sharing one transaction the only way they can: by hand, on
 * one checked-out pg client passed to each (Drizzle on the client, Kysely through a one-client
 * "pool" whose release is a no-op, Knex with `.connection(client)`). Scenario 3 compares ours
 * with it to separate what the ORMs cost from what the shared context costs.
 */
export class OrmsOnOneClient {
  readonly #pool: pg.Pool
  readonly #knex: Knex = knexFactory({ client: 'pg' })
  // One set per physical connection: building ORM instances per transaction would be unfair to this side.
  readonly #bound = new WeakMap<pg.PoolClient, Bound>()

  constructor(pool: pg.Pool) {
    this.#pool = pool
  }

  async insertThree(row: (name: string) => ItemRow): Promise<void> {
    await handTransaction(this.#pool, async (client) => {
      const { drizzleDb, kyselyDb } = this.#bind(client)
      await drizzleDb.insert(items).values(row('drizzle'))
      await kyselyDb.insertInto(TABLE).values(row('kysely')).execute()
      await this.#knex(TABLE).insert(row('knex')).connection(client)
    })
  }

  async close(): Promise<void> {
    await this.#knex.destroy()
  }

  #bind(client: pg.PoolClient): Bound {
    let bound = this.#bound.get(client)
    if (bound === undefined) {
      const borrowed: PostgresPoolClient = {
        query: client.query.bind(client),
        release: () => {},
      }
      const onePool: PostgresPool = { connect: () => Promise.resolve(borrowed), end: () => Promise.resolve() }
      bound = {
        drizzleDb: drizzle({ client }),
        kyselyDb: new Kysely<KyselyDatabase>({ dialect: new PostgresDialect({ pool: onePool }) }),
      }
      this.#bound.set(client, bound)
    }
    return bound
  }
}

interface Bound {
  readonly drizzleDb: NodePgDatabase
  readonly kyselyDb: Kysely<KyselyDatabase>
}
