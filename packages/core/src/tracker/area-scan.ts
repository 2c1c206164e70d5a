import { Bitmap } from '../bitmap.js'
import { SCAN_READ_BYTES, VERIFY_REGION_BYTES } from '../constants.js'
import { abortedBy } from '../errors.js'
import { combineRegionDigests, maskRegionSlots } from '../verify/digest.js'
import type { DigestMask } from '../verify/digest.js'
import type { Run } from '../wire/frames.js'
import type { DataExtentsProbe } from './data-extents.js'
import { holeUnits } from './data-extents.js'
import type { WorkerPool } from './worker-pool.js'
import type { ScanMode, ScanTask } from './worker-protocol.js'

/** An area's verification digests (one per region), kept current by the scans that read it. */
export class AreaDigests {
  readonly regions: number
  readonly out: SharedArrayBuffer
  /** Bit per region: hashed since its bytes last changed. */
  readonly fresh: SharedArrayBuffer

  constructor (readonly size: number) {
    this.regions = Math.ceil(size / VERIFY_REGION_BYTES)
    this.out = new SharedArrayBuffer(Math.max(1, this.regions * 32))
    this.fresh = new SharedArrayBuffer(Math.max(1, Math.ceil(this.regions / 8)))
  }

  /** What a scan task needs to keep them current. */
  get task (): ScanTask['digests'] { return { out: this.out, fresh: this.fresh, regionSize: VERIFY_REGION_BYTES, size: this.size } }

  /** Bytes [from, to) may have changed since they were hashed: their regions are hashed again at the next scan. */
  unfresh (from: number, to: number): void {
    const fresh = new Uint8Array(this.fresh)
    for (let g = Math.floor(from / VERIFY_REGION_BYTES); g < Math.ceil(to / VERIFY_REGION_BYTES); g++) Atomics.and(fresh, g >>> 3, ~(1 << (g & 7)) & 0xff)
  }

  /** The area's digest from the current region digests; with `mask`, masked units' regions left out. */
  combine (mask?: DigestMask): Uint8Array {
    const slots = new Uint8Array(this.out, 0, this.regions * 32)
    if (mask == null) return combineRegionDigests(this.size, slots)
    const copy = slots.slice()
    maskRegionSlots(copy, 0, this.regions, VERIFY_REGION_BYTES, mask)
    return combineRegionDigests(this.size, copy)
  }
}

/**
 * Units the destination gets elsewhere (e.g. from a replica), with the SHA-256 their bytes must
 * have; the scan workers check each once (shadow and zero modes) and clear its bit.
 */
export class AssumedUnits {
  private shared?: { bitmap: SharedArrayBuffer, hashes: SharedArrayBuffer }

  constructor (readonly units: number) {}

  set (unit: number, hash: Uint8Array): void {
    if (!Number.isInteger(unit) || unit < 0 || unit >= this.units || hash.byteLength !== 32) throw new RangeError('assume(): bad unit or hash')
    this.shared ??= { bitmap: new SharedArrayBuffer(Math.ceil(this.units / 8)), hashes: new SharedArrayBuffer(this.units * 32) }
    new Uint8Array(this.shared.bitmap)[unit >>> 3]! |= 1 << (unit & 7)
    new Uint8Array(this.shared.hashes).set(hash, unit * 32)
  }

  clear (unit: number): void {
    if (this.shared != null) new Uint8Array(this.shared.bitmap)[unit >>> 3]! &= ~(1 << (unit & 7))
  }

  /** What a scan task needs (undefined while nothing is assumed). */
  get task (): ScanTask['assumed'] { return this.shared }
}

/** What {@link scanArea} scans with. */
export interface AreaScan {
  path: string
  mode: ScanMode
  unitSize: number
  units: number
  /** Units per task (see {@link sliceUnits}). */
  slice: number
  baseline: SharedArrayBuffer
  digests: AreaDigests
  assumed: AssumedUnits
  cpuShare?: number
  /** Finds the file's data extents, so that holes are not read (absent: read everything). */
  extents?: DataExtentsProbe
  /** Shadow mode: units whose shadow may be non-zero (see `ScanTask.nonzero`). */
  nonzero?: SharedArrayBuffer
}

