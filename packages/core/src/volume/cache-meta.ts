import { createHash } from 'node:crypto'
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { Bitmap } from '../bitmap.js'
import { CacheMetaError, InvalidArgumentError } from '../errors.js'
import { checkName, isValidName } from '../limits.js'

/** What a cache caches: a volume, named by id, with one SHA-256 per block. */
export interface CacheMetaInit {
  volume: string
  blockSize: number
  /** 32 bytes per block: the volume's block hashes. */
  hashes: Uint8Array
  /** Blocks already written locally (default: none, the cache is a copy of the volume). */
  dirty?: Bitmap
  /** Blocks marked hot (default: none). */
  hot?: Bitmap
}

const VERSION = 1
const MARK = 1
/** Bytes {@link CacheMeta.differing} reads at a time. */
const DIFFERING_READ_BYTES = 4 * 2 ** 20

/** The files of a cache's metadata, beside the cache file. */
export function cacheMetaPaths (cachePath: string): { info: string, hashes: string, dirty: string, hot: string } {
  return { info: `${cachePath}.volume.json`, hashes: `${cachePath}.hashes`, dirty: `${cachePath}.dirty`, hot: `${cachePath}.hot` }
}

/**
 * Per-block metadata of a storage cache that caches a volume: the block's SHA-256 in the volume,
 * its state (clean = identical to the volume's block, dirty = written locally) and a hot mark
 * (recently read: travels early, from the source). Kept in files beside the cache:
 *
 * - `<cache>.volume.json` — volume id, block size, block count;
 * - `<cache>.hashes` — 32 bytes per block;
 * - `<cache>.dirty`, `<cache>.hot` — one byte per block (1 = marked).
 *
 * One byte per block, written in place, lets the workload (another process) mark a block dirty
 * with a single positional write *before* it writes the block, while the node marks hot blocks:
 * no read-modify-write of shared bytes, nothing cached in memory, so the state on disk is the
 * state after any crash or restart. A writer that cannot cooperate makes the marks wrong;
 * {@link CacheMeta.rescan} rebuilds them from the cache's bytes. Migration never trusts a clean
 * mark blindly: the source's tracker checks each delegated block against its hash.
 */
export class CacheMeta {
  private constructor (
    readonly cachePath: string,
    readonly volume: string,
    readonly blockSize: number,
    readonly blockCount: number,
    /** 32 bytes per block: the volume's block hashes. */
    readonly hashes: Uint8Array
  ) {}

  /** Whether a cache file has metadata. */
  static exists (cachePath: string): boolean { return existsSync(cacheMetaPaths(cachePath).info) }

  /** Writes the metadata of a cache (replacing any). */
  static create (cachePath: string, init: CacheMetaInit): CacheMeta {
    checkName(init.volume, 'volume id')
    if (init.hashes.byteLength % 32 !== 0) throw new InvalidArgumentError('hashes must be 32 bytes per block')
    const blockCount = init.hashes.byteLength / 32
    for (const b of [init.dirty, init.hot]) {
      if (b != null && b.size !== blockCount) throw new InvalidArgumentError(`bitmap of ${b.size} blocks for a cache of ${blockCount}`)
    }
    const p = cacheMetaPaths(cachePath)
    writeFileSync(p.hashes, init.hashes)
    writeFileSync(p.dirty, toBytes(init.dirty, blockCount))
    writeFileSync(p.hot, toBytes(init.hot, blockCount))
    // The info file goes last (temp + rename): its presence means the rest is complete.
    writeFileSync(`${p.info}.tmp`, JSON.stringify({ version: VERSION, volume: init.volume, blockSize: init.blockSize, blockCount }))
    renameSync(`${p.info}.tmp`, p.info)
    return new CacheMeta(cachePath, init.volume, init.blockSize, blockCount, init.hashes.slice())
  }

  /** Reads the metadata of a cache; throws {@link CacheMetaError} when missing or inconsistent. */
  static open (cachePath: string): CacheMeta {
    const p = cacheMetaPaths(cachePath)
    if (!existsSync(p.info)) throw new CacheMetaError(`${cachePath} has no cache metadata`)
    let info: { version?: unknown, volume?: unknown, blockSize?: unknown, blockCount?: unknown }
    try { info = JSON.parse(readFileSync(p.info, 'utf8')) } catch { throw new CacheMetaError(`${p.info} is not JSON`) }
    if (info.version !== VERSION || !isValidName(info.volume) ||
      typeof info.blockSize !== 'number' || typeof info.blockCount !== 'number' || !Number.isSafeInteger(info.blockCount)) {
      throw new CacheMetaError(`${p.info} is not cache metadata of version ${VERSION}`)
    }
    const hashes = readFileSync(p.hashes)
    if (hashes.byteLength !== info.blockCount * 32) throw new CacheMetaError(`${p.hashes} has ${hashes.byteLength} bytes, ${info.blockCount * 32} expected`)
    for (const f of [p.dirty, p.hot]) {
      const size = existsSync(f) ? fstatSize(f) : -1
      if (size !== info.blockCount) throw new CacheMetaError(`${f} has ${size} bytes, ${info.blockCount} expected`)
    }
    const cacheSize = existsSync(cachePath) ? fstatSize(cachePath) : -1
    if (cacheSize !== info.blockCount * info.blockSize) throw new CacheMetaError(`${cachePath} has ${cacheSize} bytes, metadata describes ${info.blockCount} blocks of ${info.blockSize}`)
    return new CacheMeta(cachePath, info.volume, info.blockSize, info.blockCount, new Uint8Array(hashes))
  }

