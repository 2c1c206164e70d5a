import { readFileSync } from 'node:fs'
import { processStat } from '@shoal/core'

/**
 * A process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22): with the pid it
 * names one process for good, so a pid the kernel reused is never taken for the workload.
 */
export function processStartTime (pid: number): number | undefined {
  const s = processStat(pid)
  if (s == null || s.state === 'Z' || !Number.isSafeInteger(s.startTime)) return undefined
  return s.startTime
}

/** The process's command line arguments, or undefined when it is gone. */
export function processArgs (pid: number): string[] | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(a => a !== '')
  } catch {
    return undefined
  }
}

/** Resolves when a process that is not our child exits (polled: there is no exit event for it). */
export async function waitForExit (pid: number, startTime: number, pollMs = 250): Promise<null> {
  return await new Promise(resolve => {
    const timer = setInterval(() => {
      if (processStartTime(pid) !== startTime) { clearInterval(timer); resolve(null) }
    }, pollMs)
    timer.unref()
  })
}
