import { closeSync, openSync, readSync } from 'node:fs'
import { Bitmap } from '../bitmap.js'
import { COOPERATIVE_ACK_TIMEOUT_MS, VERIFY_REGION_BYTES } from '../constants.js'
import { abortedBy } from '../errors.js'
import { digestRegions } from '../verify/digest.js'
import { AreaDigests, AssumedUnits, checkRuns, scanArea, sliceUnits } from './area-scan.js'
import type { Run } from '../wire/frames.js'
import { DirtyMarks } from './dirty-marks.js'
import { createExtentProbe } from './data-extents.js'
import type { DataExtentsProbe } from './data-extents.js'
import type { DirtyTracker, ScanResult } from './dirty-tracker.js'
import { readRuns } from './dirty-tracker.js'
import type { WorkerPool } from './worker-pool.js'

/**
 * Something that knows which units of an area were written: the workload's own marks
 * ({@link marksDirtySource}), or its hypervisor's dirty bitmaps (a QEMU disk). The first `take`
 * starts recording; each later one returns the units written since the previous take.
 */
export interface DirtySource {
  /**
   * Units written since the previous take (the first take starts recording and may return
   * nothing). `paused`: the writer is stopped, so the answer must be complete.
   */
  take: (paused: boolean, signal?: AbortSignal) => Promise<Bitmap>
  /** True when the last take could not see everything (its units come in a later take). */
  readonly incomplete: boolean
  /** Milliseconds the last take spent waiting for the writer (not work). */
  readonly waitedMs: number
  close: () => void | Promise<void>
}

/** Options of {@link createCooperativeTracker}. */
export interface CooperativeTrackerInit {
  /** File holding the area. */
  path: string
  size: number
  unitSize: number
  /** The dirty-marks file the workload writes (created when missing); or give `source`. */
  marksPath?: string
  /** Where the dirty units come from, when not from a marks file. */
  source?: DirtySource
  /** Share of a core each worker may use for the first full read and digests (default 1). */
  cpuShare?: number
  /** How the first full read learns the file's holes (default `lseek(SEEK_DATA)`); `false`: read all. */
  dataExtents?: DataExtentsProbe | false
}

/**
 * The dirty source of a workload that marks what it writes in a {@link DirtyMarks} file: a take
 * flips the marks' epoch, waits for the writer to acknowledge it, and takes the old bitmap.
 */
export function marksDirtySource (marksPath: string, units: number): DirtySource {
  const marks = DirtyMarks.open(marksPath, units)
  // An epoch whose bitmap may not be taken yet: the writer has not acknowledged the next one.
  let unacked: number | undefined
  let waited = 0
  return {
    get incomplete () { return unacked != null },
    get waitedMs () { return waited },
    close: () => { marks.close() },
    async take (paused, signal) {
      waited = 0
      const out = new Bitmap(units)
      const current = marks.epoch
      if (paused) {
        // The writer is stopped: whatever it marked (even units it had not written yet) is final.
        marks.take(current, out.bits)
        marks.take(current + 1, out.bits)
        unacked = undefined
        return out
      }
      if (unacked != null && marks.ack === current) { marks.take(unacked, out.bits); unacked = undefined }
      if (unacked != null) return out // still waiting for the writer: take nothing more yet
      const next = marks.flip()
      // Take the old bitmap only once the writer finished every batch it began under it. A writer
      // that does not answer (stopped, or no workload) is asked again at the next scan.
      const waitFrom = performance.now()
      const until = waitFrom + COOPERATIVE_ACK_TIMEOUT_MS
      while (marks.ack !== next && performance.now() < until) {
        if (signal?.aborted === true) throw abortedBy(signal)
        await new Promise(resolve => setTimeout(resolve, 1))
      }
      waited = performance.now() - waitFrom
      if (marks.ack === next) marks.take(current, out.bits)
      else unacked = current
      return out
    }
  }
}

