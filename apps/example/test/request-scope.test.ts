import { createRegistry, staticSecrets } from '@hyperconn/core'
import type { Registry, RegistryEvents } from '@hyperconn/core'
import type { TestDatabase } from '@hyperconn/testkit'
import { testDatabase } from '@hyperconn/testkit/vitest'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { createHttpServer } from '../src/http-server.js'
import type { ShopService } from '../src/shop-service.js'

// Every request runs in registry.scope() (src/http-server.ts): a connection its handler leaves checked
// out is destroyed and reported when the request ends. The shop service is a stand-in whose handlers
// acquire connections directly, to leave one behind on purpose.

let db: TestDatabase
let registry: Registry
let http: FastifyInstance
const leaks: RegistryEvents['connection:leak'][] = []

beforeAll(async () => {
  db = await testDatabase('scope')
  registry = createRegistry({
    project: 'scope',
    services: ['shop'],
    secrets: staticSecrets({ 'scope-acme': { 'shop-postgresql': db.url } }),
  })
  registry.on('connection:leak', (event) => void leaks.push(event))
  const shop = {
    assertTenantId: () => {},
    // Forgets to release the connection it acquired.
    listOrders: async (orgId: string) => {
      const conn = await registry.tenant(orgId).acquire()
      await conn.query('SELECT 1')
      return []
    },
    // Releases it at the end of the block.
    listStock: async (orgId: string) => {
      await using conn = await registry.tenant(orgId).acquire()
      await conn.query('SELECT 1')
      return []
    },
    // Fails with the connection still held.
    listAudit: async (orgId: string) => {
      await registry.tenant(orgId).acquire()
      throw new Error('boom')
    },
  } as unknown as ShopService
  http = createHttpServer({ shop, registry, logger: false })
  await http.ready()
})

afterAll(async () => {
  await http?.close()
  await registry?.close()
  await db?.[Symbol.asyncDispose]()
})

beforeEach(() => {
  leaks.length = 0
})

const get = (url: string) => http.inject({ method: 'GET', url, headers: { 'x-org-id': 'acme' } })

describe('each request runs in registry.scope()', () => {
  it('a connection a handler leaves checked out is destroyed and reported when the request ends', async () => {
    const before = registry.stats().leaks
    const response = await get('/orders')
    expect(response.statusCode).toBe(200)
    await expect.poll(() => leaks.length).toBe(1)
    expect(leaks[0]).toMatchObject({ service: 'shop', orgId: 'acme', reason: 'scope', destroyed: true })
    expect(registry.stats().leaks).toBe(before + 1)
    expect(registry.stats().connections.checkedOut).toBe(0)
  })

  it('also when the handler fails: the error is answered as usual', async () => {
    const response = await get('/audit')
    expect(response.statusCode).toBe(500)
    await expect.poll(() => leaks.length).toBe(1)
    expect(leaks[0]).toMatchObject({ reason: 'scope', destroyed: true })
    expect(registry.stats().connections.checkedOut).toBe(0)
  })

  it('a handler that releases its connection reports nothing', async () => {
    for (let i = 0; i < 3; i++) expect((await get('/stock')).statusCode).toBe(200)
    expect(leaks).toEqual([])
    expect(registry.stats().connections.checkedOut).toBe(0)
  })
})
