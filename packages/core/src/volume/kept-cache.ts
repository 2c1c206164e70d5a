import { createHash } from 'node:crypto'
import { open } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import type { Bitmap } from '../bitmap.js'
import type { BlockProvider } from './block-service.js'

/**
 * The cache a post-copy source keeps for its destination, served as a volume: the blocks the
 * destination claimed (clean, cold) and may still ask for, read from the source's cache file
 * (the workload there is stopped, so it no longer changes). Looked up by hash like a replica's
 * store; the client checks every block against its hash as it would a replica's.
 */
export class KeptCacheBlocks implements BlockProvider {
  readonly hashesDigest: Uint8Array
  readonly blockCount: number
  private readonly byHash = new Map<string, number[]>()

  private constructor (
    readonly volume: string,
    readonly blockSize: number,
    private readonly hashes: Uint8Array,
    private readonly servable: Bitmap,
    private readonly fh: FileHandle
  ) {
    this.blockCount = hashes.byteLength / 32
    this.hashesDigest = createHash('sha256').update(hashes).digest()
    for (const r of servable.runs()) {
      for (let i = r.start; i < r.start + r.count; i++) {
        const key = Buffer.from(hashes.subarray(i * 32, i * 32 + 32)).toString('hex')
        const list = this.byHash.get(key)
        if (list == null) this.byHash.set(key, [i])
        else list.push(i)
      }
    }
  }

  /** Opens the cache file at `path` (read-only) for serving the `servable` blocks of `volume`. */
  static async open (path: string, volume: string, blockSize: number, hashes: Uint8Array, servable: Bitmap): Promise<KeptCacheBlocks> {
    const fh = await open(path, 'r')
    return new KeptCacheBlocks(volume, blockSize, hashes, servable, fh)
  }

  held (): number { return this.servable.count() }
  summary (): Uint8Array { return this.servable.bits.slice() }

  hashRange (start: number, count: number): Uint8Array {
    if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 1 || start + count > this.blockCount) throw new RangeError(`blocks ${start}+${count} out of range`)
    return this.hashes.subarray(start * 32, (start + count) * 32)
  }

  /** A servable block with this hash. */
  indexOf (hash: Uint8Array): number | undefined { return this.byHash.get(Buffer.from(hash).toString('hex'))?.[0] }

  has (i: number): boolean { return i >= 0 && i < this.blockCount && this.servable.get(i) }

  async read (i: number): Promise<Buffer> {
    if (!this.has(i)) throw new RangeError(`block ${i} of the kept cache of ${this.volume} is not servable`)
    const buf = Buffer.alloc(this.blockSize)
    let done = 0
    while (done < this.blockSize) {
      const { bytesRead } = await this.fh.read(buf, done, this.blockSize - done, i * this.blockSize + done)
      if (bytesRead === 0) break
      done += bytesRead
    }
    return buf
  }

  async close (): Promise<void> { await this.fh.close().catch(() => {}) }
}
