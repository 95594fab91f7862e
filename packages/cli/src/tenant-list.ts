import { readFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import { TENANT_ID_PATTERN } from '@hyperconn/core'
import type { CliRegistry, TenantSource } from './config.js'
import { UsageError } from './exit-codes.js'

/**
 * Parses `--tenants`: `all`, a comma-separated list of org ids, or `@file` (one org id per line; blank lines
 * and lines starting with `#` are ignored; relative to `cwd`). Ids are checked against core's org id pattern
 * and deduplicated, keeping the first occurrence's order. Throws `UsageError`.
 */
export async function parseTenantsOption(value: string, cwd: string): Promise<'all' | string[]> {
  const text = value.trim()
  if (text === 'all') return 'all'
  if (text.startsWith('@')) {
    const file = resolve(cwd, text.slice(1))
    if (text.length === 1) throw new UsageError('--tenants @<file>: the file name is missing')
    let content: string
    try {
      content = await readFile(file, 'utf8')
    } catch (error) {
      const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (error as Error).message
      throw new UsageError(`--tenants @${text.slice(1)}: cannot read ${file}: ${reason}`, { cause: error })
    }
    const lines = content.split(/\r?\n/).map((line, index) => ({ id: line.trim(), line: index + 1 }))
    const ids = checkIds(
      lines.filter(({ id }) => id !== '' && !id.startsWith('#')),
      (line) => `${file}:${line}`,
    )
    if (ids.length === 0) throw new UsageError(`--tenants @${text.slice(1)}: ${file} lists no org id (one per line; # starts a comment)`)
    return ids
  }
  const ids = checkIds(
    text.split(',').map((id) => ({ id: id.trim(), line: 0 })).filter(({ id }) => id !== ''),
    () => '--tenants',
  )
  if (ids.length === 0) throw new UsageError("--tenants needs 'all', org ids separated by commas, or @file")
  return ids
}

function checkIds(entries: { id: string; line: number }[], where: (line: number) => string): string[] {
  const bad = entries.find(({ id }) => !TENANT_ID_PATTERN.test(id))
  if (bad !== undefined) {
    throw new UsageError(`${where(bad.line)}: ${JSON.stringify(bad.id)} is not an org id (1-64 characters of A-Z a-z 0-9 _ -, starting with a letter or digit)`)
  }
  return [...new Set(entries.map(({ id }) => id))]
}

/**
 * The org ids of a tenant source, read in full and deduplicated: `'all'` lists them through
 * `registry.listTenants(service)`.
 */
export async function resolveTenants(source: TenantSource, registry: CliRegistry, service: string): Promise<string[]> {
  let ids: Iterable<string> | AsyncIterable<string>
  if (source === 'all') {
    if (typeof registry.listTenants !== 'function') {
      throw new UsageError("--tenants all needs a registry with listTenants(); pass the org ids (--tenants a,b or --tenants @file) instead")
    }
    ids = registry.listTenants(service)
  } else {
    ids = source
  }
  const seen = new Set<string>()
  for await (const id of ids) seen.add(id)
  return [...seen]
}
