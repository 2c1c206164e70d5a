/**
 * Auto-converge for workloads that cannot be slowed from inside, as QEMU's cpu-throttle: let the
 * workload run `runMs`, then hold it stopped for `runMs × f / (1 − f)` (f = 0.99: ~2 s per 20 ms).
 * A migration pause always wins over the cycle: while paused, the cycle never lets it run.
 */
export class DutyCycle {
  private fraction = 0
  private paused = false
  private held = false
  private cycle: NodeJS.Timeout | undefined
  private holdTimer: NodeJS.Timeout | undefined
  private stopped = false

  /**
   * @param hold - stops the workload (idempotent)
   * @param release - lets it run again (idempotent)
   * @param runMs - how long it runs between two holds
   */
  constructor (private readonly hold: () => Promise<void>, private readonly release: () => Promise<void>, private readonly runMs = 20) {}

  /** Throttled fraction now (0 = runs freely). */
  get current (): number { return this.fraction }

  /** Sets the throttle: hold the workload stopped for `f` of the time (clamped to 0 … 0.99). */
  async set (f: number): Promise<void> {
    const was = this.fraction
    this.fraction = Math.max(0, Math.min(0.99, f))
    if (this.fraction === 0) {
      this.clear()
      if (this.held) await this.letRun()
      return
    }
    if (was === 0 && this.cycle == null && this.holdTimer == null) this.runThenHold()
  }

  /** A migration pause: from now on the cycle never releases the workload. */
  async pause (): Promise<void> {
    this.paused = true
    await this.hold()
  }

  /** The migration pause ends: the workload runs again (unless the cycle holds it right now). */
  async resume (): Promise<void> {
    this.paused = false
    if (this.holdTimer == null) { this.held = false; await this.release() }
  }

  /** Ends the cycle for good (the workload exited or was stopped). */
  stop (): void {
    this.stopped = true
    this.fraction = 0
    this.clear()
  }

  private clear (): void {
    clearTimeout(this.cycle)
    clearTimeout(this.holdTimer)
    this.cycle = undefined
    this.holdTimer = undefined
  }

  private async letRun (): Promise<void> {
    this.held = false
    if (!this.paused && !this.stopped) await this.release()
  }

  private runThenHold (): void {
    this.cycle = setTimeout(() => {
      this.cycle = undefined
      if (this.fraction === 0 || this.stopped) return
      this.held = true
      const holding = this.paused ? Promise.resolve() : this.hold()
      void holding.catch(() => {}).then(() => {
        this.holdTimer = setTimeout(() => {
          this.holdTimer = undefined
          void this.letRun().catch(() => {}).then(() => { if (this.fraction > 0 && !this.stopped) this.runThenHold() })
        }, this.runMs * this.fraction / (1 - this.fraction))
      })
    }, this.runMs)
  }
}
