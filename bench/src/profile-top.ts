/**
 * Diagnostic: the functions with the most self time in a V8 CPU profile (from `--cpu-prof`, e.g. a probe
 * profiled with BENCH_PROBE_CPU_PROF=<dir>), per call when given the number of calls it made.
 *
 *   npx tsx src/profile-top.ts <file.cpuprofile> [calls] [filter]
 *
 * `filter` keeps the functions whose "package function:line" key contains it (e.g. @opentelemetry).
 */
import { readFile } from 'node:fs/promises'
import type { Profiler } from 'node:inspector'
import { selfTimesByFunction } from './cpu-profile-summary.js'

const [file, callsArg, filter] = process.argv.slice(2)
if (file === undefined) throw new Error('usage: profile-top.ts <file.cpuprofile> [calls] [filter]')
const calls = callsArg === undefined ? 1 : Number(callsArg)
const profile = JSON.parse(await readFile(file, 'utf8')) as Profiler.Profile
const { total, frames } = selfTimesByFunction(profile, calls)
const unit = calls === 1 ? 'µs' : 'µs/call'
const kept = [...frames].filter(([key]) => filter === undefined || key.includes(filter)).sort((a, b) => b[1] - a[1])
const keptTotal = kept.reduce((sum, [, micros]) => sum + micros, 0)
console.log(`${total.toFixed(3)} ${unit} sampled in all${filter === undefined ? '' : `; ${keptTotal.toFixed(3)} ${unit} in functions matching "${filter}"`}`)
for (const [key, micros] of kept.slice(0, 30)) console.log(`${micros.toFixed(3).padStart(10)} ${unit}  ${key}`)
