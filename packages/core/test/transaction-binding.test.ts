import { AsyncResource } from 'node:async_hooks'
import { testDatabase } from '@hyperconn/testkit/vitest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { bindTransaction } from '../src/adapter.js'
import type { TransactionBinding } from '../src/adapter.js'
import {
  createRegistry,
  currentTransactionInfo,
  staticSecrets,
  TransactionClosedError,
  TransactionPropagationError,
} from '../src/index.js'

let db: Awaited<ReturnType<typeof testDatabase>>

beforeAll(async () => {
  db = await testDatabase('txbind')
})

afterAll(async () => {
  await db?.[Symbol.asyncDispose]()
})

function registry() {
  return createRegistry({ project: 'b', services: ['core'], secrets: staticSecrets({ 'b-o1': { 'core-postgresql': db.url } }) })
}

describe('TransactionBinding', () => {
  it('is undefined outside a transaction and current inside its own transaction and savepoints', async () => {
    await using reg = registry()
    const tenant = reg.tenant('o1', 'core')
    expect(bindTransaction(tenant)).toBeUndefined()
    await tenant.transaction(async () => {
      const binding = bindTransaction(tenant) as TransactionBinding
      expect(binding.transactionId).toBe(currentTransactionInfo(tenant)?.transactionId)
      expect(() => binding.assertCurrent()).not.toThrow()
      await tenant.transaction(async () => {
        expect(() => binding.assertCurrent()).not.toThrow()
        expect(currentTransactionInfo(tenant)?.transactionId).toBe(binding.transactionId)
      }, { propagation: 'nested' })
    })
  })

  it('refuses use in another transaction, in not_supported, and after the end', async () => {
    await using reg = registry()
    const tenant = reg.tenant('o1', 'core')
    let kept: TransactionBinding | undefined
    await tenant.transaction(async () => {
      const binding = bindTransaction(tenant) as TransactionBinding
      kept = binding
      await tenant.transaction(async () => {
        expect(() => binding.assertCurrent()).toThrow(TransactionPropagationError)
        expect(currentTransactionInfo(tenant)?.transactionId).not.toBe(binding.transactionId)
      }, { propagation: 'requires_new' })
      await tenant.transaction(async () => {
        expect(() => binding.assertCurrent()).toThrow(TransactionPropagationError)
      }, { propagation: 'not_supported' })
    })
    expect(() => kept?.assertCurrent()).toThrow(TransactionClosedError)
  })
})

describe('TransactionBinding in an ended scope of its own transaction', () => {
  it('reports TransactionClosedError for work left over from a released savepoint', async () => {
    await using reg = registry()
    const tenant = reg.tenant('o1', 'core')
    await tenant.transaction(async () => {
      const binding = bindTransaction(tenant) as TransactionBinding
      let leftover: (() => void) | undefined
      await tenant.transaction(async () => {
        // runs later, but in the savepoint's async context
        leftover = AsyncResource.bind(() => binding.assertCurrent())
      }, { propagation: 'nested' })
      expect(() => leftover?.()).toThrow(TransactionClosedError)
      // in the transaction's own, still active context the binding is fine
      expect(() => binding.assertCurrent()).not.toThrow()
    })
  })
})
