/**
 * Periodic throughput/latency snapshots of the write loop, published as a small JSON file so
 * that a benchmark can watch a workload (possibly on another host after migration) without
 * talking to it.
 */

import { renameSync, writeFileSync } from 'node:fs'
import { OPS_INTERVAL_MS } from './constants.js'

/** One snapshot as written to the ops file. */
export interface OpsSnapshot {
  /** Completed page writes of the image (continues across resumes, like the header's `writes`). */
  ops: number
  /** Page writes per second over the last interval. */
  opsPerSec: number
  /** 99th percentile of page-write latency over the last interval (0 if none): the write syscall plus how late its tick of the rate loop ran (CPU contention, stops). */
  p99Ms: number
  /** Wall-clock time of the snapshot (`Date.now()`). */
  t: number
}

/** Options of {@link createOpsReporter}. */
export interface OpsReporterInit {
  /** File to (atomically) rewrite with each snapshot. */
  path: string
  /** Completed writes when reporting starts. */
  initialOps: number
  /** Snapshot period; default {@link OPS_INTERVAL_MS}. */
  intervalMs?: number
}

/** Collects op latencies and publishes snapshots. */
export interface OpsReporter {
  /** Notes one completed page write and how long its syscall took. */
  recordOp: (latencyMs: number) => void
  /** Starts the periodic snapshots. */
  start: () => void
  /** Stops the timer and writes a last snapshot. */
  stop: () => void
}

/** Creates an ops reporter writing to `init.path` (via a temp file + rename, so readers never see half a file). */
export function createOpsReporter (init: OpsReporterInit): OpsReporter {
  const intervalMs = init.intervalMs ?? OPS_INTERVAL_MS
  const tempPath = `${init.path}.${process.pid}.tmp`
  let ops = init.initialOps
  // Latencies of the current interval; a typed array sorts numerically and fast.
  let latencies = new Float64Array(1024)
  let count = 0
  let intervalStart = performance.now()
  let timer: NodeJS.Timeout | undefined

  const publish = (): void => {
    const now = performance.now()
    const samples = latencies.subarray(0, count).sort()
    const p99 = count > 0 ? samples[Math.min(count - 1, Math.ceil(count * 0.99) - 1)] ?? 0 : 0
    const elapsedS = Math.max(now - intervalStart, 1) / 1000
    const snapshot: OpsSnapshot = { ops, opsPerSec: count / elapsedS, p99Ms: p99, t: Date.now() }
    writeFileSync(tempPath, JSON.stringify(snapshot) + '\n')
    renameSync(tempPath, init.path)
    count = 0
    intervalStart = now
  }

  return {
    recordOp (latencyMs) {
      ops++
      if (count === latencies.length) {
        const grown = new Float64Array(latencies.length * 2)
        grown.set(latencies)
        latencies = grown
      }
      latencies[count++] = latencyMs
    },
    start () {
      intervalStart = performance.now()
      timer = setInterval(publish, intervalMs)
    },
    stop () {
      clearInterval(timer)
      timer = undefined
      publish()
    }
  }
}
