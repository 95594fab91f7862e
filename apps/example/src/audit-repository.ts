import type { Knex } from 'knex'

export interface AuditEntry {
  id: number
  action: string
  orderId: number | null
  details: unknown
  createdAt: Date
}

interface AuditRow {
  id: number
  action: string
  order_id: number | null
  details: unknown
  created_at: Date
}

/** The audit log, through Knex. Joins the caller's transaction, if any, without being handed one. */
export class AuditRepository {
  readonly #getDb: (orgId: string) => Knex

  constructor(getDb: (orgId: string) => Knex) {
    this.#getDb = getDb
  }

  async record(orgId: string, action: string, orderId: number | null, details: object): Promise<number> {
    const [row] = await this.#getDb(orgId)<AuditRow>('audit_log')
      // Stringified: pg would turn a top-level array into a PostgreSQL array, not jsonb.
      .insert({ action, order_id: orderId, details: JSON.stringify(details) })
      .returning('id')
    if (row === undefined) throw new Error('INSERT INTO audit_log … RETURNING returned no row')
    return row.id
  }

  async list(orgId: string, limit = 100): Promise<AuditEntry[]> {
    const rows = await this.#getDb(orgId)<AuditRow>('audit_log')
      .select('id', 'action', 'order_id', 'details', 'created_at')
      .orderBy('id', 'desc')
      .limit(limit)
    return rows.map((row) => ({
      id: row.id,
      action: row.action,
      orderId: row.order_id,
      details: row.details,
      createdAt: row.created_at,
    }))
  }
}
