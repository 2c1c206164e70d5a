import type { TokenBucket } from './token-bucket.js'

/** The workload's own measure of its progress. */
export interface WorkloadProgress {
  /** Operations per second over its last reporting interval. */
  opsPerSec: number
}

/** Options of {@link Pacer}. */
export interface PacerInit {
  /** The migration's total bandwidth budget; the pacer changes its rate. */
  budget: TokenBucket
  /** The configured cap (Infinity: none); the pacer never goes above it. */
  maxRate: number
  /** Reads the workload's progress (undefined when it has none to report). */
  progress: () => Promise<WorkloadProgress | undefined>
  /** The migration's current send rate in bytes per second. */
  sendRate: () => number
  /** Back off when ops/s fall below the baseline by more than this fraction (default 0.1). */
  dropFraction?: number
  /** How often to look (default 1 s: workloads report about once a second). */
  intervalMs?: number
  /** Lowest rate it backs off to, bytes per second (default 1 MB/s). */
  minRate?: number
}

/** What adaptive pacing did during a migration. */
export interface PacingReport {
  baselineOpsPerSec: number
  /** Lowest ops/s the workload reported during the migration. */
  minOpsPerSec: number
  /** Times the pacer cut the rate. */
  backoffs: number
  /** Lowest rate it set, bytes per second (undefined if it never cut). */
  lowestRate?: number
}

/**
 * Adaptive pacing: watches the workload's ops/s against its rate before the migration; when it
 * drops by more than `dropFraction`, halves the migration's bandwidth (from what it actually
 * sends); when it has recovered (within half that fraction), raises it by half again, up to the cap.
 */
export class Pacer {
  private timer?: NodeJS.Timeout
  private busy = false
  /** Auto-converge's throttle: a throttled workload is expected to be slower by that much. */
  throttle = 0
  readonly report: PacingReport

  constructor (private readonly init: PacerInit, baselineOpsPerSec: number) {
    this.report = { baselineOpsPerSec, minOpsPerSec: baselineOpsPerSec, backoffs: 0 }
  }

  start (): void {
    this.timer = setInterval(() => {
      if (this.busy) return
      this.busy = true
      void this.step().finally(() => { this.busy = false })
    }, this.init.intervalMs ?? 1000)
    this.timer.unref()
  }

  stop (): void { clearInterval(this.timer) }

  /** One look at the workload; exported for tests through {@link Pacer.decide}. */
  private async step (): Promise<void> {
    const p = await this.init.progress().catch(() => undefined)
    if (p == null) return
    const next = Pacer.decide(this.report.baselineOpsPerSec * (1 - this.throttle), p.opsPerSec, this.init.budget.rate, this.init.sendRate(), this.init.maxRate, this.init.dropFraction ?? 0.1, this.init.minRate ?? 1e6)
    this.report.minOpsPerSec = Math.min(this.report.minOpsPerSec, p.opsPerSec)
    if (next === this.init.budget.rate) return
    if (next < this.init.budget.rate) {
      this.report.backoffs++
      this.report.lowestRate = Math.min(this.report.lowestRate ?? Infinity, next)
    }
    this.init.budget.setRate(next)
  }

  /** The rate to use next, given the workload's baseline and current ops/s and the current rates. */
  static decide (baselineOps: number, ops: number, rate: number, sending: number, maxRate: number, drop: number, minRate: number): number {
    if (baselineOps <= 0) return rate
    if (ops < baselineOps * (1 - drop)) return Math.max(minRate, Math.min(rate, sending) * 0.5)
    if (ops >= baselineOps * (1 - drop / 2) && rate < maxRate) {
      const up = rate * 1.5
      return up >= maxRate ? maxRate : up
    }
    return rate
  }
}
