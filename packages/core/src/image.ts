import { InvalidImageError } from './errors.js'
import type { WorkloadProgress } from './pacing/pacer.js'

/** The memory of an image: pages in a file another process writes (tmpfs, e.g. /dev/shm). */
export interface MemorySpec {
  /** File holding the memory. */
  path: string
  /** Bytes, a multiple of `pageSize`. */
  size: number
  /** Page size in bytes (4096 by default). */
  pageSize: number
}

/** The local storage cache of an image: blocks in a file on disk. */
export interface CacheSpec {
  /** File holding the cache. */
  path: string
  /** Bytes, a multiple of `blockSize`. */
  size: number
  /** Block size in bytes (256 KiB by default). */
  blockSize: number
}

/** One migratable unit: memory + cache + the driver that controls its workload. */
export interface ImageSpec {
  /** 1–128 chars of [A-Za-z0-9._-]. */
  name: string
  memory: MemorySpec
  cache: CacheSpec
  /** Driver that runs the workload (e.g. `synthetic`). */
  driver: string
  /** Driver settings that travel with the image (JSON-serialisable). */
  driverConfig: Record<string, unknown>
}

/**
 * Controls a running workload. The source session pauses it for the switchover, captures its
 * device state, and resumes it if anything fails before commit.
 */
export interface WorkloadController {
  /** Stops the workload from changing memory, cache or devices. */
  pause: () => Promise<void>
  /** Lets it run again (after an abort). */
  resume: () => Promise<void>
  /** The device state, captured while paused. */
  deviceState: () => Promise<Uint8Array>
  /** Ends the workload here for good (it now runs on the destination). */
  stop: () => Promise<void>
  /**
   * Auto-converge: hold the workload paused for `fraction` of the time (0 = run freely) so it
   * dirties memory more slowly. Optional: a workload without it cannot be throttled.
   */
  throttle?: (fraction: number) => Promise<void>
  /** The workload's own progress (ops/s), for adaptive pacing. Optional. */
  progress?: () => Promise<WorkloadProgress | undefined>
}

const NAME_RE = /^[A-Za-z0-9._-]{1,128}$/

function isPow2 (n: number): boolean { return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0 }

/** Checks an image description; throws {@link InvalidImageError} naming the bad field. */
export function validateImageSpec (spec: ImageSpec): void {
  if (typeof spec !== 'object' || spec == null) throw new InvalidImageError('image spec must be an object')
  if (typeof spec.name !== 'string' || !NAME_RE.test(spec.name) || spec.name.startsWith('.')) {
    throw new InvalidImageError('image name must be 1-128 chars of [A-Za-z0-9._-], not starting with a dot')
  }
  const m = spec.memory
  if (m == null || typeof m.path !== 'string' || m.path === '') throw new InvalidImageError('memory.path is required')
  if (!isPow2(m.pageSize) || m.pageSize < 512) throw new InvalidImageError('memory.pageSize must be a power of two ≥ 512')
  if (!Number.isSafeInteger(m.size) || m.size < 0 || m.size % m.pageSize !== 0) throw new InvalidImageError(`memory.size (${m.size}) must be a multiple of memory.pageSize (${m.pageSize})`)
  const c = spec.cache
  if (c == null || typeof c.path !== 'string' || c.path === '') throw new InvalidImageError('cache.path is required')
  if (!isPow2(c.blockSize) || c.blockSize < 4096) throw new InvalidImageError('cache.blockSize must be a power of two ≥ 4096')
  if (!Number.isSafeInteger(c.size) || c.size < 0 || c.size % c.blockSize !== 0) throw new InvalidImageError(`cache.size (${c.size}) must be a multiple of cache.blockSize (${c.blockSize})`)
  if (typeof spec.driver !== 'string' || !NAME_RE.test(spec.driver)) throw new InvalidImageError('driver must be a name')
  if (typeof spec.driverConfig !== 'object' || spec.driverConfig == null) throw new InvalidImageError('driverConfig must be an object')
}
