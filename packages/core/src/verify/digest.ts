import { createHash } from 'node:crypto'
import { VERIFY_REGION_BYTES } from '../constants.js'
import type { WorkerPool } from '../tracker/worker-pool.js'

/**
 * SHA-256 digest of a file's first `size` bytes, computed in parallel: one SHA-256 per 1 MiB
 * region on the worker pool, then a SHA-256 over the size and the region digests. Both sides of a
 * migration compute it the same way, so equal digests mean equal bytes.
 */
export async function digestFile (pool: WorkerPool, path: string, size: number, signal?: AbortSignal): Promise<Uint8Array> {
  const regions = Math.ceil(size / VERIFY_REGION_BYTES)
  const out = new SharedArrayBuffer(Math.max(1, regions * 32))
  const per = Math.max(1, Math.ceil(regions / (pool.size * 4)))
  const tasks: Array<Promise<unknown>> = []
  for (let start = 0; start < regions; start += per) {
    signal?.throwIfAborted()
    tasks.push(pool.run({ op: 'digest', path, size, regionSize: VERIFY_REGION_BYTES, start, end: Math.min(regions, start + per), out }))
  }
  await Promise.all(tasks)
  return combineRegionDigests(size, new Uint8Array(out, 0, regions * 32))
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
