import { inspect } from 'node:util'
import { describe, expect, it } from 'vitest'
import { InvalidOptionsError, SecretNotFoundError } from '../hyperconn-error.js'
import { SecretBundle } from './secret-bundle.js'
import { staticSecrets } from './static-secret-source.js'

const MARKER = 'Marker-Pw-7q'
const URL = `postgresql://app:${MARKER}@db:5432/app`

describe('staticSecrets', () => {
  it('serves objects and JSON strings under their names', async () => {
    const source = staticSecrets({
      'martech-org1': { 'core-postgresql': URL },
      'martech-org2': JSON.stringify({ 'core-postgresql': URL }),
    })
    expect(source.kind).toBe('static')
    expect(await source.get('martech-org1')).toEqual({ 'core-postgresql': URL })
    expect(await source.get('martech-org2')).toBe(JSON.stringify({ 'core-postgresql': URL }))
    const bundle = SecretBundle.parse('martech-org1', await source.get('martech-org1'))
    expect(bundle.connectionString('core-postgresql')).toBe(URL)
  })

  it('rejects an unknown name with SecretNotFoundError', async () => {
    const source = staticSecrets({ a: {} })
    const error = await source.get('martech-nope').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(SecretNotFoundError)
    expect((error as SecretNotFoundError).secretName).toBe('martech-nope')
    // Inherited properties are not secrets.
    await expect(source.get('toString')).rejects.toBeInstanceOf(SecretNotFoundError)
    await expect(source.get('__proto__')).rejects.toBeInstanceOf(SecretNotFoundError)
  })

  it('copies the map: later changes to the caller’s objects have no effect', async () => {
    const inner = { 'core-postgresql': URL, nested: { user: 'app' } }
    const map: Record<string, Record<string, unknown>> = { s1: inner }
    const source = staticSecrets(map)
    inner['core-postgresql'] = 'postgresql://changed@h/db'
    inner.nested.user = 'changed'
    map.s2 = { x: 'y' }
    delete map.s1
    expect(await source.get('s1')).toEqual({ 'core-postgresql': URL, nested: { user: 'app' } })
    await expect(source.get('s2')).rejects.toBeInstanceOf(SecretNotFoundError)
  })

  it('hands out frozen values, so one consumer cannot change what the next one gets', async () => {
    const source = staticSecrets({ s1: { a: 'b', nested: { c: 'd' } } })
    const value = (await source.get('s1')) as Record<string, Record<string, string>>
    expect(Object.isFrozen(value)).toBe(true)
    expect(Object.isFrozen(value.nested)).toBe(true)
    expect(() => {
      ;(value as Record<string, unknown>).a = 'x'
    }).toThrow(TypeError)
  })

  it.each([
    ['null', null],
    ['a number', 5432],
    ['an array', [URL]],
  ])('rejects a secret that is %s without echoing it', (_label, value) => {
    const map = { s1: value } as unknown as Record<string, string>
    expect(() => staticSecrets(map)).toThrow(InvalidOptionsError)
    expect(() => staticSecrets(map)).toThrow(/secret "s1"/)
  })

  it('rejects a value that is not JSON-serialisable without echoing it', () => {
    const cyclic: Record<string, unknown> = { url: URL }
    cyclic.self = cyclic
    let message = ''
    try {
      staticSecrets({ s1: cyclic })
    } catch (error) {
      expect(error).toBeInstanceOf(InvalidOptionsError)
      message = (error as Error).message
    }
    expect(message).toContain('"s1"')
    expect(message).not.toContain(MARKER)
  })

  it('rejects a map that is not an object', () => {
    expect(() => staticSecrets(null as unknown as Record<string, string>)).toThrow(InvalidOptionsError)
  })

  it('prints a count, never a value', () => {
    const source = staticSecrets({ s1: { url: URL }, s2: URL })
    expect(inspect(source, { depth: Infinity, showHidden: true })).toBe('StaticSecretSource { secrets: 2 }')
    expect(JSON.stringify(source)).toBe('{"kind":"static","secrets":2}')
  })
})
