import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { describe, expect, it } from 'vitest'
import { createRole, createTestDatabase, startFakeSecretsManager } from '../src/index.js'
import { adminUrl, testDatabase } from '../src/vitest.js'

async function query<T extends pg.QueryResultRow>(url: string, sql: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return (await client.query<T>(sql, values)).rows
  } finally {
    await client.end()
  }
}

const databaseExists = async (name: string): Promise<boolean> =>
  (await query(adminUrl(), 'SELECT 1 FROM pg_database WHERE datname = $1', [name])).length === 1
const roleExists = async (name: string): Promise<boolean> =>
  (await query(adminUrl(), 'SELECT 1 FROM pg_roles WHERE rolname = $1', [name])).length === 1
const uniqueRole = (label: string): string => `tk_${label}_${process.pid}_${randomBytes(3).toString('hex')}`

describe('createTestDatabase', () => {
  it('creates an isolated database that dispose drops, even with connections still open', async () => {
    const db = await createTestDatabase(adminUrl(), { prefix: 'tk' })
    expect(db.name).toMatch(new RegExp(`^tk_${process.pid}_\\d+_[0-9a-f]{8}$`))
    expect(await query(db.url, 'SELECT current_database() AS name')).toEqual([{ name: db.name }])

    await query(db.url, 'CREATE TABLE only_here (id int)')
    await using other = await testDatabase('tk')
    expect(await query(other.url, "SELECT to_regclass('only_here') AS t")).toEqual([{ t: null }])

    const lingering = new pg.Client({ connectionString: db.url })
    lingering.on('error', () => {})
    await lingering.connect()
    await db[Symbol.asyncDispose]()
    expect(await databaseExists(db.name)).toBe(false)
    await expect(lingering.query('SELECT 1')).rejects.toThrow()
    await lingering.end().catch(() => {})
    await db[Symbol.asyncDispose]() // idempotent
  })

  it('normalises prefixes into valid, unique, ≤63-byte identifiers', async () => {
    await using a = await createTestDatabase(adminUrl(), { prefix: 'Core-Pool.Tests' + 'x'.repeat(80) })
    await using b = await createTestDatabase(adminUrl(), { prefix: 'Core-Pool.Tests' + 'x'.repeat(80) })
    for (const db of [a, b]) {
      expect(db.name).toMatch(/^[a-z_][a-z0-9_]*$/)
      expect(db.name.length).toBeLessThanOrEqual(63)
      expect(await databaseExists(db.name)).toBe(true)
    }
    expect(a.name).not.toBe(b.name)
  })
})

describe('createRole', () => {
  it('creates a login role whose password is really checked', async () => {
    const user = uniqueRole('login')
    {
      await using role = await createRole(adminUrl(), user, "pa'ss%w@rd:/")
      await using db = await createTestDatabase(adminUrl(), { owner: role })

      expect(await query(db.urlFor(role.user, role.password), 'SELECT current_user AS u, current_database() AS d')).toEqual([
        { u: user, d: db.name },
      ])
      // Owner of the database ⇒ owner of schema public (PG ≥ 15), so it can create tables.
      await query(db.urlFor(role.user, role.password), 'CREATE TABLE mine (id int)')

      await expect(query(db.urlFor(role.user, 'wrong'), 'SELECT 1')).rejects.toMatchObject({ code: '28P01' })
      const [server] = await query<{ superuser: boolean }>(adminUrl(), 'SELECT rolsuper AS superuser FROM pg_roles WHERE rolname = $1', [user])
      expect(server?.superuser).toBe(false)
    }
    // Disposed in reverse order: the database first, then the role.
    expect(await roleExists(user)).toBe(false)
  })

  it('can create superusers', async () => {
    await using role = await createRole(adminUrl(), uniqueRole('super'), 'pw', { superuser: true })
    await using db = await testDatabase()
    expect(await query(db.urlFor(role.user, role.password), 'SELECT rolsuper AS s FROM pg_roles WHERE rolname = current_user')).toEqual([
      { s: true },
    ])
  })

  it('createTestDatabase creates a missing owner role and drops it again', async () => {
    const user = uniqueRole('owner')
    {
      await using db = await createTestDatabase(adminUrl(), { owner: { user, password: 'owner-pw' } })
      expect(await query(db.urlFor(user, 'owner-pw'), 'SELECT current_user AS u')).toEqual([{ u: user }])
    }
    expect(await roleExists(user)).toBe(false)
  })
})

