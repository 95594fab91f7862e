import { createHash } from 'node:crypto'
import { inspect } from 'node:util'
import { describe, expect, it } from 'vitest'
import { SecretFormatError, SecretSourceError } from '../hyperconn-error.js'
import { safeCause, SecretBundle } from './secret-bundle.js'

const MARKER = 'Marker-Pw-7q'
const URL_WITH_MARKER = `postgresql://app:${MARKER}@db.internal:5432/app?sslmode=require`

function formatError(fn: () => unknown): SecretFormatError {
  try {
    fn()
  } catch (error) {
    expect(error).toBeInstanceOf(SecretFormatError)
    return error as SecretFormatError
  }
  throw new Error('expected a SecretFormatError')
}

describe('SecretBundle.parse', () => {
  it('accepts a JSON string or an object and exposes its keys', () => {
    const fromString = SecretBundle.parse('martech-org1', JSON.stringify({ 'core-postgresql': URL_WITH_MARKER }))
    const fromObject = SecretBundle.parse('martech-org1', { 'core-postgresql': URL_WITH_MARKER })
    expect(fromString.name).toBe('martech-org1')
    expect(fromString.keys).toEqual(['core-postgresql'])
    expect(fromObject.connectionString('core-postgresql')).toBe(URL_WITH_MARKER)
    expect(fromString.fingerprint).toBe(fromObject.fingerprint)
  })

  it.each([
    ['not JSON', `{"core-postgresql": "${MARKER}"`],
    ['a JSON array', JSON.stringify([MARKER])],
    ['JSON null', 'null'],
    ['a JSON number', '42'],
    ['a JSON string', JSON.stringify(MARKER)],
    ['an empty string', ''],
  ])('rejects %s without echoing the value or a JSON.parse message', (_label, value) => {
    const error = formatError(() => SecretBundle.parse('s1', value))
    expect(error.code).toBe('HC_SECRET_FORMAT')
    expect(error.secretName).toBe('s1')
    expect(error.key).toBeUndefined()
    expect(error.message).toContain('is not a JSON object')
    expect(error.message).not.toContain(MARKER)
    expect(error.message).not.toMatch(/position|Unexpected token|JSON at/i)
    expect(error.cause).toBeUndefined()
  })

  it('rejects objects that cannot be JSON (cycles, BigInt) as format errors', () => {
    const cyclic: Record<string, unknown> = { a: MARKER }
    cyclic.self = cyclic
    expect(formatError(() => SecretBundle.parse('s1', cyclic)).message).toContain('is not a JSON object')
    expect(formatError(() => SecretBundle.parse('s1', { n: 10n })).message).not.toContain('10')
  })

  it('copies an object input: later mutation by the caller has no effect', () => {
    const input = { 'core-postgresql': URL_WITH_MARKER }
    const bundle = SecretBundle.parse('s1', input)
    input['core-postgresql'] = 'postgresql://other:pw@elsewhere/db'
    expect(bundle.connectionString('core-postgresql')).toBe(URL_WITH_MARKER)
  })

  it('treats "__proto__" as an ordinary key', () => {
    const bundle = SecretBundle.parse('s1', '{"__proto__": "postgresql://u:p@h/db", "x": "y"}')
    expect(bundle.keys).toEqual(['__proto__', 'x'])
    expect(bundle.connectionString('__proto__')).toBe('postgresql://u:p@h/db')
    expect(formatError(() => bundle.connectionString('constructor')).message).toContain('is missing')
  })
})

describe('SecretBundle.connectionString', () => {
  const bundle = SecretBundle.parse('martech-org1', {
    'core-postgresql': URL_WITH_MARKER,
    'short-postgres': `postgres://app:${MARKER}@db:5432/app`,
    'mysql': `mysql://app:${MARKER}@db/app`,
    'socket': `postgresql:///app?host=/var/run/postgresql&password=${MARKER}`,
    'garbage': `not a url ${MARKER}`,
    'number': 5432,
    'nothing': null,
  })

  it('returns postgres:// and postgresql:// URLs with a host', () => {
    expect(bundle.connectionString('core-postgresql')).toBe(URL_WITH_MARKER)
    expect(bundle.connectionString('short-postgres')).toBe(`postgres://app:${MARKER}@db:5432/app`)
  })

  it.each([
    ['absent', 'billing-postgresql', 'is missing'],
    ['null', 'nothing', 'is missing'],
    ['not a string', 'number', 'is not a string'],
    ['another scheme', 'mysql', 'is not a PostgreSQL URL'],
    ['hostless', 'socket', 'is not a PostgreSQL URL'],
    ['unparseable', 'garbage', 'is not a PostgreSQL URL'],
  ])('rejects a key that is %s, naming secret and key but no value', (_label, key, problem) => {
    const error = formatError(() => bundle.connectionString(key))
    expect(error.secretName).toBe('martech-org1')
    expect(error.key).toBe(key)
    expect(error.message).toContain(problem)
    expect(error.message).not.toContain(MARKER)
    expect(error.message).not.toContain('5432')
  })
})

