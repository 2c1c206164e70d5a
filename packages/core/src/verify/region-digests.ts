import { createHash } from 'node:crypto'
import { VERIFY_REGION_BYTES } from '../constants.js'
import type { WorkerPool } from '../tracker/worker-pool.js'
import { digestRegions, maskRegionSlots } from './digest.js'
import type { DigestMask } from './digest.js'
import { zeroRegionDigest } from './region-hash.js'

/**
 * Background pass period. Short, so that each pass is small: verification must wait for a pass
 * in progress, and that wait is inside the pause.
 */
const BACKGROUND_MS = 50

/** Regions folded into the combined digest per step (bounds the copy {@link RegionDigests.digest} makes). */
const COMBINE_BATCH = 64 * 1024

/**
 * The verification digest of a file that is being written, kept up to date in the background.
 *
 * The file starts zero-filled, so every region starts with the digest of zeros. A write marks its
 * regions stale when it starts and again when it ends; a background pass (every 50 ms, on the
 * worker pool) clears the stale marks of a batch and re-hashes those regions from the file. A write
 * that overlaps a pass marks its regions stale again when it ends, so no stale digest survives.
 * At verification only the regions written since the last pass are hashed: the digest leaves
 * the downtime when the network, not the CPU, is the bottleneck. Equal to {@link digestFile}.
 *
 * Memory is taken as regions are written, not when the session starts: a region never written
 * keeps an all-zero slot (which no SHA-256 digest is) that stands for the digest of zeros, so the
 * slot array stays untouched, unmapped memory until data lands there. A huge, mostly empty
 * incoming image costs no resident memory up front.
 */
export class RegionDigests {
  private readonly regions: number
  private readonly out: SharedArrayBuffer
  private readonly stale: Uint8Array
  /** Regions marked stale since the last pass (each once: `stale` dedupes). */
  private staleList: number[] = []
  private running?: Promise<void>
  private timer?: NodeJS.Timeout

  constructor (private readonly pool: WorkerPool, private readonly path: string, private readonly size: number, private readonly regionSize = VERIFY_REGION_BYTES) {
    this.regions = Math.ceil(size / regionSize)
    this.out = new SharedArrayBuffer(Math.max(1, this.regions * 32))
    this.stale = new Uint8Array(this.regions)
  }

  /** Starts re-hashing stale regions in the background. */
  start (): void {
    // A failed background pass (the pool stopped, the file went away) is not an error here:
    // its regions were marked stale again and digest() will hash them or fail itself.
    this.timer ??= setInterval(() => { if (this.running == null && this.staleList.length > 0) this.pass().catch(() => {}) }, BACKGROUND_MS)
    this.timer.unref()
  }

  /** Marks the regions of bytes [start, end) as changed. */
  touch (start: number, end: number): void {
    if (end <= start) return
    const last = Math.min(this.regions - 1, Math.floor((end - 1) / this.regionSize))
    for (let r = Math.floor(start / this.regionSize); r <= last; r++) this.mark(r)
  }

  /**
   * Stops the background passes, hashes what is still stale, and returns the file's digest; with
   * `mask`, the masked units' regions are left out (see {@link maskRegionSlots}).
   */
  async digest (signal?: AbortSignal, mask?: DigestMask): Promise<Uint8Array> {
    this.stop()
    await this.running
    await this.pass(signal)
    return this.combine(mask)
  }

  /** Stops the background passes. */
  stop (): void {
    if (this.timer != null) clearInterval(this.timer)
    this.timer = undefined
  }

  private mark (r: number): void {
    if (this.stale[r] === 1) return
    this.stale[r] = 1
    this.staleList.push(r)
  }

  /** SHA-256 over the size and every region's digest, an unwritten slot standing for zeros. */
  private combine (mask?: DigestMask): Uint8Array {
    const h = createHash('sha256')
    const len = Buffer.alloc(8)
    len.writeBigUInt64LE(BigInt(this.size))
    h.update(len)
    const zero = zeroRegionDigest(this.regionSize)
    const tail = this.size - (this.regions - 1) * this.regionSize
    const all = new Uint8Array(this.out, 0, this.regions * 32)
    for (let first = 0; first < this.regions; first += COMBINE_BATCH) {
      const n = Math.min(COMBINE_BATCH, this.regions - first)
      const batch = new Uint8Array(n * 32)
      batch.set(all.subarray(first * 32, (first + n) * 32))
      // Masked slots first (never all zeros afterwards), then unwritten slots: the digest of zeros.
      if (mask != null) maskRegionSlots(batch, first, n, this.regionSize, mask)
      const words = new Uint32Array(batch.buffer, 0, n * 8)
      for (let i = 0; i < n; i++) {
        const o = i * 8
        if ((words[o]! | words[o + 1]! | words[o + 2]! | words[o + 3]! | words[o + 4]! | words[o + 5]! | words[o + 6]! | words[o + 7]!) !== 0) continue
        const r = first + i
        batch.set(r === this.regions - 1 && tail !== this.regionSize ? zeroRegionDigest(tail) : zero, i * 32)
      }
      h.update(batch)
    }
    return h.digest()
  }

  private async pass (signal?: AbortSignal): Promise<void> {
    // Stale regions are often scattered (a round's dirty pages): hand them out as lists, a few
    // tasks in all, rather than one task per run (posting a task costs more than hashing a region).
    const list = this.staleList
    this.staleList = []
    for (const r of list) this.stale[r] = 0
    const run = digestRegions(this.pool, { path: this.path, size: this.size, out: this.out, regionSize: this.regionSize }, list.length, { list, signal })
      .catch((err: unknown) => { for (const r of list) this.mark(r); throw err })
    run.catch(() => {})
    this.running = run
    try { await run } finally { if (this.running === run) this.running = undefined }
  }
}
