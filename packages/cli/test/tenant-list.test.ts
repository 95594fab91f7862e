import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { UsageError } from '../src/exit-codes.js'
import { parseTenantsOption, resolveTenants } from '../src/tenant-list.js'
import type { CliRegistry } from '../src/config.js'

let dir: string
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hyperconn-tenants-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe('--tenants', () => {
  it("'all', and comma-separated ids (trimmed, deduplicated, in order)", async () => {
    expect(await parseTenantsOption('all', dir)).toBe('all')
    expect(await parseTenantsOption(' t2, t1 ,t2,,t3 ', dir)).toEqual(['t2', 't1', 't3'])
  })

  it('@file: one id per line, blank lines and # comments ignored, relative to the working directory', async () => {
    await writeFile(join(dir, 'ids.txt'), '# wave 1\r\nacme\n\n   globex  \n#initech\nacme\n')
    expect(await parseTenantsOption('@ids.txt', dir)).toEqual(['acme', 'globex'])
    expect(await parseTenantsOption(`@${join(dir, 'ids.txt')}`, '/')).toEqual(['acme', 'globex'])
  })

  it('rejects what is not an org id, a missing or empty file, and an empty list, with the place', async () => {
    await writeFile(join(dir, 'bad.txt'), 'acme\nglo bex\n')
    await writeFile(join(dir, 'empty.txt'), '# nothing yet\n\n')
    await expect(parseTenantsOption('acme,../x', dir)).rejects.toThrow(/--tenants: "\.\.\/x" is not an org id/)
    await expect(parseTenantsOption('@bad.txt', dir)).rejects.toThrow(/bad\.txt:2: "glo bex" is not an org id/)
    await expect(parseTenantsOption('@missing.txt', dir)).rejects.toThrow(/cannot read .*missing\.txt: no such file/)
    await expect(parseTenantsOption('@empty.txt', dir)).rejects.toThrow(/lists no org id/)
    await expect(parseTenantsOption(' , ', dir)).rejects.toThrow(UsageError)
    await expect(parseTenantsOption('@', dir)).rejects.toThrow(/file name is missing/)
  })

  it("resolveTenants: 'all' through listTenants(service), iterables as they are, each id once", async () => {
    const asked: (string | undefined)[] = []
    const registry = {
      tenant: () => {
        throw new Error('not used')
      },
      async *listTenants(service?: string) {
        asked.push(service)
        yield* ['a', 'b', 'a']
      },
    } as unknown as CliRegistry
    expect(await resolveTenants('all', registry, 'core')).toEqual(['a', 'b'])
    expect(asked).toEqual(['core'])
    expect(await resolveTenants(new Set(['x', 'y']), registry, 'core')).toEqual(['x', 'y'])
    const withoutListing = { tenant: registry.tenant } as CliRegistry
    await expect(resolveTenants('all', withoutListing, 'core')).rejects.toThrow(/--tenants all needs a registry with listTenants\(\)/)
  })
})
