/**
 * The long-running service: `pnpm --filter @hyperconn/example start`. Local mode by default (embedded
 * PostgreSQL + local Secrets Manager endpoint); HYPERCONN_SECRETS=aws for the real thing (see README.md).
 */
import type { Logger } from '@hyperconn/core'
import type { ShopApp } from './shop-app.js'
import type { ShopEnvironment } from './shop-environment.js'
import { onShutdownSignal } from './shutdown-signals.js'

const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? '127.0.0.1'

// The registry exists before Fastify's logger does: forward to it once the app is up, warnings to stderr until then.
let target: Logger | undefined
const registryLogger: Logger = {
  debug: (obj, msg) => target?.debug(obj, msg),
  info: (obj, msg) => target?.info(obj, msg),
  warn: (obj, msg) => (target ? target.warn(obj, msg) : console.warn(msg, obj)),
  error: (obj, msg) => (target ? target.error(obj, msg) : console.error(msg, obj)),
}

let env: ShopEnvironment | undefined
let app: ShopApp | undefined
const aborted = new AbortController()
let startup: Promise<void> = Promise.resolve()
let stopping: Promise<void> | undefined

/** Graceful: in-flight requests finish, then the registry drains its pools, then local services stop. */
function stop(code: number): Promise<void> {
  stopping ??= (async () => {
    aborted.abort()
    await startup.catch(() => {}) // whatever start-up started must be known before it can be stopped
    try {
      await app?.close()
      await env?.close()
    } catch (error) {
      console.error('shutdown was not clean:', error)
      code ||= 1
    }
    process.exit(code)
  })()
  return stopping
}

// A second signal while stop() drains exits at once (the embedded PostgreSQL is then stopped by testkit's exit hook).
onShutdownSignal(() => void stop(0))

startup = (async () => {
  // Loaded after the signal handlers: a Ctrl-C during the (slow) module loading still ends cleanly.
  const [{ readShopConfig }, { startShopEnvironment }, { createShopApp }] = await Promise.all([
    import('./shop-config.js'),
    import('./shop-environment.js'),
    import('./shop-app.js'),
  ])
  const config = readShopConfig()
  env = await startShopEnvironment(config, {
    logger: registryLogger,
    onStep: (step) => console.log(`· ${step}`),
    signal: aborted.signal,
    // stop() shuts PostgreSQL down last, after the requests it serves: testkit must not kill it on the signal.
    handleSignals: false,
  })
  app = createShopApp({ registry: env.registry, telemetry: env.telemetry, logger: true })
  target = app.http.log
  const address = await app.http.listen({ port, host })
  console.log(`shop ready on ${address}; tenants: ${config.tenants.join(', ')}`)
  console.log(`  curl -s -H 'x-org-id: ${config.tenants[0] ?? 'acme'}' ${address}/stock`)
  console.log(`  curl -s ${address}/metrics | grep '^db_client'; curl -s ${address}/readyz`)
  const stores = env.local?.shared?.orgIds ?? []
  if (stores.length > 0) {
    console.log(`stores on the shared database: ${stores[0]} … ${stores.at(-1)} (${stores.length})`)
    console.log(`  curl -s -H 'x-org-id: ${stores[0]}' ${address}/prices`)
  }
})()

try {
  await startup
} catch (error) {
  if (!aborted.signal.aborted) {
    console.error('start-up failed:', error)
    await stop(1)
  }
}
