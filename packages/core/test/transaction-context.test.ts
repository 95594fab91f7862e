import { AsyncLocalStorage } from 'node:async_hooks'
import { describe, expect, it } from 'vitest'
import { ContextConflictError, isHyperconnError } from '../src/hyperconn-error.js'
import { QueryQueue } from '../src/transactions/query-queue.js'
import * as context from '../src/transactions/transaction-context.js'
import {
  CONTEXT_VERSION,
  claimContextStorage,
  currentScope,
  runWithoutScope,
  runWithScope,
} from '../src/transactions/transaction-context.js'
import type { TransactionScope } from '../src/transactions/transaction-state.js'
import { deferred } from './support/pool-access.js'

const SLOT = Symbol.for(`@hyperconn/core/context@${CONTEXT_VERSION}`)

// Frames only store scopes; these tests never call into them.
const fakeScope = (name: string) => ({ name, kind: 'transaction' }) as unknown as TransactionScope
const a = { service: 'core', orgId: 'a' }
const b = { service: 'core', orgId: 'b' }
const billingA = { service: 'billing', orgId: 'a' }

describe('one AsyncLocalStorage per process', () => {
  it('registers the storage on globalThis under Symbol.for, with a version tag', () => {
    const slot = Reflect.get(globalThis, SLOT) as { version: number; storage: unknown }
    expect(slot.version).toBe(CONTEXT_VERSION)
    expect(slot.storage).toBeInstanceOf(AsyncLocalStorage)
    expect(Object.keys(globalThis)).not.toContain(String(SLOT))
    expect(claimContextStorage()).toBe(slot.storage)
  })

  it('a second copy of the module shares the same storage and sees the same frames', async () => {
    // A query string makes the module loader evaluate another instance, as a duplicate install would.
    const path = '../src/transactions/transaction-context.js?second-copy'
    const copy = (await import(/* @vite-ignore */ path)) as typeof context
    expect(copy.currentScope).not.toBe(context.currentScope)
    const scope = fakeScope('from copy 1')
    runWithScope(a, scope, () => {
      expect(copy.currentScope(a)).toBe(scope)
    })
    copy.runWithScope(b, scope, () => {
      expect(currentScope(b)).toBe(scope)
    })
  })

  it('a fresh host gets a slot; later claims return the same storage', () => {
    const host = {}
    const storage = claimContextStorage(host)
    expect(claimContextStorage(host)).toBe(storage)
    expect(Object.getOwnPropertyDescriptor(host, SLOT)).toMatchObject({ writable: false, enumerable: false, configurable: false })
  })

  it('an incompatible copy (other version tag) throws ContextConflictError with a fix', () => {
    const host = { [SLOT]: { version: CONTEXT_VERSION + 1, storage: new AsyncLocalStorage() } }
    let error: unknown
    try {
      claimContextStorage(host)
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(ContextConflictError)
    expect(isHyperconnError(error)).toBe(true)
    expect((error as Error).message).toMatch(/dedupe/)
    expect((error as Error).message).toMatch(/peerDependency/)
  })

  it('a copy registered under another slot symbol, or a malformed slot, also conflicts', () => {
    const future = { [Symbol.for(`@hyperconn/core/context@${CONTEXT_VERSION + 1}`)]: { version: CONTEXT_VERSION + 1 } }
    expect(() => claimContextStorage({ [Symbol.for('@hyperconn/core/context@1')]: { version: 1 } })).toThrow(ContextConflictError)
    expect(() => claimContextStorage(future)).toThrow(ContextConflictError)
    expect(() => claimContextStorage({ [SLOT]: { version: CONTEXT_VERSION, storage: {} } })).toThrow(ContextConflictError)
    expect(() => claimContextStorage({ [SLOT]: null })).toThrow(ContextConflictError)
  })
})

describe('immutable frames', () => {
  it('maps (service, orgId) structurally and leaves the parent frame untouched', () => {
    const s1 = fakeScope('s1')
    const s2 = fakeScope('s2')
    expect(currentScope(a)).toBeUndefined()
    runWithScope(a, s1, () => {
      runWithScope(billingA, s2, () => {
        expect(currentScope(a)).toBe(s1)
        expect(currentScope(billingA)).toBe(s2)
        expect(currentScope(b)).toBeUndefined()
        runWithoutScope(a, () => {
          expect(currentScope(a)).toBeUndefined()
          expect(currentScope(billingA)).toBe(s2)
        })
        expect(currentScope(a)).toBe(s1)
      })
      expect(currentScope(billingA)).toBeUndefined()
      // Keys that would collide if joined into one string stay apart.
      runWithScope({ service: 'core:a', orgId: 'x' }, s2, () => {
        expect(currentScope({ service: 'core', orgId: 'a:x' })).toBeUndefined()
      })
    })
    expect(currentScope(a)).toBeUndefined()
  })

  it('sibling async flows get their own frames', async () => {
    const s1 = fakeScope('s1')
    const s2 = fakeScope('s2')
    const both = deferred()
    const seen: unknown[] = []
    const flow = (scope: TransactionScope) =>
      runWithScope(a, scope, async () => {
        await both.promise
        seen.push(currentScope(a))
      })
    const done = Promise.all([flow(s1), flow(s2)])
    both.resolve()
    await done
    expect(seen).toEqual([s1, s2])
  })
})

describe('QueryQueue', () => {
  it('starts tasks in FIFO order, one at a time, whatever order they finish in', async () => {
    const queue = new QueryQueue()
    const log: string[] = []
    const gates = [deferred(), deferred(), deferred()]
    let running = 0
    const results = gates.map((gate, i) =>
      queue.run(async () => {
        running++
        expect(running).toBe(1)
        log.push(`start ${i}`)
        await gate.promise
        log.push(`end ${i}`)
        running--
        return i
      }),
    )
    gates[2]?.resolve()
    gates[1]?.resolve()
    gates[0]?.resolve()
    expect(await Promise.all(results)).toEqual([0, 1, 2])
    expect(log).toEqual(['start 0', 'end 0', 'start 1', 'end 1', 'start 2', 'end 2'])
  })

  it('a failed task does not block the queue', async () => {
    const queue = new QueryQueue()
    const failed = queue.run(() => Promise.reject(new Error('no')))
    const next = queue.run(async () => 'next')
    await expect(failed).rejects.toThrow('no')
    expect(await next).toBe('next')
  })

  it('hold() waits for earlier tasks and keeps later ones waiting until given back', async () => {
    const queue = new QueryQueue()
    const log: string[] = []
    const first = deferred()
    void queue.run(async () => {
      await first.promise
      log.push('first')
    })
    const held = queue.hold()
    const later = queue.run(async () => {
      log.push('later')
    })
    first.resolve()
    const giveBack = await held
    log.push('held')
    await Promise.resolve()
    expect(log).toEqual(['first', 'held'])
    giveBack()
    await later
    expect(log).toEqual(['first', 'held', 'later'])
  })
})
