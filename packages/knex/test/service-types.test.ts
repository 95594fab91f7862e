import { createRegistry, staticSecrets, UnknownServiceError } from '@hyperconn/core'
import type { Registry } from '@hyperconn/core'
import { describe, expect, it } from 'vitest'
import { createKnexAdapter } from '../src/index.js'

// Type tests: typecheck (tsc over test/) fails if a @ts-expect-error line compiles; the runtime checks stay.
describe('createKnexAdapter: service typed from the registry', () => {
  it('accepts a service of the registry and rejects any other at compile time', async () => {
    await using registry = createRegistry({ project: 'p', services: ['core', 'billing'], secrets: staticSecrets({}) })
    createKnexAdapter(registry, { service: 'billing' })
    // @ts-expect-error 'typo' is not one of the registry's services
    const typo = createKnexAdapter(registry, { service: 'typo' })
    expect(() => typo.getDb('org1')).toThrow(UnknownServiceError)
  })

  it('takes any service name with a Registry<string>', async () => {
    await using registry = createRegistry({ project: 'p', services: ['core'] as string[], secrets: staticSecrets({}) })
    const wide: Registry = registry
    expect(() => createKnexAdapter(wide, { service: 'typo' }).getDb('org1')).toThrow(UnknownServiceError)
  })
})
