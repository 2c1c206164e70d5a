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
  /** Cache blocks read and checked against the volume's hashes (`--cache-reads`) by this process. */
  cacheReads: number
  /** Of {@link OpsSnapshot.cacheReads}, those that returned other bytes than the volume's: must stay 0. */
  badCacheReads: number
  /** Post-copy waits for a cache block (a batch of record appends or a cache read) by this process. */
  faultWaits: number
  /** 99th percentile of those waits over the last interval (0 if none): from asking for the blocks to being able to use them. */
  faultWaitP99Ms: number
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
  /** Notes one checked cache read; `bad`: it returned other bytes than the volume's. */
  recordCacheRead: (bad: boolean) => void
  /** Notes one wait for post-copy cache blocks and how long it took. */
  recordFaultWait: (latencyMs: number) => void
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
  // Latencies of the current interval.
  const latencies = new Samples()
  const faultWaitLatencies = new Samples()
  let cacheReads = 0
  let badCacheReads = 0
  let faultWaits = 0
  let intervalStart = performance.now()
  let timer: NodeJS.Timeout | undefined

  const publish = (): void => {
    const now = performance.now()
    const elapsedS = Math.max(now - intervalStart, 1) / 1000
    const snapshot: OpsSnapshot = {
      ops,
      opsPerSec: latencies.count / elapsedS,
      p99Ms: latencies.p99(),
      t: Date.now(),
      cacheReads,
      badCacheReads,
      faultWaits,
      faultWaitP99Ms: faultWaitLatencies.p99()
    }
    writeFileSync(tempPath, JSON.stringify(snapshot) + '\n')
    renameSync(tempPath, init.path)
    latencies.clear()
    faultWaitLatencies.clear()
    intervalStart = now
  }

  return {
    recordOp (latencyMs) {
      ops++
      latencies.add(latencyMs)
    },
    recordCacheRead (bad) {
      cacheReads++
      if (bad) badCacheReads++
    },
    recordFaultWait (latencyMs) {
      faultWaits++
      faultWaitLatencies.add(latencyMs)
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

/** Latencies of one interval; a typed array sorts numerically and fast. */
class Samples {
  private values = new Float64Array(1024)
  count = 0

  add (value: number): void {
    if (this.count === this.values.length) {
      const grown = new Float64Array(this.values.length * 2)
      grown.set(this.values)
      this.values = grown
    }
    this.values[this.count++] = value
  }

  /** The 99th percentile (0 without samples). */
  p99 (): number {
    if (this.count === 0) return 0
    const sorted = this.values.subarray(0, this.count).sort()
    return sorted[Math.min(this.count - 1, Math.ceil(this.count * 0.99) - 1)] ?? 0
  }

  clear (): void { this.count = 0 }
}
