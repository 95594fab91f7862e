import { describe, expect, it } from 'vitest'
import { redactConnectionString, redactText } from './secret-redaction.js'

describe('redactConnectionString', () => {
  it('masks URL credentials and password parameters', () => {
    expect(redactConnectionString('postgresql://app:s3cret@db:5432/x')).toBe('postgresql://app:****@db:5432/x')
    expect(redactConnectionString('postgres://db/x?sslmode=require&password=s3cret&a=1')).toBe('postgres://db/x?sslmode=require&password=****&a=1')
  })

  it('masks libpq key=value connection strings, quoted values included', () => {
    expect(redactConnectionString('host=db user=app password=s3cret dbname=x')).toBe('host=db user=app password=**** dbname=x')
    expect(redactConnectionString("host=db password='with space' dbname=x")).toBe('host=db password=**** dbname=x')
    expect(redactConnectionString('password = s3cret')).toBe('password = ****')
    expect(redactConnectionString('sslpassword=k3y')).toBe('sslpassword=****')
  })

  it('leaves words that only contain "password" alone', () => {
    expect(redactConnectionString('the password was refused')).toBe('the password was refused')
    expect(redactConnectionString('mypassword=x')).toBe('mypassword=x')
  })

  it('redactText also removes known secret values', () => {
    expect(redactText('failed for s3cret-value', ['s3cret-value'])).not.toContain('s3cret-value')
  })
})