describe('SecretBundle.secretValues', () => {
  it('lists whole values, URL passwords raw and decoded, password params and nested strings', () => {
    const encoded = 'p%40ss%2Fw0rd'
    const bundle = SecretBundle.parse('s1', {
      a: `postgresql://app:${encoded}@db/app`,
      b: `postgresql://app@db/app?password=${MARKER}`,
      nested: { deep: ['inner-secret-value'] },
      quoted: 'has"quote',
      port: 5432,
      empty: '',
    })
    const values = bundle.secretValues()
    expect(values).toContain(`postgresql://app:${encoded}@db/app`)
    expect(values).toContain(encoded)
    expect(values).toContain('p@ss/w0rd')
    expect(values).toContain(MARKER)
    expect(values).toContain('inner-secret-value')
    expect(values).toContain('has"quote')
    expect(values).toContain('has\\"quote') // as it appears inside JSON text
    expect(values).not.toContain('')
    expect(values).not.toContain('5432')
    expect(new Set(values).size).toBe(values.length)
  })

  it('redact() removes every value from text', () => {
    const bundle = SecretBundle.parse('s1', { 'core-postgresql': URL_WITH_MARKER })
    const text = bundle.redact(`connect failed for ${URL_WITH_MARKER} (password ${MARKER}, ${encodeURIComponent(MARKER)})`)
    expect(text).not.toContain(MARKER)
  })
})

describe('SecretBundle is safe to print', () => {
  const bundle = SecretBundle.parse('martech-org1', { 'core-postgresql': URL_WITH_MARKER, 'billing-postgresql': URL_WITH_MARKER })

  it('util.inspect shows the name and keys only', () => {
    const text = inspect(bundle, { depth: Infinity, showHidden: true })
    expect(text.replace(/\s+/g, ' ')).toBe("SecretBundle { name: 'martech-org1', keys: [ 'core-postgresql', 'billing-postgresql' ] }")
    expect(inspect({ nested: { bundle } }, { depth: Infinity })).not.toContain(MARKER)
  })

  it('JSON.stringify, Object.keys, spread and structuredClone reveal no value', () => {
    expect(JSON.parse(JSON.stringify({ bundle }))).toEqual({
      bundle: { name: 'martech-org1', keys: ['core-postgresql', 'billing-postgresql'] },
    })
    expect(JSON.stringify({ ...bundle })).not.toContain(MARKER)
    expect(Object.keys(bundle)).toEqual(['name', 'fingerprint'])
    expect(inspect(structuredClone(bundle))).not.toContain(MARKER)
    expect(Object.isFrozen(bundle)).toBe(true)
  })
})

describe('SecretBundle.fingerprint', () => {
  it('is 16 hex chars, ignores key order and changes with any value', () => {
    const a = SecretBundle.parse('s1', '{"x":"1","y":{"b":"2","a":"3"}}')
    const b = SecretBundle.parse('s1', '{"y":{"a":"3","b":"2"},"x":"1"}')
    const c = SecretBundle.parse('s1', '{"x":"1","y":{"b":"2","a":"4"}}')
    expect(a.fingerprint).toMatch(/^[0-9a-f]{16}$/)
    expect(a.fingerprint).toBe(b.fingerprint)
    expect(a.fingerprint).not.toBe(c.fingerprint)
  })

  it('is keyed per process, not a plain hash a log reader could brute-force', () => {
    const json = '{"x":"1"}'
    const plain = createHash('sha256').update(json).digest('hex').slice(0, 16)
    expect(SecretBundle.parse('s1', json).fingerprint).not.toBe(plain)
  })
})

describe('safeCause / specific SecretSourceError messages', () => {
  it('keeps name, code and a redacted message; drops everything else', () => {
    const sdkError = Object.assign(new Error(`bad postgresql://u:${MARKER}@h/db`), {
      name: 'AccessDeniedException',
      code: 'E_DENIED',
      $metadata: { httpStatusCode: 400, requestId: 'r1' },
      $response: { body: MARKER },
    })
    const cause = safeCause(sdkError)
    expect(cause).not.toBe(sdkError)
    expect(cause.name).toBe('AccessDeniedException')
    expect((cause as Error & { code?: string }).code).toBe('E_DENIED')
    expect(cause.message).not.toContain(MARKER)
    expect(Object.keys(cause).sort()).toEqual(['code', 'name'])
    expect(safeCause(sdkError, [MARKER]).message).not.toContain(MARKER)
    expect(safeCause('plain string').message).toBe('plain string')
    expect(safeCause(Object.assign(new Error('x'), { name: 'weird name <script>' })).name).toBe('Error')
  })

  it('a source-specific message replaces the default one, in the stack header too', () => {
    const error = new SecretSourceError('s1', false, 'SdkNotInstalled', { message: 'after' })
    expect(error.message).toBe('after')
    expect(error.stack?.split('\n')[0]).toBe('SecretSourceError: after')
  })
})
