import { createHash } from 'node:crypto'
import type { Bitmap } from '../bitmap.js'
import { VERIFY_REGION_BYTES } from '../constants.js'
import type { WorkerPool } from '../tracker/worker-pool.js'

/**
 * Verification digest of a file's first `size` bytes, computed in parallel: one region digest
 * (XXH64, see region-hash.ts) per VERIFY_REGION_BYTES region on the worker pool, then a SHA-256
 * over the size and the region digests. Both sides of a migration compute it the same way, so
 * equal digests mean equal bytes.
 */
export async function digestFile (pool: WorkerPool, path: string, size: number, signal?: AbortSignal): Promise<Uint8Array> {
  const regions = Math.ceil(size / VERIFY_REGION_BYTES)
  const out = new SharedArrayBuffer(Math.max(1, regions * 32))
  await digestRegions(pool, { path, size, out }, regions, { signal })
  return combineRegionDigests(size, new Uint8Array(out, 0, regions * 32))
}

/** Where {@link digestRegions} hashes from and writes to. */
export interface RegionDigestTarget {
  path: string
  /** File size (the last region may be short). */
  size: number
  /** Region digests, 32 bytes at each region's place. */
  out: SharedArrayBuffer
  /** Default VERIFY_REGION_BYTES. */
  regionSize?: number
}

/**
 * Hashes regions of a file on the worker pool, a few tasks per worker (so they balance): regions
 * 0..count-1, or the `list` of region numbers. `cpuShare` caps each worker's share of a core.
 */
export async function digestRegions (pool: WorkerPool, target: RegionDigestTarget, count: number, opts: { list?: readonly number[], cpuShare?: number, signal?: AbortSignal } = {}): Promise<void> {
  if (count === 0) return
  let list: SharedArrayBuffer | undefined
  if (opts.list != null) {
    list = new SharedArrayBuffer(count * 4)
    new Uint32Array(list).set(opts.list)
  }
  // A task costs a message with shared buffers (measured ~70 µs on the node's thread while the
  // lanes are busy): 128 regions (2 MiB, about a millisecond of hashing) at least per task.
  const per = Math.max(MIN_REGIONS_PER_TASK, Math.ceil(count / (pool.size * 4)))
  const tasks: Array<Promise<unknown>> = []
  for (let start = 0; start < count; start += per) {
    opts.signal?.throwIfAborted()
    tasks.push(pool.run({
      op: 'digest', path: target.path, size: target.size, out: target.out, regionSize: target.regionSize ?? VERIFY_REGION_BYTES, start, end: Math.min(count, start + per),
      ...(list != null ? { list } : {}),
      ...(opts.cpuShare != null ? { cpuShare: opts.cpuShare } : {})
    }))
  }
  await Promise.all(tasks)
}

/** Fewest regions a digest task gets (see digestRegions). */
const MIN_REGIONS_PER_TASK = 128

const ZERO_HASHES = new Map<number, Buffer>()

/** SHA-256 of `size` zero bytes (what a fresh, zero-filled unit or block hashes to), cached. */
export function zeroHash (size: number): Buffer {
  let h = ZERO_HASHES.get(size)
  if (h == null) {
    h = createHash('sha256').update(Buffer.alloc(size)).digest()
    ZERO_HASHES.set(size, h)
  }
  return h
}

/** The area digest from its region digests: SHA-256 over the size (u64 LE) and the list. */
export function combineRegionDigests (size: number, regionDigests: Uint8Array): Uint8Array {
  const h = createHash('sha256')
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(size))
  h.update(len)
  h.update(regionDigests)
  return h.digest()
}

/** Units left out of a verification digest (post-copy: cache blocks still to be fetched by hash). */
export interface DigestMask {
  /** Bit per unit: masked. */
  units: Bitmap
  unitSize: number
}

/**
 * The slot that stands for a masked region in a combined digest. Region digests are XXH64 values
 * with their length and a marker (see region-hash.ts), never 32 bytes of 0xff.
 */
const MASKED_SLOT = new Uint8Array(32).fill(0xff)

/**
 * Replaces the slots of regions [first, first + n) that lie in masked units with
 * 32 bytes of 0xff, in `slots` (the batch's own copy). Units are whole multiples of regions.
 */
export function maskRegionSlots (slots: Uint8Array, first: number, n: number, regionSize: number, mask: DigestMask): void {
  const perUnit = Math.max(1, mask.unitSize / regionSize)
  for (let i = 0; i < n; i++) {
    if (mask.units.get(Math.floor((first + i) / perUnit))) slots.set(MASKED_SLOT, i * 32)
  }
}