/** What {@link scanArea} found. */
export interface AreaScanResult {
  dirty: Bitmap
  /** Bytes read from the file (holes are not read). */
  bytesRead: number
  /** Bytes of the file the scan knew to be holes (not read). */
  holeBytes: number
  /** Milliseconds spent waiting for `ahead` (the caller's queue was long enough). */
  waitMs: number
}

/**
 * Units per scan task: multiples of 8 units (workers never share a bitmap byte) and of whole
 * verification regions and read buffers (a worker sees every region within one task); `want`
 * defaults to 64 MiB worth (workers pull tasks, so smaller slices balance better).
 */
export function sliceUnits (unitSize: number, want = Math.ceil(64 * 1024 * 1024 / unitSize)): number {
  const align = Math.max(8, Math.ceil(Math.max(VERIFY_REGION_BYTES, SCAN_READ_BYTES) / unitSize))
  return Math.max(align, Math.floor(want / align) * align)
}

/**
 * Scans a whole area on the pool, slice by slice; `onSlice` hears of each finished slice.
 *
 * The file's hole map is taken once, before any worker reads: a unit in a hole then counts as
 * read (as zeros) at that instant. A write into it after the map was taken is a write after the
 * unit was read, which the next scan finds (its map shows the new data), exactly like a write
 * landing behind a worker's read; the final scan runs paused, so nothing is left behind.
 */
export async function scanArea (pool: WorkerPool, a: AreaScan, opts: { signal?: AbortSignal, onSlice?: (dirty: Bitmap, start: number, end: number) => void, ahead?: () => Promise<void> }): Promise<AreaScanResult> {
  const dirty = Bitmap.shared(a.units)
  const extents = await a.extents?.(a.path, a.units * a.unitSize)
  const holes = extents != null ? holeUnits(extents, a.unitSize, a.units) : undefined
  const tasks: Array<Promise<number>> = []
  // Paced by `ahead`: at most one slice per worker in progress, so what the caller has queued
  // is what the scan is ahead by.
  const scanning = new Set<Promise<number>>()
  let waitMs = 0
  for (let start = 0; start < a.units; start += a.slice) {
    if (opts.ahead != null) {
      const t = performance.now()
      while (scanning.size >= pool.size) await Promise.race(scanning)
      await opts.ahead()
      waitMs += performance.now() - t
    }
    if (opts.signal?.aborted === true) throw abortedBy(opts.signal)
    const end = Math.min(a.units, start + a.slice)
    const task = pool.run({
      op: 'scan', path: a.path, mode: a.mode, unitSize: a.unitSize, start, end,
      baseline: a.baseline, bitmap: dirty.bits.buffer as SharedArrayBuffer, assumed: a.assumed.task, digests: a.digests.task,
      ...(a.cpuShare != null ? { cpuShare: a.cpuShare } : {}),
      ...(holes != null ? { holes } : {}),
      ...(a.nonzero != null ? { nonzero: a.nonzero } : {})
    }).then((reply) => { opts.onSlice?.(dirty, start, end); return reply.bytes })
    tasks.push(task)
    if (opts.ahead != null) {
      scanning.add(task)
      task.then(() => { scanning.delete(task) }, () => { scanning.delete(task) })
    }
  }
  const bytesRead = (await Promise.all(tasks)).reduce((x, y) => x + y, 0)
  return { dirty, bytesRead, holeBytes: a.units * a.unitSize - bytesRead, waitMs }
}

/** Throws unless every run lies within `units` units. */
export function checkRuns (runs: readonly Run[], units: number): void {
  for (const r of runs) {
    if (r.start < 0 || r.count < 1 || r.start + r.count > units) throw new RangeError('run out of range')
  }
}
