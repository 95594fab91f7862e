import { eq } from 'drizzle-orm'
import { drizzle } from 'drizzle-orm/node-postgres'
import type { NodePgDatabase } from 'drizzle-orm/node-postgres'
import knexFactory from 'knex'
import type { Knex } from 'knex'
import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import type { Registry } from '@hyperconn/core'
import { createDrizzleAdapter } from '@hyperconn/drizzle'
import { createKnexAdapter } from '@hyperconn/knex'
import { createKyselyAdapter } from '@hyperconn/kysely'
import { SERVICE } from './bench-env.js'
import { drizzleSchema, items, TABLE } from './bench-schema.js'
import type { KyselyDatabase } from './bench-schema.js'
import { poolOptions } from './ours-registry.js'

export interface ItemRow {
  readonly org: string
  readonly name: string
  readonly n: number
}

/**
 * The two statements of scenario 2, written the idiomatic way for one ORM. Builders are thenables,
 * not Promises: callers `await` them (mitata only awaits real Promises).
 */
export interface OrmQueries {
  selectById(id: number): PromiseLike<unknown>
  insert(row: ItemRow): PromiseLike<unknown>
}

export type OrmName = 'Drizzle' | 'Kysely' | 'Knex'
export const ORMS: readonly OrmName[] = ['Drizzle', 'Kysely', 'Knex']

type DrizzleDb = NodePgDatabase<typeof drizzleSchema>

const drizzleQueries = (db: () => DrizzleDb): OrmQueries => ({
  selectById: (id) => db().select().from(items).where(eq(items.id, id)),
  insert: (row) => db().insert(items).values(row),
})

const kyselyQueries = (db: () => Kysely<KyselyDatabase>): OrmQueries => ({
  selectById: (id) => db().selectFrom(TABLE).selectAll().where('id', '=', id).execute(),
  insert: (row) => db().insertInto(TABLE).values(row).execute(),
})

const knexQueries = (db: () => Knex): OrmQueries => ({
  selectById: (id) => db()(TABLE).select('*').where('id', id),
  insert: (row) => db()(TABLE).insert(row),
})

/** Our three adapters on one registry; `getDb(orgId)` is called per query, as request handlers do. */
export class AdapterClients {
  readonly drizzle: (orgId: string) => DrizzleDb
  readonly kysely: (orgId: string) => Kysely<KyselyDatabase>
  readonly knex: (orgId: string) => Knex

  constructor(registry: Registry) {
    const drizzleAdapter = createDrizzleAdapter(registry, { service: SERVICE, schema: drizzleSchema })
    const kyselyAdapter = createKyselyAdapter<KyselyDatabase>(registry, { service: SERVICE })
    const knexAdapter = createKnexAdapter(registry, { service: SERVICE })
    this.drizzle = (orgId) => drizzleAdapter.getDb(orgId)
    this.kysely = (orgId) => kyselyAdapter.getDb(orgId)
    this.knex = (orgId) => knexAdapter.getDb(orgId)
  }

  queries(orm: OrmName, orgId: string): OrmQueries {
    switch (orm) {
      case 'Drizzle':
        return drizzleQueries(() => this.drizzle(orgId))
      case 'Kysely':
        return kyselyQueries(() => this.kysely(orgId))
      case 'Knex':
        return knexQueries(() => this.knex(orgId))
    }
  }
}

/**
 * The baseline: each ORM bound straight to the same database the way its docs show — Drizzle and
 * Kysely on a pg.Pool with the registry's pool settings, Knex on its own pg driver and pool of the
 * same size (knex cannot take a pg.Pool).
 */
export class BareClients {
  readonly pool: pg.Pool
  readonly #drizzle: DrizzleDb
  readonly #kysely: Kysely<KyselyDatabase>
  readonly #knex: Knex

  constructor(url: string, poolMax: number) {
    const options = poolOptions(poolMax)
    this.pool = new pg.Pool({ connectionString: url, ...options })
    this.pool.on('error', () => {})
    this.#drizzle = drizzle({ client: this.pool, schema: drizzleSchema })
    this.#kysely = new Kysely<KyselyDatabase>({ dialect: new PostgresDialect({ pool: this.pool }) })
    this.#knex = knexFactory({
      client: 'pg',
      // As @hyperconn/knex does by default: knex then skips its `select version()` per new connection.
      version: '14.0',
      connection: url,
      pool: { min: 0, max: poolMax, idleTimeoutMillis: options.idleTimeoutMillis ?? 30_000 },
    })
  }

  queries(orm: OrmName): OrmQueries {
    switch (orm) {
      case 'Drizzle':
        return drizzleQueries(() => this.#drizzle)
      case 'Kysely':
        return kyselyQueries(() => this.#kysely)
      case 'Knex':
        return knexQueries(() => this.#knex)
    }
  }

  async close(): Promise<void> {
    await this.#knex.destroy()
    await this.pool.end()
  }
}
