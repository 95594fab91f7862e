import Fastify from 'fastify'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Registry } from '@hyperconn/core'
import { toHttpError } from './http-errors.js'
import { PROMETHEUS_CONTENT_TYPE } from './shop-telemetry.js'
import type { NewReview } from './reviews-repository.js'
import type { PlaceOrderInput, ShopService } from './shop-service.js'
import { orgIdFromHeaders } from './tenant-header.js'

export interface HttpServerOptions {
  shop: ShopService
  registry: Registry
  /** `GET /metrics`: the current metrics in Prometheus' text format. No such route without it. */
  metrics?: () => Promise<string>
  /** Fastify's pino logger: true in the long-running server, off in the demo and tests. */
  logger: boolean
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** false: the handler does not run in registry.scope() (probes and metrics: they check out no connection). */
    scoped?: boolean
  }
}

/** Probes and metrics answer even when the registry cannot (closed, servers unreachable): no scope around them. */
const UNSCOPED = { config: { scoped: false } } as const

const SKU = { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,63}$' } as const

const placeOrderSchema = {
  body: {
    type: 'object',
    required: ['customer', 'items'],
    additionalProperties: false,
    properties: {
      customer: { type: 'string', minLength: 1, maxLength: 200 },
      items: {
        type: 'array',
        minItems: 1,
        maxItems: 50,
        items: {
          type: 'object',
          required: ['sku', 'quantity'],
          additionalProperties: false,
          properties: { sku: SKU, quantity: { type: 'integer', minimum: 1, maximum: 10_000 } },
        },
      },
    },
  },
} as const

// No tenant field: a review belongs to the x-org-id that sent it (the database fills tenant_id in).
const addReviewSchema = {
  body: {
    type: 'object',
    required: ['sku', 'stars', 'body'],
    additionalProperties: false,
    properties: {
      sku: SKU,
      stars: { type: 'integer', minimum: 1, maximum: 5 },
      body: { type: 'string', minLength: 1, maxLength: 2_000 },
    },
  },
} as const

/** HTTP only: reads the tenant, calls the shop service, maps errors. */
export function createHttpServer(options: HttpServerOptions): FastifyInstance {
  const { shop, registry } = options
  const app = Fastify({ logger: options.logger })

  /** Validated before any database work: a bad header never reaches the secret source or creates a pool. */
  const tenantOf = (request: FastifyRequest): string => {
    const orgId = orgIdFromHeaders(request.headers)
    shop.assertTenantId(orgId)
    return orgId
  }

  app.setErrorHandler((error, request, reply) => {
    const mapped = toHttpError(error)
    if (mapped.unexpected) request.log.error({ err: error }, 'request failed')
    if (mapped.headers !== undefined) reply.headers(mapped.headers)
    return reply.status(mapped.status).send(mapped.body)
  })

  // close() ends the connections idle at that moment; one whose request is still running would then stay
  // open until its keep-alive timeout (72 s): answer those with `Connection: close` instead.
  let closing = false
  app.addHook('preClose', async () => {
    closing = true
  })
  app.addHook('onSend', async (_request, reply, payload) => {
    if (closing) reply.header('connection', 'close')
    return payload
  })

  // Each request's work runs in registry.scope(): a connection a handler leaves checked out (an un-awaited
  // query, a forgotten release) is destroyed and reported (`connection:leak`, `stats().leaks`) when its
  // request ends, instead of staying out of the pool. onRequest and preHandler hooks finish before the
  // handler starts, so they cannot wrap it: every route's handler is wrapped as it is registered.
  app.addHook('onRoute', (route) => {
    if (route.config?.scoped === false) return
    const handler = route.handler
    route.handler = function scoped(request, reply) {
      // A handler that returns `reply` (after reply.send) keeps the scope open until the response is sent.
      return registry.scope(async () => handler.call(this, request, reply))
    }
  })

  app.get('/health', () => ({ status: 'ok' }))

  // Liveness: the process answers. Never the database's state: restarting the app does not fix PostgreSQL.
  app.get('/healthz', UNSCOPED, () => ({ ok: true }))

  // Readiness: registry.health() (open, and no server's last connection attempt failed) → 200, else 503;
  // the body is the report either way (per server: reachable, budget, waiting, last error redacted).
  app.get('/readyz', UNSCOPED, async (_request, reply) => {
    const report = await registry.health()
    return reply.status(report.ok ? 200 : 503).send(report)
  })

  // Prometheus scrapes the OpenTelemetry metrics here, on the app's own port (the exporter's server is off).
  const metrics = options.metrics
  if (metrics !== undefined) {
    app.get('/metrics', UNSCOPED, async (_request, reply) => reply.type(PROMETHEUS_CONTENT_TYPE).send(await metrics()))
  }

  // Plain JSON by contract: pool, connection and secret-cache counters, no secrets.
  app.get('/stats', () => registry.stats())

  app.post<{ Body: PlaceOrderInput }>('/orders', { schema: placeOrderSchema }, async (request, reply) => {
    const placed = await shop.placeOrder(tenantOf(request), request.body)
    return reply.status(201).send(placed)
  })

  app.get('/orders', async (request) => ({ orders: await shop.listOrders(tenantOf(request)) }))
  app.get('/stock', async (request) => ({ stock: await shop.listStock(tenantOf(request)) }))
  app.get('/audit', async (request) => ({ entries: await shop.listAudit(tenantOf(request)) }))

  // The stores: many tenants per database, one physical pool per service.
  app.get('/prices', async (request) => ({ prices: await shop.listPrices(tenantOf(request)) }))
  app.get('/reviews', async (request) => ({ reviews: await shop.listReviews(tenantOf(request)) }))
  app.post<{ Body: NewReview }>('/reviews', { schema: addReviewSchema }, async (request, reply) => {
    const review = await shop.addReview(tenantOf(request), request.body)
    return reply.status(201).send({ review })
  })

  return app
}
