import type { Profiler } from 'node:inspector'

export interface FrameCost {
  /** e.g. "@hyperconn/core #acquire" or "node async_hooks promiseInitHook" */
  readonly frame: string
  readonly microsPerCall: number
}

/**
 * Self time per call of our packages' functions (and of Node's async_hooks, where AsyncLocalStorage
 * spends its time on Node 20) in a V8 CPU profile of `calls` calls. Self time, not inclusive: async
 * functions resume from the microtask queue, so inclusive time does not follow the call chain.
 */
export function ourFrames(profile: Profiler.Profile, calls: number): { total: number; frames: FrameCost[] } {
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]))
  const self = new Map<string, number>()
  let total = 0
  const deltas = profile.timeDeltas ?? []
  ;(profile.samples ?? []).forEach((id, i) => {
    const frame = nodes.get(id)?.callFrame
    if (frame === undefined || frame.functionName === '(idle)') return
    const micros = deltas[i] ?? 0
    total += micros
    const ours = /packages\/(\w+)\//.exec(frame.url)?.[1]
    const group = ours !== undefined ? `@hyperconn/${ours}` : frame.url.endsWith('async_hooks') ? 'node async_hooks' : undefined
    if (group === undefined) return
    const key = `${group} ${frame.functionName || '(anonymous)'}`
    self.set(key, (self.get(key) ?? 0) + micros)
  })
  const frames = [...self]
    .map(([frame, micros]) => ({ frame, microsPerCall: micros / calls }))
    .sort((a, b) => b.microsPerCall - a.microsPerCall)
  return { total: total / calls, frames }
}

/**
 * Self time per call of every function in a V8 CPU profile, keyed "package function:line" (our packages as
 * @hyperconn/…, npm packages by name, Node's own as "node", V8 and native functions as "(native)"), idle and (program) left out.
 */
export function selfTimesByFunction(profile: Profiler.Profile, calls: number): { total: number; frames: Map<string, number> } {
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]))
  const frames = new Map<string, number>()
  let total = 0
  const deltas = profile.timeDeltas ?? []
  ;(profile.samples ?? []).forEach((id, i) => {
    const frame = nodes.get(id)?.callFrame
    if (frame === undefined || frame.functionName === '(idle)' || frame.functionName === '(program)') return
    const micros = (deltas[i] ?? 0) / calls
    total += micros
    const url = frame.url
    const ours = /packages\/(\w+)\//.exec(url)?.[1]
    const group =
      ours !== undefined
        ? `@hyperconn/${ours}`
        : (/.*node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)?.[1] ?? (url.startsWith('node:') ? 'node' : url === '' ? '(native)' : url))
    const key = `${group} ${frame.functionName || '(anonymous)'}:${frame.lineNumber + 1}`
    frames.set(key, (frames.get(key) ?? 0) + micros)
  })
  return { total, frames }
}
