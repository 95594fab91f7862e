import { createRequire } from 'node:module'
import type * as Otel from '@opentelemetry/api'
import { InvalidOptionsError } from '../hyperconn-error.js'

export type OtelApi = typeof Otel

const require = createRequire(import.meta.url)

/**
 * `@opentelemetry/api`, an optional peer: loaded only when `telemetry` is set, synchronously so that
 * `createRegistry` can say what to install. The API finds the application's SDK through its own global
 * registry, so any 1.x copy works with the application's providers.
 */
export function loadOtelApi(load: (id: string) => unknown = require): OtelApi {
  try {
    return load('@opentelemetry/api') as OtelApi
  } catch (error) {
    throw new InvalidOptionsError(
      'createRegistry: telemetry needs the optional peer dependency @opentelemetry/api. Install it (npm install @opentelemetry/api) ' +
        'and register an OpenTelemetry SDK (metrics and traces), or remove the telemetry option. ' +
        `(${error instanceof Error ? error.message.split('\n')[0] : String(error)})`,
    )
  }
}