  /** Removes a cache's metadata files. */
  static remove (cachePath: string): void {
    const p = cacheMetaPaths(cachePath)
    for (const f of [p.info, `${p.info}.tmp`, p.hashes, p.dirty, p.hot]) rmSync(f, { force: true })
  }

  /** SHA-256 of block `i` in the volume. */
  hashOf (i: number): Uint8Array { return this.hashes.subarray(i * 32, i * 32 + 32) }

  /** Blocks written locally, as on disk now. */
  dirty (): Bitmap { return this.readMarks(cacheMetaPaths(this.cachePath).dirty) }

  /** Blocks marked hot, as on disk now. */
  hot (): Bitmap { return this.readMarks(cacheMetaPaths(this.cachePath).hot) }

  /** Marks blocks [from, to) dirty: call before writing them. */
  markDirty (from: number, to = from + 1): void { this.writeMarks(cacheMetaPaths(this.cachePath).dirty, from, to, MARK) }

  /** Marks blocks [from, to) hot (recently read). */
  markHot (from: number, to = from + 1): void { this.writeMarks(cacheMetaPaths(this.cachePath).hot, from, to, MARK) }

  /** Clears the hot marks of blocks [from, to) (all by default). */
  clearHot (from = 0, to = this.blockCount): void { this.writeMarks(cacheMetaPaths(this.cachePath).hot, from, to, 0) }

  /**
   * Rebuilds the dirty marks from the cache's bytes (after a writer that did not mark its
   * writes): a block is clean exactly when it hashes to the volume's hash. Returns the counts.
   */
  async rescan (): Promise<{ clean: number, dirty: number }> {
    const { bad } = await this.differing()
    const marks = Buffer.alloc(this.blockCount)
    for (const i of bad) marks[i] = MARK
    const p = cacheMetaPaths(this.cachePath)
    writeFileSync(`${p.dirty}.tmp`, marks)
    renameSync(`${p.dirty}.tmp`, p.dirty)
    return { clean: this.blockCount - bad.length, dirty: bad.length }
  }

  /**
   * The blocks (of those `which` selects; default all) whose bytes in the cache do not hash to
   * the volume's hash. Beyond the file's end a block reads as zeros (as a hole does). Reads go
   * through the thread pool a few MiB at a time, so a node stays responsive while a large cache
   * is checked; hashing is on this thread (SHA-256 with the CPU's SHA extensions: ~1.5 GB/s).
   */
  async differing (which?: (block: number) => boolean): Promise<{ checked: number, bad: number[] }> {
    const fh = await open(this.cachePath, 'r')
    const perRead = Math.max(1, Math.floor(DIFFERING_READ_BYTES / this.blockSize))
    const buf = Buffer.allocUnsafe(perRead * this.blockSize)
    const bad: number[] = []
    let checked = 0
    try {
      for (let from = 0; from < this.blockCount; from += perRead) {
        const to = Math.min(this.blockCount, from + perRead)
        const { bytesRead } = await fh.read(buf, 0, (to - from) * this.blockSize, from * this.blockSize)
        buf.fill(0, bytesRead, (to - from) * this.blockSize)
        for (let i = from; i < to; i++) {
          if (which != null && !which(i)) continue
          checked++
          const at = (i - from) * this.blockSize
          if (!createHash('sha256').update(buf.subarray(at, at + this.blockSize)).digest().equals(this.hashOf(i))) bad.push(i)
        }
      }
    } finally {
      await fh.close()
    }
    return { checked, bad }
  }


  private readMarks (path: string): Bitmap {
    const bytes = readFileSync(path)
    if (bytes.byteLength !== this.blockCount) throw new CacheMetaError(`${path} has ${bytes.byteLength} bytes, ${this.blockCount} expected`)
    const out = new Bitmap(this.blockCount)
    for (let i = 0; i < this.blockCount; i++) if (bytes[i] !== 0) out.set(i)
    return out
  }

  private writeMarks (path: string, from: number, to: number, value: number): void {
    if (!Number.isInteger(from) || !Number.isInteger(to) || from < 0 || to > this.blockCount || from > to) {
      throw new InvalidArgumentError(`blocks ${from}..${to} out of range 0..${this.blockCount}`)
    }
    if (from === to) return
    const fd = openSync(path, 'r+')
    try {
      writeSync(fd, Buffer.alloc(to - from, value), 0, to - from, from)
    } finally {
      closeSync(fd)
    }
  }
}

function toBytes (b: Bitmap | undefined, n: number): Uint8Array {
  const out = new Uint8Array(n)
  if (b != null) for (let i = 0; i < n; i++) if (b.get(i)) out[i] = MARK
  return out
}

function fstatSize (path: string): number {
  const fd = openSync(path, 'r')
  try { return fstatSync(fd).size } finally { closeSync(fd) }
}