// --- fake Secrets Manager against the real AWS SDK ----------------------------------------------------------

/** The subset of @aws-sdk/client-secrets-manager used here (the testkit does not depend on the SDK). */
interface SecretsManagerSdk {
  SecretsManagerClient: new (config: object) => { send(command: unknown): Promise<any>; destroy(): void }
  GetSecretValueCommand: new (input: { SecretId: string; VersionStage?: string }) => unknown
  CreateSecretCommand: new (input: { Name: string; SecretString: string }) => unknown
  PutSecretValueCommand: new (input: { SecretId: string; SecretString: string }) => unknown
  DescribeSecretCommand: new (input: { SecretId: string }) => unknown
  ResourceNotFoundException: new (...args: never[]) => Error
}

/**
 * pnpm keeps the SDK out of this package's node_modules (it is a devDependency of @hyperconn/core), so fall back
 * to resolving it the way core does rather than adding a dependency just for this smoke test.
 */
async function loadSdk(): Promise<SecretsManagerSdk | undefined> {
  const id = '@aws-sdk/client-secrets-manager'
  try {
    return (await import(/* @vite-ignore */ id)) as SecretsManagerSdk
  } catch {
    try {
      const resolved = createRequire(new URL('../../core/package.json', import.meta.url)).resolve(id)
      return (await import(/* @vite-ignore */ pathToFileURL(resolved).href)) as SecretsManagerSdk
    } catch {
      return undefined
    }
  }
}

const sdk = await loadSdk()
if (sdk === undefined) throw new Error('@aws-sdk/client-secrets-manager must be installed for the testkit tests')

