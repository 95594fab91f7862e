import { createRegistry, staticSecrets } from '@hyperconn/core'
import type { IsolationLevel, LifecycleHooks, Registry, TelemetryOptions, Tenant } from '@hyperconn/core'
import { createDrizzleAdapter } from '@hyperconn/drizzle'
import type { DrizzleTransaction } from '@hyperconn/drizzle'
import { createKnexAdapter } from '@hyperconn/knex'
import { createKyselyAdapter } from '@hyperconn/kysely'
import type { TestDatabase } from '@hyperconn/testkit'
import { testDatabase } from '@hyperconn/testkit/vitest'
import { sql as drizzleSql } from 'drizzle-orm'
import type { NodePgDatabase } from 'drizzle-orm/node-postgres'
import type { Knex } from 'knex'
import { sql as kyselySql } from 'kysely'
import type { Kysely, Transaction } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll } from 'vitest'
import { CREATE_TABLES, items, schema } from './schema.js'
import type { ItemRow, KyselyDatabase, Schema, Stamp } from './schema.js'

export type { Stamp } from './schema.js'

/** The three ORMs, plus core's own `tenant.query`, as ways to run a statement. */
export const ORMS = ['drizzle', 'kysely', 'knex'] as const
export type Orm = (typeof ORMS)[number]
export type Via = Orm | 'core'
export const VIAS: readonly Via[] = ['core', ...ORMS]

/** The four transaction entry points. */
export const ENTRY_POINTS = ['core', 'drizzle', 'kysely', 'knex'] as const
export type EntryPoint = (typeof ENTRY_POINTS)[number]

/** What one statement saw: backend, top-level transaction, database. (A type alias: Drizzle's execute() wants a Record.) */
export type WhereAmI = {
  pid: number
  txid: string
  database: string
}

export interface TxOptions {
  isolationLevel?: IsolationLevel
  readOnly?: boolean
}

export const WHERE_AM_I = 'SELECT pg_backend_pid() AS pid, txid_current()::text AS txid, current_database() AS database'

/**
 * The transaction object an entry point hands to its callback (Drizzle `tx`, Kysely `trx`, Knex `trx`;
 * core has none, so `tenant.query`), with the ORM's own way to open a savepoint from it.
 */
export interface NativeTx {
  readonly entry: EntryPoint
  insert(label: string): Promise<Stamp>
  whereAmI(): Promise<WhereAmI>
  /** Drizzle `tx.transaction`, Kysely `trx.transaction().execute`, Knex `trx.transaction`, core `nested`. */
  savepoint<T>(fn: (inner: NativeTx) => Promise<T>): Promise<T>
}

/** One org: its tenant handle and the three adapters' databases from `getDb(orgId)`. */
export class TenantOrms {
  readonly tenant: Tenant

  constructor(
    readonly orgId: string,
    readonly database: TestDatabase,
    readonly admin: pg.Client,
    readonly registry: Registry,
    private readonly adapters: Adapters,
  ) {
    this.tenant = registry.tenant(orgId, 'core')
  }

  get drizzle(): NodePgDatabase<Schema> {
    return this.adapters.drizzle.getDb(this.orgId)
  }

  get kysely(): Kysely<KyselyDatabase> {
    return this.adapters.kysely.getDb(this.orgId)
  }

  get knex(): Knex {
    return this.adapters.knex.getDb(this.orgId)
  }

  /** An insert through `getDb(orgId)` of one ORM (or `tenant.query`): joins whatever the async context holds. */
  insert(via: Via, label: string): Promise<Stamp> {
    switch (via) {
      case 'core':
        return insertCore(this.tenant, label)
      case 'drizzle':
        return insertDrizzle(this.drizzle, label)
      case 'kysely':
        return insertKysely(this.kysely, label)
      case 'knex':
        return insertKnex(this.knex, label)
    }
  }

  whereAmI(via: Via): Promise<WhereAmI> {
    switch (via) {
      case 'core':
        return firstRow(this.tenant.query<WhereAmI>(WHERE_AM_I))
      case 'drizzle':
        return firstRow(this.drizzle.execute<WhereAmI>(drizzleSql.raw(WHERE_AM_I)))
      case 'kysely':
        return firstRow(kyselySql.raw<WhereAmI>(WHERE_AM_I).execute(this.kysely))
      case 'knex':
        return firstRow(this.knex.raw<pg.QueryResult<WhereAmI>>(WHERE_AM_I))
    }
  }

  /** `SHOW transaction_isolation` and `SHOW transaction_read_only` through one ORM. */
  async show(via: Via): Promise<{ isolation: string; readOnly: string }> {
    const isolation = await this.#show(via, 'transaction_isolation')
    const readOnly = await this.#show(via, 'transaction_read_only')
    return { isolation, readOnly }
  }

