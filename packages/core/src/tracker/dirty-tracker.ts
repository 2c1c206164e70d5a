import type { FileHandle } from 'node:fs/promises'
import { open } from 'node:fs/promises'
import type { Bitmap } from '../bitmap.js'
import { zeroHash } from '../verify/digest.js'
import type { DigestMask } from '../verify/digest.js'
import { recordUnitHashes } from './load-plan.js'
import type { LoadPlan } from './load-plan.js'
import type { ShadowPool } from './shadow-pool.js'
import type { Run } from '../wire/frames.js'
import { AreaDigests, AssumedUnits, checkRuns, scanArea, sliceUnits } from './area-scan.js'
import { createExtentProbe } from './data-extents.js'
import type { DataExtentsProbe } from './data-extents.js'
import type { WorkerPool } from './worker-pool.js'
import type { TrackerMode } from './worker-protocol.js'

/** Options of {@link createDirtyTracker}. */
export interface DirtyTrackerInit {
  /** File holding the area (written by the workload, another process). */
  path: string
  /** Area size in bytes (a multiple of `unitSize`). */
  size: number
  /** Page or block size. */
  unitSize: number
  /** `shadow` keeps a copy of what the destination has (fast compares, costs RAM = size);
   *  `hash` keeps one SHA-256 per unit (costs 32 B per unit, and a hash per unit per scan). */
  mode: TrackerMode
  /** Units per scan task; workers pull tasks, so smaller slices balance better. Default 64 MiB worth. */
  sliceUnits?: number
  /** Share of a core each scan worker may use (0 < share ≤ 1, default 1): the scanners' CPU budget. */
  cpuShare?: number
  /**
   * How scans learn the file's holes, which they then do not read (default: `lseek(SEEK_DATA)`
   * via {@link createExtentProbe}); `false` reads the whole file every scan.
   */
  dataExtents?: DataExtentsProbe | false
  /** Where a shadow comes from and goes back to (shadow mode): reused across migrations. */
  shadows?: ShadowPool
}

/** Options of {@link DirtyTracker.scan}. */
export interface ScanOptions {
  signal?: AbortSignal
  /** Also compute the verification digest of the area as read. */
  digest?: boolean
  /** The workload is paused (the final round): nothing changes while the scan runs. */
  paused?: boolean
  /**
   * Called as soon as the bits of units [start, end) are final, so the caller can start sending
   * them while the rest of the area is still being scanned.
   */
  onSlice?: (dirty: Bitmap, start: number, end: number) => void
  /**
   * Awaited before each slice is handed to a worker: resolves when the caller wants more (its
   * send queue is short). A scan need not run far ahead of the lanes; on a machine with few cores
   * it would take their CPU for nothing. The time waited counts as `waitMs`, not as scan work.
   */
  ahead?: () => Promise<void>
}

/** Result of a scan. */
export interface ScanResult {
  /** Units to send this round. */
  dirty: Bitmap
  /**
   * True when the scan could not see everything that changed (a cooperative writer did not
   * acknowledge the new epoch in time): the units it missed come in a later scan, so an empty
   * result does not mean "idle".
   */
  incomplete?: boolean
  /**
   * Milliseconds of the scan spent waiting for the workload (a cooperative writer acknowledging
   * the new epoch): not work, and absent from the final scan, where the workload is paused.
   */
  waitMs?: number
  /** Verification digest of the area as read by this scan (only with `digest: true`). */
  digest?: Uint8Array
  /** Bytes the scan read from the file (holes and units known from elsewhere are not read). */
  bytesRead?: number
  /** Bytes the scan skipped as holes of a sparse file. */
  holeBytes?: number
  /** A one-off first read of the whole area; later scans cost only what changed (cooperative tracker). */
  initial?: boolean
}

/**
 * Finds units whose bytes differ from what the destination holds, and hands out the bytes to send.
 *
 * The baseline is "what the destination holds once this round is acknowledged":
 * - shadow mode: a scan copies the new bytes of each dirty unit into the shadow, and
 *   {@link DirtyTracker.load} returns views of the shadow, so exactly the bytes compared are sent;
 * - hash mode: {@link DirtyTracker.load} reads the file and records the SHA-256 of the bytes it
 *   returns, so the fingerprint is always that of the bytes sent.
 *
 * Either way a write that lands after a unit was read is caught by the next scan, and a unit
 * written back to an older value (A→B→A) cannot hide. The initial baseline is all zeros: the
 * destination starts from zero-filled files, so untouched zero units are never sent.
 * Rounds must not overlap: scan only after every chunk of the previous round was acknowledged.
 */
