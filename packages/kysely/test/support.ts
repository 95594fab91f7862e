import type pg from 'pg'
import { createRegistry, staticSecrets } from '@hyperconn/core'
import type { Registry } from '@hyperconn/core'
import type { Generated } from 'kysely'

export interface Database {
  items: { id: Generated<number>; label: string; org: Generated<string> }
}

export interface WhereAmI {
  pid: number
  txid: string
}

export const WHERE_AM_I = 'SELECT pg_backend_pid() AS pid, txid_current()::text AS txid'

export const SCHEMA = `
  CREATE TABLE items (id serial PRIMARY KEY, label text NOT NULL UNIQUE, org text NOT NULL DEFAULT '');
  CREATE SCHEMA other;
  CREATE TABLE other.items (id serial PRIMARY KEY, label text NOT NULL UNIQUE, org text NOT NULL DEFAULT '');
`


/** Registry with org ids mapped to database URLs, service "core". */
export function registryFor(
  orgs: Record<string, string>,
  pool: { max?: number } = {},
  connections: { acquireTimeoutMs?: number } = {},
): Registry {
  const secrets: Record<string, Record<string, string>> = {}
  for (const [orgId, url] of Object.entries(orgs)) secrets[`p-${orgId}`] = { 'core-postgresql': url }
  return createRegistry({ project: 'p', services: ['core'], secrets: staticSecrets(secrets), pool, connections })
}

export async function labels(admin: pg.Client, table = 'items'): Promise<string[]> {
  const { rows } = await admin.query<{ label: string }>(`SELECT label FROM ${table} ORDER BY id`)
  return rows.map((r) => r.label)
}
