import { createRegistry, staticSecrets, UnknownServiceError } from '@hyperconn/core'
import type { Registry } from '@hyperconn/core'
import type { NodePgDatabase } from 'drizzle-orm/node-postgres'
import { describe, expect, expectTypeOf, it } from 'vitest'
import { createDrizzleAdapter } from '../src/index.js'
import { schema } from './support/schema.js'

// Type tests: typecheck (tsc over test/) fails if a @ts-expect-error line compiles; the runtime checks stay.
describe('createDrizzleAdapter: service typed from the registry', () => {
  it('accepts a service of the registry and rejects any other at compile time', async () => {
    await using registry = createRegistry({ project: 'p', services: ['core', 'billing'], secrets: staticSecrets({}) })
    const { getDb } = createDrizzleAdapter(registry, { service: 'billing', schema })
    expectTypeOf(getDb).returns.toEqualTypeOf<NodePgDatabase<typeof schema>>()
    // @ts-expect-error 'typo' is not one of the registry's services
    const typo = createDrizzleAdapter(registry, { service: 'typo', schema })
    expect(() => typo.getDb('org1')).toThrow(UnknownServiceError)
  })

  it('takes any service name with a Registry<string>', async () => {
    await using registry = createRegistry({ project: 'p', services: ['core'] as string[], secrets: staticSecrets({}) })
    const wide: Registry = registry
    expect(() => createDrizzleAdapter(wide, { service: 'typo' }).getDb('org1')).toThrow(UnknownServiceError)
  })
})