export interface DirtyTracker {
  readonly units: number
  readonly mode: TrackerMode | 'cooperative'
  /** Scans the whole area on the worker pool; with `digest`, also hashes it for verification. */
  scan: (opts?: ScanOptions) => Promise<ScanResult>
  /** The bytes to send for `runs` (whole units), recorded as what the destination will hold. */
  load: (runs: readonly Run[]) => Promise<Uint8Array[]>
  /**
   * Like {@link DirtyTracker.load}, for a data worker to carry out: how to read the bytes of
   * `runs`, recorded as what the destination will hold once the plan ran.
   */
  plan: (runs: readonly Run[]) => LoadPlan
  /**
   * A chunk of these units was sent twice from plans (its first lane failed), and the two sends
   * may have read different bytes: the destination may hold either, so the next scan must send
   * them again unless the tracker knows both sends were the same bytes.
   */
  forget: (runs: readonly Run[]) => void
  /**
   * The destination will hold bytes hashing to `hash` for `unit` (it gets them elsewhere, e.g.
   * from a replica), so a scan reports the unit only if its bytes here differ. Hash mode takes
   * it as the unit's fingerprint; shadow mode checks it once, in the next scan's worker.
   */
  assume: (unit: number, hash: Uint8Array) => void
  /**
   * The destination does not hold these units after all (its file has zeros there): the next
   * scan reports each of them again unless it is all zeros.
   */
  invalidate: (runs: readonly Run[]) => void
  /**
   * The verification digest as of the last digest scan (the final, paused one), with the masked
   * units' regions left out (post-copy: blocks the destination fetches later by hash).
   */
  maskedDigest: (mask: DigestMask) => Uint8Array
  /** Releases the file handle. */
  close: () => Promise<void>
}

/** Largest gap (in bytes) between two runs that is read through rather than split (hash mode). */
const COALESCE_GAP = 64 * 1024

