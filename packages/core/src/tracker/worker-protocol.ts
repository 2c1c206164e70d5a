/** Messages between the tracker's main thread and its scan workers. */
import type { ErrorInfo } from '../errors.js'

/** How a tracker detects change: a full shadow copy, or one SHA-256 fingerprint per unit. */
export type TrackerMode = 'shadow' | 'hash'

/** What a scan task compares against: a tracker mode, or `zero` (report units that are not all zeros). */
export type ScanMode = TrackerMode | 'zero'

/**
 * Find units in [start, end) whose file bytes differ from the baseline; set their bits. In shadow
 * mode the worker also copies the new bytes into the shadow (they are what will be sent). It also
 * keeps the area's region digests current (the slice must be region-aligned).
 */
export interface ScanTask {
  op: 'scan'
  id: number
  path: string
  mode: ScanMode
  unitSize: number
  start: number
  end: number
  /** Shadow copy (mode shadow, `size` bytes) or fingerprints (mode hash, 32 bytes per unit). */
  baseline: SharedArrayBuffer
  /** Dirty bitmap over all units. */
  bitmap: SharedArrayBuffer
  /**
   * The area's verification digests, one SHA-256 per `regionSize` bytes in `out`, kept up to
   * date across scans: a region is hashed again (from the bytes this scan read) when it was never
   * hashed (`fresh` bit clear) or holds a unit whose bytes changed. `size` is the area size.
   */
  digests: { out: SharedArrayBuffer, fresh: SharedArrayBuffer, regionSize: number, size: number }
  /**
   * Shadow and zero modes: units the destination gets elsewhere (bit set in `bitmap`), with the SHA-256
   * their bytes must have (`hashes`, 32 per unit). Such a unit is not reported when its bytes
   * hash to it; either way its bit is cleared (the shadow holds its bytes from now on).
   */
  assumed?: { bitmap: SharedArrayBuffer, hashes: SharedArrayBuffer }
  /** Share of a core the worker may use for this task (0 < share ≤ 1); it sleeps to stay under it. */
  cpuShare?: number
  /**
   * Bit per unit: the unit lay wholly in a hole of the file when the scan began (see
   * `data-extents.ts`). Such a unit is not read: its bytes are zeros, or were written after the
   * map was taken, and then the next scan's map shows them.
   */
  holes?: SharedArrayBuffer
  /**
   * Shadow mode: bit per unit whose shadow may hold non-zero bytes (set when the worker copies
   * bytes into the shadow). A hole unit whose bit is clear is known to equal its shadow without
   * touching either.
   */
  nonzero?: SharedArrayBuffer
}

/**
 * Hash regions [start, end) of a file, or with `list` (u32 region numbers) the regions
 * list[start..end); write region digests into `out` (32 bytes each, at the region's place).
 */
export interface DigestTask {
  op: 'digest'
  id: number
  path: string
  size: number
  regionSize: number
  start: number
  end: number
  out: SharedArrayBuffer
  list?: SharedArrayBuffer
  /** Share of a core the worker may use for this task (0 < share ≤ 1). */
  cpuShare?: number
}

/** Any task. */
export type WorkerTask = ScanTask | DigestTask

/** A worker's answer. */
export interface WorkerReply {
  id: number
  /** Units found dirty (scan) or regions hashed (digest). */
  count: number
  /** Bytes read from the file. */
  bytes: number
  /** The failure's message (kept for workers that send only text). */
  error?: string
  /**
   * The failure with its code and class name ({@link toErrorInfo}): the pool rethrows it as the
   * same class, so a worker's error keeps its class and code across the thread boundary.
   */
  errorInfo?: ErrorInfo
}
