import { ConnectionError, SecretSourceError, TransactionRolledBackError } from '@hyperconn/core'
import { describe, expect, it } from 'vitest'
import { toHttpError } from '../src/http-errors.js'
import { InsufficientStockError } from '../src/shop-errors.js'

/** What pg rejects with for a server error: an Error with the SQLSTATE as `code`. */
function pgError(code: string, message = `pg error ${code}`): Error {
  return Object.assign(new Error(message), { code })
}

/** As Drizzle wraps every query error (DrizzleQueryError with the original as `cause`). */
const wrapped = (cause: unknown): Error => new Error('Failed query: …', { cause })

describe('toHttpError: the database is unavailable → 503 with Retry-After: 1', () => {
  it.each([
    ['ConnectionError (HC_CONNECTION)', new ConnectionError('Could not connect …', '08006')],
    ['connection failure 08006', pgError('08006')],
    ['connection does not exist 08003', pgError('08003')],
    ['admin shutdown 57P01 (pg_terminate_backend)', pgError('57P01')],
    ['crash shutdown 57P02', pgError('57P02')],
    ['cannot connect now 57P03', pgError('57P03')],
    ['too many connections 53300', pgError('53300')],
    ['Connection terminated unexpectedly (no code)', new Error('Connection terminated unexpectedly')],
    ['Connection terminated (no code)', new Error('Connection terminated')],
    ['57P01 wrapped by an ORM', wrapped(pgError('57P01'))],
    ['Connection terminated wrapped by an ORM', wrapped(new Error('Connection terminated unexpectedly'))],
    ['57P01 behind TransactionRolledBackError', new TransactionRolledBackError({ cause: pgError('57P01') })],
    ['transient SecretSourceError', new SecretSourceError('shop-acme', true, 'ThrottlingException')],
  ])('%s', (_, error) => {
    const mapped = toHttpError(error)
    expect(mapped.status).toBe(503)
    expect(mapped.headers).toEqual({ 'retry-after': '1' })
    expect(mapped.body.error).toBe('tenant_unavailable')
  })
})

describe('toHttpError: conflicts PostgreSQL resolved by rolling back → 409, retry', () => {
  it.each([
    ['serialization failure 40001', pgError('40001')],
    ['deadlock 40P01', pgError('40P01')],
    ['40001 wrapped by an ORM', wrapped(pgError('40001'))],
    ['40001 behind TransactionRolledBackError', new TransactionRolledBackError({ cause: pgError('40001') })],
  ])('%s', (_, error) => {
    const mapped = toHttpError(error)
    expect(mapped.status).toBe(409)
    expect(mapped.body).toEqual({ error: 'transaction_conflict', message: expect.stringContaining('retry') })
    expect(mapped.headers).toEqual({ 'retry-after': '1' })
    expect(mapped.unexpected).toBe(false)
  })
})

describe('toHttpError: everything else is unchanged', () => {
  it('a permanent SecretSourceError → 500, even when its cause looks like a network error', () => {
    const cause = Object.assign(new Error('AccessDeniedException'), { code: 'ECONNRESET' })
    const mapped = toHttpError(new SecretSourceError('shop-acme', false, 'AccessDeniedException', { cause }))
    expect(mapped.status).toBe(500)
    expect(mapped.headers).toBeUndefined()
  })

  it.each([
    ['unique violation 23505', pgError('23505')],
    ['raise_exception P0001', pgError('P0001')],
    ['a rolled-back transaction whose statement failed with 23505', new TransactionRolledBackError({ cause: pgError('23505') })],
    ['a similar message with extra text', new Error('Connection terminated: but not by pg')],
    ['a non-SQLSTATE code that starts with 08', pgError('08_CUSTOM')],
  ])('%s → 500', (_, error) => {
    expect(toHttpError(error)).toMatchObject({ status: 500, body: { error: 'internal_error' } })
  })

  it('a shop error wins over anything else', () => {
    expect(toHttpError(wrapped(new InsufficientStockError('anvil', 3, 1))).status).toBe(409)
    expect(toHttpError(wrapped(new InsufficientStockError('anvil', 3, 1))).body.error).toBe('insufficient_stock')
  })
})