/** Creates a dirty tracker for one area of an image; scans run on `pool`. */
export function createDirtyTracker (init: DirtyTrackerInit, pool: WorkerPool): DirtyTracker {
  const { path, size, unitSize, mode } = init
  if (size % unitSize !== 0) throw new RangeError(`size ${size} is not a multiple of ${unitSize}`)
  const units = size / unitSize
  const baseline = mode === 'shadow' && init.shadows != null ? init.shadows.acquire(size) : new SharedArrayBuffer(Math.max(1, mode === 'shadow' ? size : units * 32))
  const baseView = Buffer.from(baseline)
  if (mode === 'hash') {
    const zfp = zeroHash(unitSize)
    for (let i = 0; i < units; i++) zfp.copy(baseView, i * 32)
  }
  const slice = sliceUnits(unitSize, init.sliceUnits)
  // One handle for all loads: concurrent loads share the promise (two opens would leak one).
  let fh: Promise<FileHandle> | undefined
  // Verification digests, kept current by every scan: a final scan only rehashes changed regions.
  const digests = new AreaDigests(size)
  const assumed = new AssumedUnits(units)
  const extents = init.dataExtents === false ? undefined : init.dataExtents ?? createExtentProbe()
  // Shadow mode: which units' shadow may be non-zero, so a hole is compared without touching it.
  const nonzero = mode === 'shadow' ? new SharedArrayBuffer(Math.max(1, Math.ceil(units / 8))) : undefined
  let released = false

  return {
    units,
    mode,
    async scan (opts = {}) {
      const cpuShare = opts.paused === true ? undefined : init.cpuShare
      const r = await scanArea(pool, { path, mode, unitSize, units, slice, baseline, digests, assumed, cpuShare, extents, nonzero }, opts)
      return { dirty: r.dirty, bytesRead: r.bytesRead, holeBytes: r.holeBytes, digest: opts.digest === true ? digests.combine() : undefined, ...(r.waitMs > 0 ? { waitMs: r.waitMs } : {}) }
    },
    async load (runs) {
      checkRuns(runs, units)
      if (mode === 'shadow') return runs.map(r => baseView.subarray(r.start * unitSize, (r.start + r.count) * unitSize))
      fh ??= open(path, 'r')
      const parts = await readRuns(await fh, runs, unitSize)
      for (const [k, r] of runs.entries()) {
        recordUnitHashes(parts[k]!, r.start, unitSize, baseView)
        // The bytes sent may be newer than those the scan hashed: hash their regions again next scan.
        digests.unfresh(r.start * unitSize, (r.start + r.count) * unitSize)
      }
      return parts
    },
    plan (runs) {
      checkRuns(runs, units)
      if (mode === 'shadow') return { kind: 'shadow', shadow: baseline, unitSize }
      // As in load(): the bytes sent may be newer than those the scan hashed.
      for (const r of runs) digests.unfresh(r.start * unitSize, (r.start + r.count) * unitSize)
      return { kind: 'file', path, unitSize, hashes: baseline }
    },
    forget (runs) {
      checkRuns(runs, units)
      // Shadow mode sends the shadow both times (it changes only in scans, between rounds).
      if (mode !== 'hash') return
      // A fingerprint no bytes have: the next scan reports the unit whatever it holds.
      for (const r of runs) baseView.fill(0xff, r.start * 32, (r.start + r.count) * 32)
    },
    assume (unit, hash) {
      if (mode !== 'hash') { assumed.set(unit, hash); return }
      if (!Number.isInteger(unit) || unit < 0 || unit >= units || hash.byteLength !== 32) throw new RangeError('assume(): bad unit or hash')
      baseView.set(hash, unit * 32)
    },
    invalidate (runs) {
      checkRuns(runs, units)
      for (const r of runs) {
        if (mode === 'shadow') {
          baseView.fill(0, r.start * unitSize, (r.start + r.count) * unitSize)
          for (let u = r.start; u < r.start + r.count; u++) assumed.clear(u)
        } else for (let u = r.start; u < r.start + r.count; u++) zeroHash(unitSize).copy(baseView, u * 32)
      }
    },
    maskedDigest (mask) { return digests.combine(mask) },
    async close () {
      const h = fh
      fh = undefined
      await (await h?.catch(() => undefined))?.close()
      if (mode === 'shadow' && init.shadows != null && !released) {
        released = true
        init.shadows.release(baseline, nonzero != null ? { bits: nonzero, unitSize } : undefined)
      }
    }
  }
}

/** Reads `len` bytes at `pos` into `buf` at `off`; returns the bytes read (0 at end of file). */
export type ReadAt = (buf: Buffer, off: number, len: number, pos: number) => number | Promise<number>

/**
 * Reads runs from a file, one buffer per run; nearby runs share one sequential read. `read` is a
 * file handle (async) or a synchronous reader (for tmpfs, where a read is a memory copy and a
 * thread-pool round trip per run would cost more than the copy).
 */
export async function readRuns (file: FileHandle | ReadAt, runs: readonly Run[], unitSize: number): Promise<Buffer[]> {
  const read: ReadAt = typeof file === 'function' ? file : async (buf, off, len, pos) => (await file.read(buf, off, len, pos)).bytesRead
  const out: Buffer[] = []
  let i = 0
  while (i < runs.length) {
    let j = i
    while (j + 1 < runs.length && (runs[j + 1]!.start - (runs[j]!.start + runs[j]!.count)) * unitSize <= COALESCE_GAP) j++
    const first = runs[i]!
    const last = runs[j]!
    const span = Buffer.allocUnsafe((last.start + last.count - first.start) * unitSize)
    let got = 0
    while (got < span.byteLength) {
      const n = await read(span, got, span.byteLength - got, first.start * unitSize + got)
      if (n === 0) { span.fill(0, got); break }
      got += n
    }
    for (let k = i; k <= j; k++) {
      const r = runs[k]!
      const from = (r.start - first.start) * unitSize
      out.push(span.subarray(from, from + r.count * unitSize))
    }
    i = j + 1
  }
  return out
}