describe('startFakeSecretsManager with @aws-sdk/client-secrets-manager', () => {
  const { SecretsManagerClient, GetSecretValueCommand, CreateSecretCommand, PutSecretValueCommand, DescribeSecretCommand } =
    sdk

  async function setup() {
    const fake = await startFakeSecretsManager()
    const client = new SecretsManagerClient({
      region: fake.region,
      endpoint: fake.endpoint,
      credentials: { accessKeyId: 'AKIDTEST', secretAccessKey: 'x' },
      maxAttempts: 1,
    })
    return {
      fake,
      client,
      get: (SecretId: string, VersionStage?: string) =>
        client.send(new GetSecretValueCommand(VersionStage === undefined ? { SecretId } : { SecretId, VersionStage })),
      async [Symbol.asyncDispose]() {
        client.destroy()
        await fake.close()
      },
    }
  }

  it('GetSecretValue returns the SecretString, signed with the given credentials', async () => {
    await using t = await setup()
    t.fake.setSecret('tenant/a', { username: 'app', password: 's3cret' })

    const out = await t.get('tenant/a')
    expect(JSON.parse(out.SecretString)).toEqual({ username: 'app', password: 's3cret' })
    expect(out).toMatchObject({ Name: 'tenant/a', VersionStages: ['AWSCURRENT'] })
    expect(out.ARN).toMatch(/^arn:aws:secretsmanager:us-east-1:\d{12}:secret:tenant\/a-[0-9a-f]{6}$/)
    expect(out.CreatedDate).toBeInstanceOf(Date)
    expect(out.$metadata).toMatchObject({ httpStatusCode: 200 })
    expect(out.$metadata.requestId).toEqual(expect.any(String))
    expect(t.fake.lastAuthorization).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIDTEST\/\d{8}\/us-east-1\/secretsmanager\/aws4_request,/)

    // By ARN too, as the real service accepts.
    expect((await t.get(out.ARN)).SecretString).toBe(out.SecretString)
  })

  it('maps errors to typed SDK exceptions with the HTTP status', async () => {
    await using t = await setup()
    t.fake.setSecret('s', 'v')

    const missing = await t.get('nope').catch((error: unknown) => error)
    expect(missing).toBeInstanceOf((sdk).ResourceNotFoundException)
    expect(missing).toMatchObject({
      name: 'ResourceNotFoundException',
      message: "Secrets Manager can't find the specified secret.",
      $fault: 'client',
      $metadata: { httpStatusCode: 400 },
    })

    await t.fake.setFault('throttle', { times: 1 })
    await expect(t.get('s')).rejects.toMatchObject({ name: 'ThrottlingException', message: 'Rate exceeded', $metadata: { httpStatusCode: 400 } })
    expect((await t.get('s')).SecretString).toBe('v') // times: 1 → back to normal

    await t.fake.setFault('error500')
    await expect(t.get('s')).rejects.toMatchObject({ name: 'InternalServiceError', $fault: 'server', $metadata: { httpStatusCode: 500 } })
    await expect(t.get('s')).rejects.toMatchObject({ name: 'InternalServiceError' }) // until changed

    await t.fake.setFault('accessDenied')
    await expect(t.get('s')).rejects.toMatchObject({ name: 'AccessDeniedException', $metadata: { httpStatusCode: 400 } })
    await t.fake.setFault('none')
    expect((await t.get('s')).SecretString).toBe('v')
  })

  it("'refuse' gives ECONNREFUSED and recovers on the same endpoint", async () => {
    await using t = await setup()
    t.fake.setSecret('s', 'v')
    expect((await t.get('s')).SecretString).toBe('v')
    const endpoint = t.fake.endpoint

    await t.fake.setFault('refuse')
    await expect(t.get('s')).rejects.toMatchObject({ code: 'ECONNREFUSED' })
    await expect(t.get('s')).rejects.toMatchObject({ code: 'ECONNREFUSED' })

    await t.fake.setFault('none')
    expect(t.fake.endpoint).toBe(endpoint)
    expect((await t.get('s')).SecretString).toBe('v')
  })

  it('counts calls, including failed ones, per secret and per operation', async () => {
    await using t = await setup()
    t.fake.setSecret('a', 'x')
    await t.get('a')
    await t.get('a')
    await t.get('missing').catch(() => {})
    await t.fake.setFault('throttle', { times: 1 })
    await t.get('a').catch(() => {})

    expect(t.fake.getSecretValueCalls('a')).toBe(3)
    expect(t.fake.getSecretValueCalls('missing')).toBe(1)
    expect(t.fake.getSecretValueCalls()).toBe(4)
    expect(t.fake.calls('GetSecretValue')).toBe(4)
    expect(t.fake.calls('DescribeSecret')).toBe(0)

    t.fake.resetCounters()
    expect(t.fake.getSecretValueCalls()).toBe(0)
    expect(t.fake.calls('GetSecretValue')).toBe(0)
  })

  it('supports CreateSecret, PutSecretValue (rotation to AWSPREVIOUS) and DescribeSecret', async () => {
    await using t = await setup()
    const created = await t.client.send(new CreateSecretCommand({ Name: 'db/main', SecretString: 'v1' }))
    expect(created).toMatchObject({ Name: 'db/main', VersionId: expect.any(String) })
    await expect(t.client.send(new CreateSecretCommand({ Name: 'db/main', SecretString: 'again' }))).rejects.toMatchObject({
      name: 'ResourceExistsException',
    })

    const put = await t.client.send(new PutSecretValueCommand({ SecretId: 'db/main', SecretString: 'v2' }))
    expect((await t.get('db/main')).SecretString).toBe('v2')
    expect((await t.get('db/main', 'AWSPREVIOUS')).SecretString).toBe('v1')
    await expect(t.get('db/main', 'AWSPENDING')).rejects.toMatchObject({ name: 'ResourceNotFoundException' })

    const described = await t.client.send(new DescribeSecretCommand({ SecretId: 'db/main' }))
    expect(described.VersionIdsToStages).toEqual({ [put.VersionId]: ['AWSCURRENT'], [created.VersionId]: ['AWSPREVIOUS'] })
    expect(described.LastChangedDate).toBeInstanceOf(Date)

    t.fake.deleteSecret('db/main')
    await expect(t.get('db/main')).rejects.toMatchObject({ name: 'ResourceNotFoundException' })
    expect(t.fake.calls('CreateSecret')).toBe(2)
    expect(t.fake.calls('PutSecretValue')).toBe(1)
  })
})
