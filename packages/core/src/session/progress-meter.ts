import type { CacheFetchStats } from '../volume/cache-fetch.js'
import type { LaneStats } from './lane-pump.js'
import type { MigrationProgress, MigrationWarning } from './report.js'

const EMIT_MS = 250
const RATE_WINDOW_MS = 2000

/** Turns acknowledgements into throttled progress snapshots with a sliding-window rate. */
export class ProgressMeter {
  lanes: () => LaneStats[] = () => []
  /** The destination's latest figures of cache blocks fetched elsewhere. */
  cache?: CacheFetchStats
  private bytes = 0
  private remaining = 0
  private round = 0
  private current: MigrationProgress['phase'] = 'handshake'
  private readonly samples: Array<[number, number]> = []
  private timer?: NodeJS.Timeout
  private readonly warnings: MigrationWarning[] = []

  constructor (private readonly sink?: (p: MigrationProgress) => void) {
    if (sink != null) {
      this.timer = setInterval(() => { this.emit() }, EMIT_MS)
      this.timer.unref()
    }
  }

  /** Enters a phase (and round); `queued` is the bytes the new round has to send. */
  phase (phase: MigrationProgress['phase'], round: number, queued = 0): void {
    this.current = phase
    this.round = round
    this.remaining = queued
    this.emit()
  }

  /** Raises a warning: it goes out with this and every later snapshot. */
  warn (w: MigrationWarning): void {
    this.warnings.push(w)
    this.emit()
  }

  /** Adds bytes queued for the current round. */
  queued (bytes: number): void { this.remaining += bytes }

  /** Records acknowledged bytes. */
  acked (bytes: number): void {
    this.bytes += bytes
    this.remaining = Math.max(0, this.remaining - bytes)
  }

  /** Current snapshot. */
  snapshot (): MigrationProgress {
    const now = performance.now()
    this.samples.push([now, this.bytes])
    while (this.samples.length > 2 && now - this.samples[0]![0] > RATE_WINDOW_MS) this.samples.shift()
    const [t0, b0] = this.samples[0]!
    const rate = now > t0 ? (this.bytes - b0) / ((now - t0) / 1000) : 0
    return {
      phase: this.current,
      round: this.round,
      bytes: this.bytes,
      remaining: this.remaining,
      rate,
      etaMs: rate > 0 ? this.remaining / rate * 1000 : undefined,
      lanes: this.lanes().map(l => ({ ...l })),
      ...(this.cache != null ? { cache: this.cache } : {}),
      ...(this.warnings.length > 0 ? { warnings: [...this.warnings] } : {})
    }
  }

  private emit (): void {
    this.sink?.(this.snapshot())
  }

  /** Stops periodic emission. */
  stop (): void {
    if (this.timer != null) clearInterval(this.timer)
    this.timer = undefined
  }
}
