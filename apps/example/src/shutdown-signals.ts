import { constants } from 'node:os'

/**
 * One Ctrl-C can arrive twice (from the terminal, and relayed by a wrapper such as pnpm): a repeat within
 * this window is the same request, only a later one means "now".
 */
const DUPLICATE_WINDOW_MS = 2_000

/**
 * SIGINT/SIGTERM handling of the long-running server (main.ts) and the demo: the first signal calls
 * `shutdown` (an orderly stop that ends with process.exit); a second one while that is still running exits
 * at once with 128 + the signal number. Whatever is still running then is left to the exit hooks (testkit
 * stops an embedded PostgreSQL on 'exit').
 *
 * Listening disables Node's default action (exit) for these signals, and testkit's own signal hook is not
 * installed when the environment starts PostgreSQL with `handleSignals: false`: the shutdown is ours alone.
 */
export function onShutdownSignal(shutdown: (signal: NodeJS.Signals) => void): void {
  let firstAt: number | undefined
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (firstAt === undefined) {
        firstAt = performance.now()
        shutdown(signal)
        return
      }
      if (performance.now() - firstAt > DUPLICATE_WINDOW_MS) {
        console.error(`\n${signal} received again during shutdown: exiting now`)
        process.exit(128 + constants.signals[signal])
      }
    })
  }
}
