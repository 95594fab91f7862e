import { randomBytes } from 'node:crypto'
import pg from 'pg'

export interface TestDatabase extends AsyncDisposable {
  readonly name: string
  /** Admin credentials, this database. */
  readonly url: string
  /** Same server and database, other credentials. */
  urlFor(user: string, password: string): string
}

export interface CreateTestDatabaseOptions {
  /** Name prefix; lower-cased, characters outside [a-z0-9_] become `_`. Default `hc`. */
  prefix?: string
  /**
   * Owner of the new database (in PG ≥ 15 that also makes it owner of schema `public`). Created as a LOGIN
   * role with this password when it does not exist yet, and then dropped again on dispose; an existing role
   * (e.g. from createRole) is used as is.
   */
  owner?: { user: string; password: string }
}

export interface CreateRoleOptions {
  superuser?: boolean
}

export interface TestRole extends AsyncDisposable {
  readonly user: string
  readonly password: string
}

const MAX_IDENTIFIER_BYTES = 63
let databaseCounter = 0

export async function createTestDatabase(
  adminUrl: string,
  options: CreateTestDatabaseOptions = {},
): Promise<TestDatabase> {
  const name = uniqueDatabaseName(options.prefix ?? 'hc')
  const owner = options.owner
  let createdOwner = false
  await withAdminClient(adminUrl, async (client) => {
    if (owner !== undefined) createdOwner = await ensureRole(client, owner.user, owner.password)
    try {
      const ownerClause = owner === undefined ? '' : ` OWNER ${pg.escapeIdentifier(owner.user)}`
      await client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}${ownerClause}`)
    } catch (error) {
      if (createdOwner && owner !== undefined) await dropRole(client, owner.user)
      throw error
    }
  })
  return new DisposableDatabase(adminUrl, name, createdOwner ? owner?.user : undefined)
}

export async function createRole(
  adminUrl: string,
  user: string,
  password: string,
  options: CreateRoleOptions = {},
): Promise<TestRole> {
  await withAdminClient(adminUrl, (client) => client.query(createRoleSql(user, password, options.superuser === true)))
  let dropping: Promise<void> | undefined
  return {
    user,
    password,
    [Symbol.asyncDispose]() {
      dropping ??= withAdminClient(adminUrl, (client) => dropRole(client, user))
      return dropping
    },
  }
}

class DisposableDatabase implements TestDatabase {
  readonly name: string
  readonly url: string
  readonly #adminUrl: string
  readonly #ownerToDrop: string | undefined
  #dropping: Promise<void> | undefined

  constructor(adminUrl: string, name: string, ownerToDrop: string | undefined) {
    this.#adminUrl = adminUrl
    this.name = name
    this.#ownerToDrop = ownerToDrop
    this.url = withDatabase(adminUrl, name)
  }

  urlFor(user: string, password: string): string {
    const url = new URL(this.url)
    // Pre-encoded: the URL setters leave '%' alone, which pg would then mis-decode.
    url.username = encodeURIComponent(user)
    url.password = encodeURIComponent(password)
    return url.toString()
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.#dropping ??= withAdminClient(this.#adminUrl, async (client) => {
      // FORCE: pools under test may still hold connections; they get terminated rather than failing the drop.
      await client.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(this.name)} WITH (FORCE)`)
      if (this.#ownerToDrop !== undefined) await dropRole(client, this.#ownerToDrop)
    })
    return this.#dropping
  }
}

function uniqueDatabaseName(prefix: string): string {
  const cleaned = prefix.toLowerCase().replace(/[^a-z0-9_]/g, '_')
  const head = /^[a-z_]/.test(cleaned) ? cleaned : `_${cleaned}`
  // pid + counter: unique across parallel vitest workers and within one; random: unique across reruns that crashed.
  const suffix = `_${process.pid}_${++databaseCounter}_${randomBytes(4).toString('hex')}`
  return head.slice(0, MAX_IDENTIFIER_BYTES - suffix.length) + suffix
}

function withDatabase(serverUrl: string, database: string): string {
  const url = new URL(serverUrl)
  url.pathname = `/${encodeURIComponent(database)}`
  return url.toString()
}

// CREATE ROLE is a utility statement: no bind parameters, so the password goes in as an escaped literal.
function createRoleSql(user: string, password: string, superuser: boolean): string {
  return `CREATE ROLE ${pg.escapeIdentifier(user)} LOGIN${superuser ? ' SUPERUSER' : ''} PASSWORD ${pg.escapeLiteral(password)}`
}

/** Creates the role unless it exists; returns whether this call created it. */
async function ensureRole(client: pg.Client, user: string, password: string): Promise<boolean> {
  const existing = await client.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [user])
  if (existing.rowCount !== 0) return false
  try {
    await client.query(createRoleSql(user, password, false))
    return true
  } catch (error) {
    // Another test file created it concurrently: fine, it is theirs to drop.
    if (errorCode(error) === DUPLICATE_OBJECT || errorCode(error) === UNIQUE_VIOLATION) return false
    throw error
  }
}

const DUPLICATE_OBJECT = '42710'
const UNIQUE_VIOLATION = '23505'
const UNDEFINED_OBJECT = '42704'
const DEPENDENT_OBJECTS_STILL_EXIST = '2BP01'

/**
 * Objects and grants in the admin database are dropped with the role; if it still owns a database or
 * objects in another one that lives on, the role stays (it is harmless in a throwaway cluster).
 */
async function dropRole(client: pg.Client, user: string): Promise<void> {
  const role = pg.escapeIdentifier(user)
  try {
    await client.query(`DROP OWNED BY ${role}`)
    await client.query(`DROP ROLE IF EXISTS ${role}`)
  } catch (error) {
    const code = errorCode(error)
    if (code !== UNDEFINED_OBJECT && code !== DEPENDENT_OBJECTS_STILL_EXIST) throw error
  }
}

function errorCode(error: unknown): unknown {
  return typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined
}

async function withAdminClient<T>(adminUrl: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: adminUrl })
  // A server going away mid-call surfaces through the query promise; without a listener it would crash the process.
  client.on('error', () => {})
  await client.connect()
  try {
    return await work(client)
  } finally {
    await client.end().catch(() => {})
  }
}

/**
 * A plain pg connection outside any registry, to look at what other sessions see. Its `error` event is
 * absorbed (tests kill backends on purpose); `await using` ends it.
 */
export async function connectClient(url: string): Promise<pg.Client & AsyncDisposable> {
  const client = new pg.Client({ connectionString: url })
  client.on('error', () => {})
  await client.connect()
  return Object.assign(client, { [Symbol.asyncDispose]: () => client.end() })
}

/**
 * Sends three queries at once on one plain pg client and resolves with the warning pg emits for it
 * (pg 8.23 deprecates concurrent client.query). Control for tests that assert no such warning.
 */
export async function concurrentQueryWarning(url: string): Promise<Error> {
  await using client = await connectClient(url)
  const warned = new Promise<Error>((resolve) => process.once('warning', resolve))
  await Promise.all([client.query('SELECT 1'), client.query('SELECT 2'), client.query('SELECT 3')])
  return warned
}
