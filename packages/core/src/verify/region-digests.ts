import { VERIFY_REGION_BYTES } from '../constants.js'
import type { WorkerPool } from '../tracker/worker-pool.js'
import { combineRegionDigests, digestRegions, zeroHash } from './digest.js'

/**
 * Background pass period. Short, so that each pass is small: verification must wait for a pass
 * in progress, and that wait is inside the pause.
 */
const BACKGROUND_MS = 50

/**
 * The verification digest of a file that is being written, kept up to date in the background.
 *
 * The file starts zero-filled, so every region starts with the digest of zeros. A write marks its
 * regions stale when it starts and again when it ends; a background pass (every 50 ms, on the
 * worker pool) clears the stale marks of a batch and re-hashes those regions from the file. A write
 * that overlaps a pass marks its regions stale again when it ends, so no stale digest survives.
 * At verification only the regions written since the last pass are hashed: the digest leaves
 * the downtime when the network, not the CPU, is the bottleneck. Equal to {@link digestFile}.
 */
export class RegionDigests {
  private readonly regions: number
  private readonly out: SharedArrayBuffer
  private readonly stale: Uint8Array
  private running?: Promise<void>
  private timer?: NodeJS.Timeout

  constructor (private readonly pool: WorkerPool, private readonly path: string, private readonly size: number, private readonly regionSize = VERIFY_REGION_BYTES) {
    this.regions = Math.ceil(size / regionSize)
    this.out = new SharedArrayBuffer(Math.max(1, this.regions * 32))
    this.stale = new Uint8Array(this.regions)
    const view = Buffer.from(this.out)
    const zero = zeroHash(regionSize)
    for (let r = 0; r < this.regions; r++) zero.copy(view, r * 32)
    const tail = size - (this.regions - 1) * regionSize
    if (this.regions > 0 && tail !== regionSize) zeroHash(tail).copy(view, (this.regions - 1) * 32)
  }

  /** Starts re-hashing stale regions in the background. */
  start (): void {
    // A failed background pass (the pool stopped, the file went away) is not an error here:
    // its regions were marked stale again and digest() will hash them or fail itself.
    this.timer ??= setInterval(() => { if (this.running == null) this.pass().catch(() => {}) }, BACKGROUND_MS)
    this.timer.unref()
  }

  /** Marks the regions of bytes [start, end) as changed. */
  touch (start: number, end: number): void {
    if (end <= start) return
    const last = Math.min(this.regions - 1, Math.floor((end - 1) / this.regionSize))
    for (let r = Math.floor(start / this.regionSize); r <= last; r++) this.stale[r] = 1
  }

  /** Stops the background passes, hashes what is still stale, and returns the file's digest. */
  async digest (signal?: AbortSignal): Promise<Uint8Array> {
    this.stop()
    await this.running
    await this.pass(signal)
    return combineRegionDigests(this.size, new Uint8Array(this.out, 0, this.regions * 32))
  }

  /** Stops the background passes. */
  stop (): void {
    if (this.timer != null) clearInterval(this.timer)
    this.timer = undefined
  }

  private async pass (signal?: AbortSignal): Promise<void> {
    // Stale regions are often scattered (a round's dirty pages): hand them out as lists, a few
    // tasks in all, rather than one task per run (posting a task costs more than hashing a region).
    const list: number[] = []
    for (let r = 0; r < this.regions; r++) {
      if (this.stale[r] === 1) { this.stale[r] = 0; list.push(r) }
    }
    const run = digestRegions(this.pool, { path: this.path, size: this.size, out: this.out, regionSize: this.regionSize }, list.length, { list, signal })
      .catch((err: unknown) => { for (const r of list) this.stale[r] = 1; throw err })
    run.catch(() => {})
    this.running = run
    try { await run } finally { if (this.running === run) this.running = undefined }
  }
}