  async #show(via: Via, setting: string): Promise<string> {
    const text = `SHOW ${setting}`
    const row = await (via === 'core'
      ? firstRow(this.tenant.query<Record<string, string>>(text))
      : via === 'drizzle'
        ? firstRow(this.drizzle.execute<Record<string, string>>(drizzleSql.raw(text)))
        : via === 'kysely'
          ? firstRow(kyselySql.raw<Record<string, string>>(text).execute(this.kysely))
          : firstRow(this.knex.raw<pg.QueryResult<Record<string, string>>>(text)))
    return String(row[setting])
  }

  /**
   * Runs `fn` in a transaction opened by one entry point: core `tenant.transaction`, Drizzle
   * `db.transaction`, Kysely `db.transaction().execute`, Knex `db.transaction`. Options are mapped to
   * each ORM's own spelling (Drizzle accessMode, Kysely setAccessMode, Knex readOnly).
   */
  transaction<T>(entry: EntryPoint, fn: (native: NativeTx) => Promise<T>, options: TxOptions = {}): Promise<T> {
    switch (entry) {
      case 'core':
        return this.tenant.transaction(() => fn(this.#coreTx()), options)
      case 'drizzle': {
        const config: { isolationLevel?: IsolationLevel; accessMode?: 'read only' | 'read write' } = {}
        if (options.isolationLevel !== undefined) config.isolationLevel = options.isolationLevel
        if (options.readOnly !== undefined) config.accessMode = options.readOnly ? 'read only' : 'read write'
        return this.drizzle.transaction((tx) => fn(drizzleTx(tx)), config)
      }
      case 'kysely': {
        let builder = this.kysely.transaction()
        if (options.isolationLevel !== undefined) builder = builder.setIsolationLevel(options.isolationLevel)
        if (options.readOnly !== undefined) builder = builder.setAccessMode(options.readOnly ? 'read only' : 'read write')
        return builder.execute((trx) => fn(kyselyTx(trx)))
      }
      case 'knex': {
        const config: Knex.TransactionConfig = {}
        if (options.isolationLevel !== undefined) config.isolationLevel = options.isolationLevel
        if (options.readOnly !== undefined) config.readOnly = options.readOnly
        return this.knex.transaction((trx) => fn(knexTx(trx)), config)
      }
    }
  }

  #coreTx(): NativeTx {
    const tenant = this.tenant
    const native: NativeTx = {
      entry: 'core',
      insert: (label) => insertCore(tenant, label),
      whereAmI: () => firstRow(tenant.query<WhereAmI>(WHERE_AM_I)),
      savepoint: (fn) => tenant.transaction(() => fn(native), { propagation: 'nested' }),
    }
    return native
  }

  /** Every row of this org's database, in insertion order, read from outside the registry. */
  async rows(): Promise<ItemRow[]> {
    return (await this.admin.query<ItemRow>('SELECT id, orm, label, pid, txid, database FROM items ORDER BY id')).rows
  }

  /** Committed labels, in insertion order. */
  async labels(): Promise<string[]> {
    return (await this.rows()).map((r) => r.label)
  }

  /** The registry's view of this org's physical pool (its own database), or undefined before it exists. */
  poolStats(): { totalCount: number; idleCount: number; waitingCount: number; checkedOut: number } | undefined {
    const stats = this.registry.stats()
    const pool = stats.pools.list.find((p) => !p.draining && p.name.includes(`/${this.database.name}@`))
    if (pool === undefined) return undefined
    const tenant = stats.tenants.active.find((t) => t.orgId === this.orgId)
    return { totalCount: pool.total, idleCount: pool.idle, waitingCount: tenant?.waiting ?? 0, checkedOut: pool.checkedOut }
  }
}

interface Adapters {
  drizzle: ReturnType<typeof createDrizzleAdapter<Schema>>
  kysely: ReturnType<typeof createKyselyAdapter<KyselyDatabase>>
  knex: ReturnType<typeof createKnexAdapter>
}

function only<R>(rows: readonly R[]): R {
  const row = rows[0]
  if (row === undefined) throw new Error('expected a row')
  return row
}

async function firstRow<R>(result: Promise<{ rows: R[] }>): Promise<R> {
  return only((await result).rows)
}

const RETURNING = 'RETURNING id, pid, txid, database'

function insertCore(tenant: Pick<Tenant, 'query'>, label: string): Promise<Stamp> {
  return firstRow(tenant.query<Stamp>(`INSERT INTO items (orm, label) VALUES ('core', $1) ${RETURNING}`, [label]))
}

type DrizzleDb = NodePgDatabase<Schema> | DrizzleTransaction<Schema>

async function insertDrizzle(db: DrizzleDb, label: string): Promise<Stamp> {
  return only(
    await db
      .insert(items)
      .values({ orm: 'drizzle', label })
      .returning({ id: items.id, pid: items.pid, txid: items.txid, database: items.database }),
  )
}

