import { readFileSync } from 'node:fs'

/** What `/proc/<pid>/stat` says of a process that exists. */
export interface ProcessStat {
  /** The state letter: `R`, `S`, `D`, `T` (stopped), `Z` (zombie), ... */
  state: string
  /** Start time in clock ticks since boot (field 22): with the pid it names one process for good. */
  startTime: number
}

/** The process's state and start time, or undefined when there is no such process. */
export function processStat (pid: number): ProcessStat | undefined {
  let stat: string
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return undefined
  }
  // Fields after the command name, which may hold spaces and parentheses.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return { state: rest[0] ?? '?', startTime: Number(rest[19]) }
}

/** True while a process with this pid exists and is not a zombie. */
export function isLiveProcess (pid: number): boolean {
  const s = processStat(pid)
  return s != null && s.state !== 'Z'
}
