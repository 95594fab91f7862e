import { inspect } from 'node:util'
import { describe, expect, it } from 'vitest'
import { ConnectionError, createRegistry, staticSecrets } from '../src/index.js'
import type { RegistryEvents } from '../src/index.js'

const MARKER = 'MARKER-pa55w0rd-7f3a9c'
const URL_WITH_MARKER = `postgresql://svc_user:${MARKER}@127.0.0.1:1/tenantdb?sslmode=disable`

function deepInspect(value: unknown): string {
  return inspect(value, { depth: 20, showHidden: true, getters: true })
}

describe('no secret ever leaks', () => {
  it('a known password with an unreachable host appears in no error, stack, event, log, stats or inspected object', async () => {
    const logged: string[] = []
    const log = (level: string) => (obj: object, msg?: string) => logged.push(`${level} ${msg ?? ''} ${JSON.stringify(obj)}`)
    const events: unknown[] = []
    await using registry = createRegistry({
      project: 'm',
      services: ['core'],
      secrets: staticSecrets({ 'm-leaky': { 'core-postgresql': URL_WITH_MARKER } }),
      pool: { connectionTimeoutMillis: 2_000 },
      logger: { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') },
    })
    for (const name of ['pool:create', 'pool:evict', 'pool:end', 'secret:fetch', 'secret:error', 'connection:error'] as const) {
      registry.on(name, (e: RegistryEvents[typeof name]) => events.push(e))
    }
    const pool = await registry.getPool('core', 'leaky')
    const tenant = registry.tenant('leaky', 'core')
    const viaTenant = await tenant.query('select 1').catch((e: unknown) => e)
    const viaPool = await pool.query('select 1').catch((e: unknown) => e)
    expect(viaTenant).toBeInstanceOf(ConnectionError)
    expect(viaPool).toBeInstanceOf(Error)

    const surfaces = [
      deepInspect(viaTenant),
      String((viaTenant as Error).stack),
      deepInspect((viaTenant as Error).cause),
      deepInspect(viaPool),
      JSON.stringify(events),
      deepInspect(events),
      logged.join('\n'),
      JSON.stringify(registry.stats()),
      deepInspect(registry.stats()),
      deepInspect(registry),
      JSON.stringify(registry),
      deepInspect(pool),
      JSON.stringify(pool),
      deepInspect(pool.options),
      JSON.stringify(pool.options),
      deepInspect(tenant),
    ]
    for (const text of surfaces) {
      expect(text).not.toContain(MARKER)
      expect(text).not.toContain(encodeURIComponent(MARKER))
    }
    expect(logged.join('\n')).not.toContain(URL_WITH_MARKER)
    // and the error is still useful
    expect((viaTenant as Error).message).toContain('"leaky"')
    expect((viaTenant as ConnectionError).sqlState ?? (viaTenant as Error).message).toMatch(/ECONNREFUSED|connect/)
  })
})
