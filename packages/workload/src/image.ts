/**
 * Creating image files and reading their header back with the checks every consumer needs
 * (header valid, and describing the files actually on disk).
 */

import { randomBytes, randomFillSync } from 'node:crypto'
import { constants as fsConstants } from 'node:fs'
import { access, open, type FileHandle } from 'node:fs/promises'
import {
  DEFAULT_HOT_FRACTION,
  DEFAULT_HOT_PERCENT,
  DEFAULT_RECORD_SIZE,
  FORMAT_VERSION,
  IO_CHUNK_SIZE,
  PAGE_SIZE
} from './constants.js'
import { ImageExistsError, ImageSizeMismatchError, InvalidArgumentError } from './errors.js'
import { decodeHeader, encodeHeader, type FillMode, type WorkloadHeader } from './format.js'

/** Options of {@link initImage}. */
export interface InitImageOptions {
  /** Memory image path (e.g. on /dev/shm). */
  memoryPath: string
  /** Memory image size in bytes: a multiple of 4096, at least two pages (header + data). */
  memorySize: number
  /** Cache (record log) path. */
  cachePath: string
  /** Cache size in bytes; records that do not fit are not written. */
  cacheSize: number
  /** PRNG seed; default: random, so that pages of different images never validate each other. */
  seed?: bigint
  /** Hot set size in pages; default: 10% of the data pages (at least 1). 0 = uniform writes. */
  hotPages?: number
  /** Percentage of writes that land in the hot set; default 90. */
  hotPercent?: number
  /** Initial content: `zero` (sparse) or `random` (real bytes for benchmarks); default `zero`. */
  fill?: FillMode
  /** Record payload bytes; default 4076, making a record exactly 4 KiB. */
  recordSize?: number
  /** Overwrite existing files; default false. */
  force?: boolean
  /** Aborts a long random fill. */
  signal?: AbortSignal
}

function requireInteger (value: number, option: string, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(`${option} must be an integer in [${min}, ${max}] (got ${value})`, option)
  }
}

/** Validates `init` options and resolves defaults; throws before anything touches the disk. */
function resolveInitOptions (opts: InitImageOptions): WorkloadHeader {
  requireInteger(opts.memorySize, '--memory-size', 2 * PAGE_SIZE)
  if (opts.memorySize % PAGE_SIZE !== 0) {
    throw new InvalidArgumentError(`--memory-size must be a multiple of ${PAGE_SIZE} (got ${opts.memorySize})`, '--memory-size')
  }
  requireInteger(opts.cacheSize, '--cache-size', 0)
  const dataPages = opts.memorySize / PAGE_SIZE - 1
  const hotPages = opts.hotPages ?? Math.max(1, Math.floor(dataPages * DEFAULT_HOT_FRACTION))
  requireInteger(hotPages, '--hot-pages', 0, dataPages)
  const hotPercent = opts.hotPercent ?? DEFAULT_HOT_PERCENT
  requireInteger(hotPercent, '--hot-percent', 0, 100)
  const recordSize = opts.recordSize ?? DEFAULT_RECORD_SIZE
  requireInteger(recordSize, '--record-size', 0, 0xffffffff - 32)
  const fill = opts.fill ?? 'zero'
  if (fill !== 'zero' && fill !== 'random') {
    throw new InvalidArgumentError(`--fill must be "zero" or "random" (got ${String(fill)})`, '--fill')
  }
  const seed = opts.seed ?? randomBytes(8).readBigUInt64LE(0)
  if (seed < 0n || seed >= 1n << 64n) {
    throw new InvalidArgumentError(`--seed must be an unsigned 64-bit integer (got ${seed})`, '--seed')
  }
  if (opts.memoryPath === opts.cachePath) {
    throw new InvalidArgumentError('--memory-path and --cache-path must differ', '--cache-path')
  }
  return {
    version: FORMAT_VERSION,
    seed,
    hotPages,
    hotPercent,
    writes: 0,
    records: 0,
    cacheBytes: 0,
    memorySize: opts.memorySize,
    cacheSize: opts.cacheSize,
    recordSize,
    fill,
    pendingWrites: 0,
    pendingRecords: 0
  }
}

async function exists (path: string): Promise<boolean> {
  try {
    await access(path, fsConstants.F_OK)
    return true
  } catch {
    return false
  }
}

/** Writes fresh random bytes over `[start, end)`: a repeated buffer would dedupe or compress. */
async function fillRandom (file: FileHandle, start: number, end: number, signal?: AbortSignal): Promise<void> {
  const chunk = Buffer.allocUnsafe(IO_CHUNK_SIZE)
  for (let position = start; position < end; position += chunk.length) {
    signal?.throwIfAborted()
    const length = Math.min(chunk.length, end - position)
    randomFillSync(chunk, 0, length)
    await file.write(chunk, 0, length, position)
  }
}

/**
 * Creates the memory and cache images at full size and writes the header.
 *
 * @returns the header written
 * @throws InvalidArgumentError on bad options, ImageExistsError if a file exists and `force`
 * is not set; in both cases nothing is created
 */
export async function initImage (opts: InitImageOptions): Promise<WorkloadHeader> {
  const header = resolveInitOptions(opts)
  if (opts.force !== true) {
    for (const path of [opts.memoryPath, opts.cachePath]) {
      if (await exists(path)) throw new ImageExistsError(`${path} already exists (use --force to overwrite)`)
    }
  }
  // 'wx' still guards the race between the check above and the create.
  const flags = opts.force === true ? 'w' : 'wx'
  const memory = await open(opts.memoryPath, flags)
  try {
    const cache = await open(opts.cachePath, flags)
    try {
      await memory.truncate(header.memorySize)
      await cache.truncate(header.cacheSize)
      if (header.fill === 'random') {
        await fillRandom(memory, PAGE_SIZE, header.memorySize, opts.signal)
        await fillRandom(cache, 0, header.cacheSize, opts.signal)
      }
      // The header goes last: an interrupted init leaves no valid image behind.
      await memory.write(encodeHeader(header), 0, PAGE_SIZE, 0)
    } finally {
      await cache.close()
    }
  } finally {
    await memory.close()
  }
  return header
}

/**
 * Checks that a header describes the files on disk.
 *
 * @throws ImageSizeMismatchError naming the file whose size differs
 */
export function checkImageSizes (header: WorkloadHeader, memoryFileSize: number, cacheFileSize?: number): void {
  if (memoryFileSize !== header.memorySize) {
    throw new ImageSizeMismatchError(`Memory file is ${memoryFileSize} bytes but its header says ${header.memorySize}`)
  }
  if (cacheFileSize !== undefined && cacheFileSize !== header.cacheSize) {
    throw new ImageSizeMismatchError(`Cache file is ${cacheFileSize} bytes but the header says ${header.cacheSize}`)
  }
}

/**
 * Reads and validates the header of a memory image (magic, version, checksum, and the
 * memory file's size).
 *
 * @throws InvalidHeaderError, ImageSizeMismatchError, or the fs error if unreadable
 */
export async function readHeader (memoryPath: string): Promise<WorkloadHeader> {
  const file = await open(memoryPath, 'r')
  try {
    const page = Buffer.alloc(PAGE_SIZE)
    const { bytesRead } = await file.read(page, 0, PAGE_SIZE, 0)
    const header = decodeHeader(page.subarray(0, bytesRead))
    checkImageSizes(header, (await file.stat()).size)
    return header
  } finally {
    await file.close()
  }
}
