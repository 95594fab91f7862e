import { mkdir, mkdtemp, rename, rm, stat, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { inspect } from 'node:util'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { fileSecrets } from './file-secret-source.js'
import { SecretNotFoundError, SecretSourceError } from '../hyperconn-error.js'

const MARKER = 'Marker-Pw-7q'
const url = (password: string): string => `postgresql://app:${password}@db:5432/app`

let dir: string
let file: string

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hc-file-secrets-'))
  file = join(dir, 'secrets.json')
})

afterEach(async () => {
  await rm(dir, { recursive: true, force: true })
})

/** Writes the file and pins its mtime, so a change is visible without waiting for the clock to tick. */
async function writeSecrets(content: unknown, mtimeSeconds: number, path = file): Promise<void> {
  await writeFile(path, typeof content === 'string' ? content : JSON.stringify(content))
  await utimes(path, mtimeSeconds, mtimeSeconds)
}

async function sourceError(promise: Promise<unknown>): Promise<SecretSourceError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error).toBeInstanceOf(SecretSourceError)
  return error as SecretSourceError
}

describe('fileSecrets', () => {
  it('serves secrets by name from a JSON file', async () => {
    await writeSecrets({ 'martech-org1': { 'core-postgresql': url('one') }, 'martech-org2': '{"k":"v"}' }, 1_000)
    const source = fileSecrets(file)
    expect(source.kind).toBe('file')
    expect(await source.get('martech-org1')).toEqual({ 'core-postgresql': url('one') })
    expect(await source.get('martech-org2')).toBe('{"k":"v"}')
  })

  it('rejects a name the file does not have with SecretNotFoundError', async () => {
    await writeSecrets({ a: {} }, 1_000)
    const source = fileSecrets(file)
    await expect(source.get('martech-nope')).rejects.toBeInstanceOf(SecretNotFoundError)
    await expect(source.get('constructor')).rejects.toBeInstanceOf(SecretNotFoundError)
  })

  it('re-reads the file when its mtime changes (rotation by editing)', async () => {
    await writeSecrets({ s1: { 'core-postgresql': url('old-pw') } }, 1_000)
    const source = fileSecrets(file)
    expect(await source.get('s1')).toEqual({ 'core-postgresql': url('old-pw') })
    await writeSecrets({ s1: { 'core-postgresql': url('new-pw') } }, 2_000)
    expect(await source.get('s1')).toEqual({ 'core-postgresql': url('new-pw') })
  })

  it('does not re-read an unchanged file', async () => {
    await writeSecrets({ s1: { p: 'aaaa' } }, 1_000)
    const source = fileSecrets(file)
    expect(await source.get('s1')).toEqual({ p: 'aaaa' })
    // Same size, same inode, mtime put back: indistinguishable, so the cached parse is served.
    await writeSecrets({ s1: { p: 'bbbb' } }, 1_000)
    expect(await source.get('s1')).toEqual({ p: 'aaaa' })
    // Any difference in mtime is a change, even an older one (a restored backup).
    await utimes(file, 500, 500)
    expect(await source.get('s1')).toEqual({ p: 'bbbb' })
  })

  it('notices an atomic replace (write elsewhere + rename) even with the same mtime', async () => {
    await writeSecrets({ s1: { p: 'aaaa' } }, 1_000)
    const source = fileSecrets(file)
    expect(await source.get('s1')).toEqual({ p: 'aaaa' })
    const next = join(dir, 'secrets.json.tmp')
    await writeSecrets({ s1: { p: 'bbbb' } }, 1_000, next)
    await rename(next, file)
    expect(await source.get('s1')).toEqual({ p: 'bbbb' })
  })

  it('hands out frozen values', async () => {
    await writeSecrets({ s1: { nested: { a: 'b' } } }, 1_000)
    const value = (await fileSecrets(file).get('s1')) as Record<string, object>
    expect(Object.isFrozen(value)).toBe(true)
    expect(Object.isFrozen(value.nested)).toBe(true)
  })

  it('a missing file is a transient SecretSourceError naming the file; creating it recovers', async () => {
    const source = fileSecrets(file)
    const error = await sourceError(source.get('s1'))
    expect(error.transient).toBe(true)
    expect(error.sourceCode).toBe('ENOENT')
    expect(error.secretName).toBe('s1')
    expect(error.message).toContain(file)
    expect(error.message).not.toMatch(/IAM/)
    await writeSecrets({ s1: { a: 'b' } }, 1_000)
    expect(await source.get('s1')).toEqual({ a: 'b' })
  })

  it('bad JSON is a permanent SecretSourceError naming the file but never its content', async () => {
    await writeSecrets({ s1: { 'core-postgresql': url(MARKER) } }, 1_000)
    const source = fileSecrets(file)
    await source.get('s1')
    // Half-written / hand-edited file: the previous good parse is not served, the error is reported.
    await writeSecrets(`{"s1": {"core-postgresql": "${url(MARKER)}"`, 2_000)
    const error = await sourceError(source.get('s1'))
    expect(error.transient).toBe(false)
    expect(error.sourceCode).toBe('InvalidSecretsFile')
    expect(error.message).toContain(file)
    expect(error.message).toContain('is not valid JSON')
    expect(error.message).not.toContain(MARKER)
    expect(error.message).not.toMatch(/position|Unexpected/)
    expect(inspect(error, { depth: Infinity })).not.toContain(MARKER)
    // Fixing the file recovers without a restart.
    await writeSecrets({ s1: { 'core-postgresql': url('fixed') } }, 3_000)
    expect(await source.get('s1')).toEqual({ 'core-postgresql': url('fixed') })
  })

  it('a JSON array at the top level is a permanent error', async () => {
    await writeSecrets([{ s1: {} }], 1_000)
    const error = await sourceError(fileSecrets(file).get('s1'))
    expect(error.transient).toBe(false)
    expect(error.message).toContain('is not a JSON object')
  })

  it('a directory is a permanent error', async () => {
    const sub = join(dir, 'sub')
    await mkdir(sub)
    const error = await sourceError(fileSecrets(sub).get('s1'))
    expect(error.transient).toBe(false)
    expect(error.sourceCode).toBe('EISDIR')
  })

  it('concurrent callers for different names each get an error with their own name', async () => {
    await writeSecrets('not json', 1_000)
    const source = fileSecrets(file)
    const [a, b] = await Promise.all([sourceError(source.get('a')), sourceError(source.get('b'))])
    expect(a.secretName).toBe('a')
    expect(b.secretName).toBe('b')
    expect(a.message).toContain('"a"')
    expect(b.message).toContain('"b"')
  })

  it('concurrent callers after a change share one read', async () => {
    await writeSecrets({ s1: { a: '1' }, s2: { b: '2' } }, 1_000)
    const source = fileSecrets(file)
    const results = await Promise.all([source.get('s1'), source.get('s2'), source.get('s1')])
    expect(results).toEqual([{ a: '1' }, { b: '2' }, { a: '1' }])
    // Same object: the file was parsed once.
    expect(results[0]).toBe(results[2])
  })

  it('prints its path, never its content', async () => {
    await writeSecrets({ s1: { 'core-postgresql': url(MARKER) } }, 1_000)
    const source = fileSecrets(file)
    await source.get('s1')
    expect(inspect(source, { depth: Infinity, showHidden: true })).toBe(`FileSecretSource { path: ${JSON.stringify(file)} }`)
    expect(JSON.stringify(source)).not.toContain(MARKER)
    expect((await stat(file)).isFile()).toBe(true)
  })
})
