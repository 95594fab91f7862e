import { describe, expect, it, vi } from 'vitest'
import { startFakeSecretsManager } from '../src/index.js'
import type { FakeSecretsManager } from '../src/index.js'

/** Raw AWS JSON 1.1 call, to pin the wire format independently of the SDK. */
function call(fake: FakeSecretsManager, operation: string, input: object, init: RequestInit = {}): Promise<Response> {
  return fetch(`${fake.endpoint}/`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-amz-json-1.1', 'X-Amz-Target': `secretsmanager.${operation}` },
    body: JSON.stringify(input),
    ...init,
  })
}

describe('fake Secrets Manager wire protocol', () => {
  it('answers GetSecretValue in AWS JSON 1.1', async () => {
    await using fake = await startFakeSecretsManager({ secrets: { 'tenant/a': { password: 'p' } } })
    expect(fake.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
    const response = await call(fake, 'GetSecretValue', { SecretId: 'tenant/a' })
    expect(response.status).toBe(200)
    expect(response.headers.get('content-type')).toBe('application/x-amz-json-1.1')
    expect(response.headers.get('x-amzn-requestid')).toMatch(/^[0-9a-f-]{36}$/)
    const body = (await response.json()) as Record<string, unknown>
    expect(body).toMatchObject({ Name: 'tenant/a', SecretString: '{"password":"p"}', VersionStages: ['AWSCURRENT'] })
    expect(typeof body.CreatedDate).toBe('number')
    expect(body.CreatedDate).toBeCloseTo(Date.now() / 1000, -1)
  })

  it('sends errors as __type/message bodies with the matching status', async () => {
    await using fake = await startFakeSecretsManager()
    const missing = await call(fake, 'GetSecretValue', { SecretId: 'nope' })
    expect(missing.status).toBe(400)
    expect(missing.headers.get('x-amzn-errortype')).toBe('ResourceNotFoundException')
    expect(await missing.json()).toEqual({
      __type: 'ResourceNotFoundException',
      message: "Secrets Manager can't find the specified secret.",
    })

    const unknown = await call(fake, 'RotateSecret', { SecretId: 'nope' })
    expect(unknown.status).toBe(400)
    expect(await unknown.json()).toMatchObject({ __type: 'UnknownOperationException' })
    expect(fake.calls('RotateSecret')).toBe(1)

    await fake.setFault('error500', { times: 1 })
    const failed = await call(fake, 'GetSecretValue', { SecretId: 'nope' })
    expect(failed.status).toBe(500)
    expect(await failed.json()).toMatchObject({ __type: 'InternalServiceError' })
  })

  it("applies a fault to the next `times` requests only; 'refuse' cannot be counted", async () => {
    await using fake = await startFakeSecretsManager({ secrets: { s: 'v' } })
    await fake.setFault('throttle', { times: 2 })
    expect((await call(fake, 'GetSecretValue', { SecretId: 's' })).status).toBe(400)
    expect((await call(fake, 'DescribeSecret', { SecretId: 's' })).status).toBe(400)
    expect((await call(fake, 'GetSecretValue', { SecretId: 's' })).status).toBe(200)
    await expect(fake.setFault('refuse', { times: 1 })).rejects.toThrow(TypeError)
    await expect(fake.setFault('throttle', { times: 0 })).rejects.toThrow(RangeError)
  })

  it("'hang' holds requests until the fault is lifted, then answers them", async () => {
    await using fake = await startFakeSecretsManager({ secrets: { s: 'v' } })
    await fake.setFault('hang')
    const pending = call(fake, 'GetSecretValue', { SecretId: 's' })
    let settled = false
    void pending.finally(() => (settled = true))
    await vi.waitFor(() => expect(fake.getSecretValueCalls('s')).toBe(1))
    expect(settled).toBe(false)

    await fake.setFault('none')
    const response = await pending
    expect(response.status).toBe(200)
    expect(await response.json()).toMatchObject({ SecretString: 'v' })
  })

  it("'hang' requests fail when the server closes; close is idempotent", async () => {
    const fake = await startFakeSecretsManager({ secrets: { s: 'v' } })
    await fake.setFault('hang')
    const pending = call(fake, 'GetSecretValue', { SecretId: 's' })
    await vi.waitFor(() => expect(fake.calls('GetSecretValue')).toBe(1))
    await fake.close()
    await expect(pending).rejects.toThrow()
    await fake.close()
    await expect(call(fake, 'GetSecretValue', { SecretId: 's' })).rejects.toThrow()
  })

  it('delays answers by setDelay: a delayed answer arrives after an undelayed one sent later', async () => {
    await using fake = await startFakeSecretsManager({ secrets: { s: 'v' } })
    const order: string[] = []
    fake.setDelay(300)
    const slow = call(fake, 'GetSecretValue', { SecretId: 's' }).then((r) => order.push(`slow ${r.status}`))
    // the delay is read when a request arrives: wait until the slow one is counted, then drop the delay
    while (fake.calls('GetSecretValue') === 0) await new Promise((resolve) => setImmediate(resolve))
    fake.setDelay(0)
    await call(fake, 'GetSecretValue', { SecretId: 's' }).then((r) => order.push(`fast ${r.status}`))
    await slow
    expect(order).toEqual(['fast 200', 'slow 200'])
  })

  it('keeps working under vi.useFakeTimers (the delay uses the real clock)', async () => {
    await using fake = await startFakeSecretsManager({ secrets: { s: 'v' } })
    fake.setDelay(20)
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] })
    try {
      expect((await call(fake, 'GetSecretValue', { SecretId: 's' })).status).toBe(200)
    } finally {
      vi.useRealTimers()
    }
  })

  it('lists secrets oldest first, by name prefix (case-sensitive, ! negates), in MaxResults pages with NextToken', async () => {
    await using fake = await startFakeSecretsManager()
    for (let i = 0; i < 7; i++) fake.setSecret(`p-org${i}`, { i })
    fake.setSecret('P-org9', 'v')
    fake.setSecret('q-org1', 'v')
    const filter = { Filters: [{ Key: 'name', Values: ['p-'] }] }

    const first = await call(fake, 'ListSecrets', { ...filter, MaxResults: 3 })
    expect(first.status).toBe(200)
    const page1 = (await first.json()) as { SecretList: Array<Record<string, unknown>>; NextToken?: string }
    expect(page1.SecretList.map((s) => s.Name)).toEqual(['p-org0', 'p-org1', 'p-org2'])
    expect(page1.SecretList[0]).toMatchObject({ ARN: expect.stringContaining(':secret:p-org0-') as unknown })
    expect(Object.values(page1.SecretList[0]!.SecretVersionsToStages as object)).toEqual([['AWSCURRENT']])
    expect(typeof page1.NextToken).toBe('string')

    // A secret deleted or created between pages neither repeats nor shifts the others.
    fake.deleteSecret('p-org3')
    fake.setSecret('p-org7', 'v')
    const names: string[] = []
    let token = page1.NextToken
    while (token !== undefined) {
      const page = (await (await call(fake, 'ListSecrets', { ...filter, MaxResults: 3, NextToken: token })).json()) as {
        SecretList: Array<{ Name: string }>
        NextToken?: string
      }
      expect(page.SecretList.length).toBeLessThanOrEqual(3)
      names.push(...page.SecretList.map((s) => s.Name))
      token = page.NextToken
    }
    expect(names).toEqual(['p-org4', 'p-org5', 'p-org6', 'p-org7'])
    expect(fake.calls('ListSecrets')).toBe(3)

    const all = (await (await call(fake, 'ListSecrets', {})).json()) as { SecretList: unknown[]; NextToken?: string }
    expect(all.SecretList).toHaveLength(9)
    expect(all.NextToken).toBeUndefined()
    const negated = (await (await call(fake, 'ListSecrets', { Filters: [{ Key: 'name', Values: ['!p-'] }] })).json()) as {
      SecretList: Array<{ Name: string }>
    }
    expect(negated.SecretList.map((s) => s.Name)).toEqual(['P-org9', 'q-org1'])
  })

  it('refuses bad ListSecrets input as the service does', async () => {
    await using fake = await startFakeSecretsManager({ secrets: { s: 'v' } })
    const tooMany = await call(fake, 'ListSecrets', { MaxResults: 101 })
    expect(tooMany.status).toBe(400)
    expect(await tooMany.json()).toMatchObject({ __type: 'ValidationException' })
    const badToken = await call(fake, 'ListSecrets', { NextToken: 'nope' })
    expect(await badToken.json()).toMatchObject({ __type: 'InvalidNextTokenException' })
    const badKey = await call(fake, 'ListSecrets', { Filters: [{ Key: 'tag-key', Values: ['x'] }] })
    expect(await badKey.json()).toMatchObject({ __type: 'InvalidParameterException' })
    const badValue = await call(fake, 'ListSecrets', { Filters: [{ Key: 'name', Values: ['a#b'] }] })
    expect(await badValue.json()).toMatchObject({ __type: 'InvalidParameterException' })
  })

  it('limits a fault to one operation: other operations are answered and do not count towards `times`', async () => {
    await using fake = await startFakeSecretsManager({ secrets: { s: 'v' } })
    await fake.setFault('throttle', { times: 1, operation: 'ListSecrets' })
    expect((await call(fake, 'GetSecretValue', { SecretId: 's' })).status).toBe(200)
    const throttled = await call(fake, 'ListSecrets', {})
    expect(throttled.status).toBe(400)
    expect(await throttled.json()).toMatchObject({ __type: 'ThrottlingException' })
    expect((await call(fake, 'ListSecrets', {})).status).toBe(200)
    await expect(fake.setFault('refuse', { operation: 'ListSecrets' })).rejects.toThrow(TypeError)
  })

  it('records the Authorization header and deletes secrets', async () => {
    await using fake = await startFakeSecretsManager({ secrets: { s: 'v' } })
    expect(fake.lastAuthorization).toBeUndefined()
    await call(fake, 'GetSecretValue', { SecretId: 's' }, {
      headers: { 'X-Amz-Target': 'secretsmanager.GetSecretValue', Authorization: 'AWS4-HMAC-SHA256 Credential=AKID/x' },
    })
    expect(fake.lastAuthorization).toBe('AWS4-HMAC-SHA256 Credential=AKID/x')
    fake.deleteSecret('s')
    expect((await call(fake, 'GetSecretValue', { SecretId: 's' })).status).toBe(400)
  })
})