/**
 * A tracker for writers whose writes are known without reading the area (see {@link DirtySource}):
 * a round costs time in proportion to what changed, not to the area's size. The first scan
 * starts the source and reads the whole area once (every non-zero unit is sent, every
 * verification region hashed); later scans take the source's bitmap. The verification digests
 * are kept current by rehashing only the regions of dirty units, so the final round's digest
 * costs what the final dirty set costs.
 */
export function createCooperativeTracker (init: CooperativeTrackerInit, pool: WorkerPool): DirtyTracker {
  const { path, size, unitSize } = init
  if (size % unitSize !== 0) throw new RangeError(`size ${size} is not a multiple of ${unitSize}`)
  const units = size / unitSize
  const source = init.source ?? (init.marksPath != null ? marksDirtySource(init.marksPath, units) : undefined)
  if (source == null) throw new RangeError('a cooperative tracker needs a marks file or a dirty source')
  const digests = new AreaDigests(size)
  const invalid = new Bitmap(units)
  const assumed = new AssumedUnits(units)
  let first = true
  let fd: number | undefined

  /** Rehashes the verification regions holding the dirty units, on the pool. */
  const rehash = async (dirty: Bitmap, paused: boolean): Promise<void> => {
    const list: number[] = []
    let last = -1
    for (const r of dirty.runs()) {
      const from = Math.floor(r.start * unitSize / VERIFY_REGION_BYTES)
      const to = Math.ceil((r.start + r.count) * unitSize / VERIFY_REGION_BYTES)
      for (let g = Math.max(from, last + 1); g < to; g++) { list.push(g); last = g }
    }
    await digestRegions(pool, { path, size, out: digests.out }, list.length, { list, ...(init.cpuShare != null && !paused ? { cpuShare: init.cpuShare } : {}) })
  }

  return {
    units,
    mode: 'cooperative',
    async scan (opts = {}): Promise<ScanResult> {
      if (first) {
        first = false
        // From here every write is marked; then read the whole area once (writes racing with
        // this read are marked, so the next round sends them again).
        await source.take(opts.paused === true, opts.signal)
        // Holes are skipped too: the first read of a mostly-empty area costs what it holds.
        const r = await scanArea(pool, {
          path, mode: 'zero', unitSize, units, slice: sliceUnits(unitSize), baseline: new SharedArrayBuffer(1), digests, assumed, cpuShare: init.cpuShare,
          extents: init.dataExtents === false ? undefined : init.dataExtents ?? createExtentProbe()
        }, opts)
        return { dirty: r.dirty, bytesRead: r.bytesRead, holeBytes: r.holeBytes, initial: true, digest: opts.digest === true ? digests.combine() : undefined }
      }
      const dirty = await source.take(opts.paused === true, opts.signal)
      dirty.or(invalid)
      invalid.reset()
      opts.onSlice?.(dirty, 0, units)
      await rehash(dirty, opts.paused === true)
      return { dirty, incomplete: source.incomplete, waitMs: source.waitedMs, digest: opts.digest === true ? digests.combine() : undefined }
    },
    async load (runs: readonly Run[]) {
      checkRuns(runs, units)
      // Memory lives on tmpfs: synchronous reads are memory copies.
      const handle = fd ??= openSync(path, 'r')
      return await readRuns((buf, off, len, pos) => readSync(handle, buf, off, len, pos), runs, unitSize)
    },
    plan (runs: readonly Run[]) {
      checkRuns(runs, units)
      return { kind: 'file', path, unitSize }
    },
    // Every write after a unit was read is marked, so either send's bytes are corrected next round.
    forget () {},
    assume (unit, hash) {
      // Checked by the first (full) scan only: from then on the marks say what changed.
      if (!first) throw new RangeError('assume() must come before the first scan')
      assumed.set(unit, hash)
    },
    invalidate (runs) {
      for (const r of runs) {
        for (let u = r.start; u < r.start + r.count; u++) {
          invalid.set(u)
          assumed.clear(u)
        }
      }
    },
    maskedDigest (mask) { return digests.combine(mask) },
    async close () {
      if (fd != null) closeSync(fd)
      fd = undefined
      await source.close()
    }
  }
}
