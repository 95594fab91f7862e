import { createRegistry, staticSecrets, UnknownServiceError } from '@hyperconn/core'
import type { Registry } from '@hyperconn/core'
import type { Kysely } from 'kysely'
import { describe, expect, expectTypeOf, it } from 'vitest'
import { createKyselyAdapter } from '../src/index.js'

interface Database {
  items: { id: number }
}

// Type tests: typecheck (tsc over test/) fails if a @ts-expect-error line compiles; the runtime checks stay.
describe('createKyselyAdapter: service typed from the registry', () => {
  it('accepts a service of the registry and rejects any other at compile time', async () => {
    await using registry = createRegistry({ project: 'p', services: ['core', 'billing'], secrets: staticSecrets({}) })
    const { getDb } = createKyselyAdapter<Database, typeof registry>(registry, { service: 'billing' })
    expectTypeOf(getDb).returns.toEqualTypeOf<Kysely<Database>>()
    // @ts-expect-error 'typo' is not one of the registry's services
    const typo = createKyselyAdapter<Database, typeof registry>(registry, { service: 'typo' })
    expect(() => typo.getDb('org1')).toThrow(UnknownServiceError)
    // @ts-expect-error 'typo' is not one of the registry's services (registry type inferred)
    expect(() => createKyselyAdapter(registry, { service: 'typo' }).getDb('org1')).toThrow(UnknownServiceError)
    // With only the DB type argument the registry type is not inferred: any name compiles, checked at run time.
    expect(() => createKyselyAdapter<Database>(registry, { service: 'typo' }).getDb('org1')).toThrow(UnknownServiceError)
  })

  it('takes any service name with a Registry<string>', async () => {
    await using registry = createRegistry({ project: 'p', services: ['core'] as string[], secrets: staticSecrets({}) })
    const wide: Registry = registry
    expect(() => createKyselyAdapter<Database>(wide, { service: 'typo' }).getDb('org1')).toThrow(UnknownServiceError)
  })
})
