import { cpus, loadavg, totalmem } from 'node:os'

export interface MachineInfo {
  readonly cpuModel: string
  readonly cores: number
  readonly memoryGiB: number
  readonly node: string
  readonly platform: string
  readonly date: string
  /** 1-minute load average at start and end: how busy the shared machine was. */
  readonly loadAverage: { start: number; end?: number }
}

export function machineInfo(): MachineInfo {
  const cpu = cpus()
  return {
    cpuModel: cpu[0]?.model.trim() ?? 'unknown',
    cores: cpu.length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    date: new Date().toISOString(),
    loadAverage: { start: loadavg()[0] ?? 0 },
  }
}

export function withEndLoad(info: MachineInfo): MachineInfo {
  return { ...info, loadAverage: { ...info.loadAverage, end: loadavg()[0] ?? 0 } }
}
