/** A raw secret, a JSON string or an object: `{ "core-postgresql": "postgresql://…" }` (keys from `secretKey(service)`). */
export type SecretValue = string | Readonly<Record<string, unknown>>

/**
 * Where tenant secrets come from. A source returns the raw secret (a JSON string or an object) or
 * throws `SecretNotFoundError` / `SecretSourceError`; anything else it throws is treated as a
 * transient `SecretSourceError`. Sources never log or echo secret values.
 */
export interface SecretSource {
  /** The secret called `name` (`secretName(orgId)`); the registry caches it. */
  get(name: string): Promise<SecretValue>
  /**
   * Optional: the NAMES (never values) of the secrets whose name starts with `prefix` (case-sensitive;
   * `''` = all), each once, in no particular order; used by `registry.listTenants()`. Fetch them lazily
   * (page by page) if the source is large. Throws like `get`: a `SecretSourceError` (its `secretName`
   * is `<prefix>*`) when the source fails. `awsSecretsManager()`, `staticSecrets()` and `fileSecrets()`
   * implement it.
   */
  list?(prefix: string): AsyncIterable<string>
  /** Optional: a short label for stats and errors, e.g. "aws-secrets-manager". */
  readonly kind?: string
  /** Optional: release sockets/clients the source owns; called by `registry.close()`. */
  close?(): void | Promise<void>
}
