import { InvalidOptionsError, UnsupportedError } from '@hyperconn/core'

// knex features the adapter cannot offer are UnsupportedError (HC_UNSUPPORTED); each message says what to
// do instead. The two backstops at the end (InvalidOptionsError) guard knex client internals that the
// adapter's instances never call.

export function streamingUnsupported(): UnsupportedError {
  return new UnsupportedError(
    'knex .stream() / .pipe() is not supported by @hyperconn/knex yet: connections come from @hyperconn/core, ' +
      'which cannot run a pg Submittable (pg-query-stream) yet. Read large results in pages (keyset pagination ' +
      'with .where(id > last).orderBy(id).limit(n)) instead.',
  )
}

export function transactionProviderUnsupported(): UnsupportedError {
  return new UnsupportedError(
    'knex transactions without a callback (`const trx = await db.transaction()`, db.transactionProvider()) are not ' +
      'supported by @hyperconn/knex: a transaction is bound to an async scope, so every adapter can join it. ' +
      'Pass a callback instead: `await db.transaction(async (trx) => { ... })`; it commits when the callback resolves ' +
      'and rolls back when it throws, and every query for this tenant inside it (getDb(orgId), other adapters) joins it.',
  )
}

export function externalConnectionUnsupported(): UnsupportedError {
  return new UnsupportedError(
    'db.transaction(fn, { connection }) is not supported by @hyperconn/knex: transactions run on the registry\'s ' +
      'pooled connections. Leave out `connection`.',
  )
}

export function nativeTransactionUnsupported(): InvalidOptionsError {
  return new InvalidOptionsError(
    'knex\'s own transaction machinery (client.transaction) is disabled in @hyperconn/knex, so a transaction cannot ' +
      'bypass the shared transaction context. Use db.transaction(fn) or trx.transaction(fn).',
  )
}

export function rawConnectionUnsupported(): InvalidOptionsError {
  return new InvalidOptionsError(
    '@hyperconn/knex never opens connections of its own: every query runs on the registry\'s pool for this tenant.',
  )
}
