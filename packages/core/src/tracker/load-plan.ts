import { createHash } from 'node:crypto'
import { readSync } from 'node:fs'
import type { Run } from '../wire/frames.js'

/**
 * How the bytes of a data chunk are read, in a form another thread can carry out (it holds no
 * payload): a data worker that owns a lane's connection reads the bytes itself, so they never
 * cross threads. Made by {@link DirtyTracker.plan}.
 *
 * - `shadow`: views of the tracker's shadow copy (shared memory), exactly the bytes compared;
 * - `file`: positional reads of the area's file; with `hashes` (hash mode), the SHA-256 of each
 *   unit read is stored there (32 bytes per unit, shared memory), so the tracker's fingerprint is
 *   that of the bytes sent.
 */
export type LoadPlan =
  | { kind: 'shadow', shadow: SharedArrayBuffer, unitSize: number }
  | { kind: 'file', path: string, unitSize: number, hashes?: SharedArrayBuffer }

/**
 * Stores the SHA-256 of each `unitSize` unit of `bytes` (units `firstUnit`…) into `hashes`, 32
 * bytes per unit at the unit's place: the hash-mode fingerprint of what was sent.
 */
export function recordUnitHashes (bytes: Uint8Array, firstUnit: number, unitSize: number, hashes: Uint8Array): void {
  for (let u = 0; u * unitSize < bytes.byteLength; u++) {
    hashes.set(createHash('sha256').update(bytes.subarray(u * unitSize, (u + 1) * unitSize)).digest(), (firstUnit + u) * 32)
  }
}

/** Opens (and caches) a file for reading by path; returns its descriptor. */
export type OpenForRead = (path: string) => number

/**
 * Carries out `plan` for `runs` into `out` (at least the runs' total size; its contents are
 * overwritten) and returns the bytes filled. Synchronous: it runs on a worker thread that owns
 * the lane, where a positional read is the cheapest way to the bytes.
 */
export function executeLoadPlan (plan: LoadPlan, runs: readonly Run[], out: Uint8Array, open: OpenForRead): number {
  const { unitSize } = plan
  let off = 0
  if (plan.kind === 'shadow') {
    const shadow = new Uint8Array(plan.shadow)
    for (const r of runs) {
      const len = r.count * unitSize
      out.set(shadow.subarray(r.start * unitSize, r.start * unitSize + len), off)
      off += len
    }
    return off
  }
  const fd = open(plan.path)
  const hashes = plan.hashes != null ? new Uint8Array(plan.hashes) : undefined
  for (const r of runs) {
    const len = r.count * unitSize
    let got = 0
    while (got < len) {
      const n = readSync(fd, out, off + got, len - got, r.start * unitSize + got)
      // Past the end of a short file the area reads as zeros, as the destination's file does.
      if (n === 0) { out.fill(0, off + got, off + len); break }
      got += n
    }
    if (hashes != null) recordUnitHashes(out.subarray(off, off + len), r.start, unitSize, hashes)
    off += len
  }
  return off
}
