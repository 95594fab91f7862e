/**
 * RDS IAM auth end to end: PostgreSQL accepts exactly the token the provider hands out. There is no
 * RDS here, so the role's password is set to the token the real @aws-sdk/rds-signer made (offline,
 * with fake static credentials) for this server's host, port and user; a plain pg client then
 * connects with `password: () => auth.password(...)`, as the registry does per new connection.
 */
import { randomBytes } from 'node:crypto'
import { inspect } from 'node:util'
import { connectClient, createRole } from '@hyperconn/testkit'
import { testDatabase } from '@hyperconn/testkit/vitest'
import pg from 'pg'
import { describe, expect, it } from 'vitest'
import { rdsIamAuth } from '../src/secrets/rds-iam-auth.js'

const CREDENTIALS = Object.freeze({ accessKeyId: 'AKIDRDSIAME2E', secretAccessKey: 'sk-Marker-E2e-rds-iam-secret' })

async function connectWith(url: string, user: string, password: string | (() => Promise<string>)): Promise<pg.Client> {
  const { hostname, port, pathname } = new URL(url)
  const client = new pg.Client({ host: hostname, port: Number(port), database: decodeURIComponent(pathname.slice(1)), user, password })
  client.on('error', () => {})
  await client.connect()
  return client
}

describe('rdsIamAuth against PostgreSQL', () => {
  it('PostgreSQL accepts the token the provider hands out, for every new connection', async () => {
    await using db = await testDatabase('rdsiam')
    const user = `iam_${randomBytes(4).toString('hex')}`
    await using _role = await createRole(db.url, user, randomBytes(12).toString('hex'))
    const { hostname, port } = new URL(db.url)
    const endpoint = { host: hostname, port: Number(port), user }

    const auth = rdsIamAuth({ region: 'eu-west-1', credentials: CREDENTIALS })
    const token = await auth.password(endpoint)
    expect(token.startsWith(`${hostname}:${port}/?Action=connect&DBUser=${user}&X-Amz-`)).toBe(true)

    {
      await using admin = await connectClient(db.url)
      // ALTER ROLE takes no bind parameters: the token goes in as an escaped literal.
      await admin.query(`ALTER ROLE ${pg.escapeIdentifier(user)} PASSWORD ${pg.escapeLiteral(token)}`)
    }

    const outputs: string[] = []
    const clients: pg.Client[] = []
    try {
      for (let i = 0; i < 3; i++) {
        const client = await connectWith(db.url, user, () => auth.password(endpoint))
        clients.push(client)
        const { rows } = await client.query<{ one: number; who: string }>('SELECT 1 AS one, current_user AS who')
        expect(rows).toEqual([{ one: 1, who: user }])
      }
      // a token for another port (another endpoint) is another password: refused
      const other = await rdsIamAuth({ region: 'eu-west-1', credentials: CREDENTIALS }).password({ ...endpoint, port: endpoint.port + 1 })
      expect(other).not.toBe(token)
      const refused = await connectWith(db.url, user, other).then(
        async (client) => {
          await client.end()
          return undefined
        },
        (error: unknown) => error as Error & { code?: string },
      )
      expect(refused?.code).toBe('28P01')
      outputs.push(refused?.message ?? '', inspect(refused))
    } finally {
      for (const client of clients) await client.end()
    }

    outputs.push(JSON.stringify(auth), inspect(auth, { showHidden: true, depth: 10 }))
    const signature = new URLSearchParams(token.slice(token.indexOf('?') + 1)).get('X-Amz-Signature') ?? ''
    expect(signature).toMatch(/^[0-9a-f]{64}$/)
    for (const text of outputs) {
      expect(text).not.toContain(signature)
      expect(text).not.toContain(CREDENTIALS.secretAccessKey)
    }
  })
})