async function insertKysely(db: Kysely<KyselyDatabase>, label: string): Promise<Stamp> {
  return db
    .insertInto('items')
    .values({ orm: 'kysely', label })
    .returning(['id', 'pid', 'txid', 'database'])
    .executeTakeFirstOrThrow()
}

async function insertKnex(db: Knex, label: string): Promise<Stamp> {
  return only(await db('items').insert({ orm: 'knex', label }).returning<Stamp[]>(['id', 'pid', 'txid', 'database']))
}

function drizzleTx(tx: DrizzleTransaction<Schema>): NativeTx {
  return {
    entry: 'drizzle',
    insert: (label) => insertDrizzle(tx, label),
    whereAmI: () => firstRow(tx.execute<WhereAmI>(drizzleSql.raw(WHERE_AM_I))),
    savepoint: (fn) => tx.transaction((inner) => fn(drizzleTx(inner))),
  }
}

function kyselyTx(trx: Transaction<KyselyDatabase>): NativeTx {
  return {
    entry: 'kysely',
    insert: (label) => insertKysely(trx, label),
    whereAmI: () => firstRow(kyselySql.raw<WhereAmI>(WHERE_AM_I).execute(trx)),
    savepoint: (fn) => trx.transaction().execute((inner) => fn(kyselyTx(inner))),
  }
}

function knexTx(trx: Knex.Transaction): NativeTx {
  return {
    entry: 'knex',
    insert: (label) => insertKnex(trx, label),
    whereAmI: () => firstRow(trx.raw<pg.QueryResult<WhereAmI>>(WHERE_AM_I)),
    savepoint: (fn) => trx.transaction((inner) => fn(knexTx(inner))),
  }
}

export interface CrossOrmOptions {
  /** Passed to every tenant pool. Default max 4. */
  pool?: { max?: number }
  /** connections.max of the registry. Default 24. */
  connections?: number
  /** Lifecycle hooks of the registry. */
  hooks?: LifecycleHooks
  /** The registry's telemetry option. */
  telemetry?: boolean | TelemetryOptions
}

export interface CrossOrm extends AsyncDisposable {
  readonly registry: Registry
  readonly orgs: readonly TenantOrms[]
  /** The first org (most tests need one). */
  readonly org: TenantOrms
}

export interface CrossOrmDatabases {
  /**
   * Empties the tables, then builds a registry over the databases (secret `x-orgN` holds
   * `core-postgresql` → the N-th database) with one Drizzle, Kysely and Knex adapter on it.
   * `await using` closes the registry.
   */
  open(options?: CrossOrmOptions): Promise<CrossOrm>
}

/**
 * This file's databases, one per org, each with the `items` table: created before its tests, dropped
 * after them. Every test opens its own registry and adapters on them with `open()`.
 */
export function crossOrmDatabases(tenants = 1, prefix = 'xorm'): CrossOrmDatabases {
  const databases: TestDatabase[] = []
  const admins: pg.Client[] = []
  beforeAll(async () => {
    // Created concurrently: the 20-tenant file would otherwise spend seconds on CREATE DATABASE alone.
    databases.push(...(await Promise.all(Array.from({ length: tenants }, () => testDatabase(prefix)))))
    for (const database of databases) {
      const admin = new pg.Client({ connectionString: database.url })
      // The backend-kill tests must not take the observer down with them.
      admin.on('error', () => {})
      await admin.connect()
      admins.push(admin)
      await admin.query(CREATE_TABLES)
    }
  })
  afterAll(async () => {
    await Promise.all(admins.map((admin) => admin.end()))
    await Promise.all(databases.map((database) => database[Symbol.asyncDispose]()))
  })
  return {
    async open(options = {}) {
      await Promise.all(admins.map((admin) => admin.query('TRUNCATE items RESTART IDENTITY')))
      const secrets: Record<string, Record<string, string>> = {}
      databases.forEach((database, i) => {
        secrets[`x-org${i + 1}`] = { 'core-postgresql': database.url }
      })
      const registry = createRegistry({
        project: 'x',
        services: ['core'],
        secrets: staticSecrets(secrets),
        pool: { max: options.pool?.max ?? 4 },
        // Test files run two at a time against one server with max_connections 100.
        connections: { max: options.connections ?? 24 },
        ...(options.hooks === undefined ? {} : { hooks: options.hooks }),
        ...(options.telemetry === undefined ? {} : { telemetry: options.telemetry }),
      })
      const adapters: Adapters = {
        drizzle: createDrizzleAdapter(registry, { service: 'core', schema }),
        kysely: createKyselyAdapter<KyselyDatabase>(registry, { service: 'core' }),
        knex: createKnexAdapter(registry, { service: 'core' }),
      }
      const orgs = databases.map((database, i) => new TenantOrms(`org${i + 1}`, database, admins[i] as pg.Client, registry, adapters))
      return {
        registry,
        orgs,
        org: orgs[0] as TenantOrms,
        [Symbol.asyncDispose]: () => registry.close(),
      }
    },
  }
}
