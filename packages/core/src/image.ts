import { InvalidImageError } from './errors.js'
import { checkDriverConfigText, checkGeometry, checkName } from './limits.js'
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
  /** An image name: see `NAME_RULE` in limits.ts. */
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

/** How {@link validateImageSpec} names the sizes of a spec in its messages. */
const SPEC_LABELS = { memorySize: 'memory.size', pageSize: 'memory.pageSize', cacheSize: 'cache.size', blockSize: 'cache.blockSize' }

/**
 * Checks an image description; throws {@link InvalidImageError} naming the bad field. The rules
 * are those of `limits.ts`, the same the codec applies to a HELLO, so a valid image can migrate.
 */
export function validateImageSpec (spec: ImageSpec): void {
  if (typeof spec !== 'object' || spec == null) throw new InvalidImageError('image spec must be an object')
  checkName(spec.name, 'image name', InvalidImageError)
  const m = spec.memory
  if (m == null || typeof m.path !== 'string' || m.path === '') throw new InvalidImageError('memory.path is required')
  const c = spec.cache
  if (c == null || typeof c.path !== 'string' || c.path === '') throw new InvalidImageError('cache.path is required')
  checkGeometry({ memorySize: m.size, pageSize: m.pageSize, cacheSize: c.size, blockSize: c.blockSize }, InvalidImageError, SPEC_LABELS)
  checkName(spec.driver, 'driver name', InvalidImageError)
  if (typeof spec.driverConfig !== 'object' || spec.driverConfig == null || Array.isArray(spec.driverConfig)) throw new InvalidImageError('driverConfig must be an object')
  checkDriverConfigText(JSON.stringify(spec.driverConfig), 'driverConfig', InvalidImageError)
}
