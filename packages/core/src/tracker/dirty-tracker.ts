import { createHash } from 'node:crypto'
import { Bitmap } from '../bitmap.js'
import { AbortedError } from '../errors.js'
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
  /** `shadow` keeps a copy of what the destination has (fast compare, costs RAM = size);
   *  `hash` keeps one SHA-256 per unit (costs 32 B per unit). */
  mode: TrackerMode
  /** Units per scan task; workers pull tasks, so smaller slices balance better. Default 64 MiB worth. */
  sliceUnits?: number
}

/**
 * Finds units whose bytes differ from what the destination holds.
 *
 * The baseline is never updated by a scan: it is updated by {@link DirtyTracker.accept} with the
 * exact bytes that were sent. So "dirty" always means "file ≠ destination", a write that lands
 * between scan and send is caught by the next scan, and a page written back to an older value
 * (A→B→A) cannot hide. The initial baseline is all zeros: the destination starts from zero-filled
 * files, so untouched zero units are never sent.
 */
export interface DirtyTracker {
  readonly units: number
  /** Scans the whole area on the worker pool; returns a fresh bitmap of dirty units. */
  scan: (signal?: AbortSignal) => Promise<Bitmap>
  /** Records that `data` (whole units from `start`) is now what the destination holds. */
  accept: (start: number, data: Uint8Array) => void
}

const ZERO_FP = new Map<number, Buffer>()
function zeroFingerprint (unitSize: number): Buffer {
  let fp = ZERO_FP.get(unitSize)
  if (fp == null) {
    fp = createHash('sha256').update(Buffer.alloc(unitSize)).digest()
    ZERO_FP.set(unitSize, fp)
  }
  return fp
}

/** Creates a dirty tracker for one area of an image; scans run on `pool`. */
export function createDirtyTracker (init: DirtyTrackerInit, pool: WorkerPool): DirtyTracker {
  const { path, size, unitSize, mode } = init
  if (size % unitSize !== 0) throw new RangeError(`size ${size} is not a multiple of ${unitSize}`)
  const units = size / unitSize
  const baselineBytes = mode === 'shadow' ? size : units * 32
  const baseline = new SharedArrayBuffer(Math.max(1, baselineBytes))
  const baseView = Buffer.from(baseline)
  if (mode === 'hash') {
    const zfp = zeroFingerprint(unitSize)
    for (let i = 0; i < units; i++) zfp.copy(baseView, i * 32)
  }
  // Slices are multiples of 8 units so that workers never share a bitmap byte.
  const slice = Math.max(8, Math.floor((init.sliceUnits ?? Math.ceil(64 * 1024 * 1024 / unitSize)) / 8) * 8)

  return {
    units,
    async scan (signal) {
      const bitmap = Bitmap.shared(units)
      const tasks: Array<Promise<unknown>> = []
      for (let start = 0; start < units; start += slice) {
        if (signal?.aborted === true) throw new AbortedError()
        tasks.push(pool.run({
          op: 'scan', path, mode, unitSize, start, end: Math.min(units, start + slice),
          baseline, bitmap: bitmap.bits.buffer as SharedArrayBuffer
        }))
      }
      await Promise.all(tasks)
      return bitmap
    },
    accept (start, data) {
      if (data.byteLength % unitSize !== 0) throw new RangeError('accept needs whole units')
      const n = data.byteLength / unitSize
      if (start < 0 || start + n > units) throw new RangeError('accept out of range')
      if (mode === 'shadow') {
        // Buffer#copy, not TypedArray#set: set into untouched shared memory was measured 6x slower.
        Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(baseView, start * unitSize)
      } else {
        for (let k = 0; k < n; k++) {
          createHash('sha256').update(data.subarray(k * unitSize, (k + 1) * unitSize)).digest().copy(baseView, (start + k) * 32)
        }
      }
    }
  }
}
