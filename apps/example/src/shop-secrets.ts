import { awsSecretsManager } from '@hyperconn/core'
import type { SecretSource } from '@hyperconn/core'

/** The region the local Secrets Manager endpoint answers for. */
export const LOCAL_REGION = 'eu-west-1'
/** The fake endpoint does not verify signatures, but the SDK insists on signing with something. */
const LOCAL_CREDENTIALS = { accessKeyId: 'AKIALOCALEXAMPLE', secretAccessKey: 'local-secret-access-key' }

/** The real AWS SDK path (SigV4-signed GetSecretValue over HTTP) against a local endpoint. */
export function localSecrets(endpoint: string): SecretSource {
  return awsSecretsManager({ region: LOCAL_REGION, endpoint, credentials: LOCAL_CREDENTIALS })
}

/** Real AWS Secrets Manager; region and credentials from the default chains (env, profile, SSO, container/instance role). */
export function awsSecrets(region: string | undefined): SecretSource {
  return awsSecretsManager(region === undefined ? {} : { region })
}
