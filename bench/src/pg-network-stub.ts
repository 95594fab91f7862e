import pg from 'pg'

/**
 * Replaces pg.Client's network methods with instant in-memory answers, process-wide. Only for the
 * client-CPU diagnostic (client-cpu.ts, its own process): with no socket and no server, the CPU
 * time left per query is the JavaScript of the ORM, the adapter and core, which is what a hotspot
 * hunt needs; on a shared VM kernel socket time otherwise swamps it. pg-pool stays real on both
 * sides. Rows have the shape of bench_items; `rowMode: 'array'` (Drizzle) gets arrays.
 */
export function stubPgNetwork(): void {
  const client = pg.Client.prototype as unknown as Record<string, unknown>
  client.connect = function (this: StubClient, callback?: (error?: Error) => void) {
    this._connected = true
    this._queryable = true
    if (callback) return void process.nextTick(callback)
    return Promise.resolve()
  }
  client.end = function (this: StubClient, callback?: () => void) {
    this._ending = true
    process.nextTick(() => this.emit('end'))
    if (callback) return void process.nextTick(callback)
    return Promise.resolve()
  }
  client.query = function (config: string | { text: string; rowMode?: string }, values?: unknown, callback?: unknown) {
    const text = typeof config === 'string' ? config : config.text
    const verb = /^\s*(\w+)/.exec(text)?.[1]?.toUpperCase() ?? ''
    const arrays = typeof config === 'object' && config.rowMode === 'array'
    const rows = verb === 'SELECT' ? [arrays ? [1, 'seed', 'item 1', 1] : { id: 1, org: 'seed', name: 'item 1', n: 1 }] : []
    const result = { command: verb, rowCount: verb === 'SELECT' || verb === 'INSERT' ? 1 : null, rows, fields: [], oid: 0 }
    const done = typeof values === 'function' ? values : callback
    if (typeof done === 'function') return void process.nextTick(done, null, result)
    return new Promise((resolve) => process.nextTick(resolve, result))
  }
}

interface StubClient {
  _connected: boolean
  _queryable: boolean
  _ending: boolean
  emit(event: string): boolean
}
