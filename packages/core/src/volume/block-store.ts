import { createHash } from 'node:crypto'
import { closeSync, existsSync, ftruncateSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { open } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { Bitmap } from '../bitmap.js'
import { BlockHashMismatchError, InvalidArgumentError, UnknownVolumeError } from '../errors.js'
import { checkBlockSize, checkName } from '../limits.js'

/** Bytes read per call while importing a volume file. */
const IMPORT_READ_BYTES = 4 * 1024 * 1024

/**
 * The blocks of one volume that this peer holds (a replica), addressed by content: each block
 * index has the SHA-256 of the volume's block there, and a block is only stored after its bytes
 * hashed to it. Files in `dir`: `<id>.blocks` (block i at offset i × blockSize, sparse),
 * `<id>.hashes` (32 bytes per block) and `<id>.have` (bitmap of held blocks, rewritten on flush).
 */
export class BlockStore {
  private readonly byHash = new Map<string, number>()
  private readonly have: Bitmap
  private dirty = false
  /** SHA-256 of the hash list: names the volume's content (replicas of it agree on this). */
  readonly hashesDigest: Uint8Array

  private constructor (
    readonly dir: string,
    readonly id: string,
    readonly blockSize: number,
    readonly blockCount: number,
    private readonly hashes: Uint8Array,
    have: Uint8Array | undefined,
    private readonly fh: FileHandle
  ) {
    this.have = new Bitmap(blockCount)
    this.hashesDigest = createHash('sha256').update(hashes).digest()
    if (have != null) this.have.bits.set(have.subarray(0, this.have.bits.byteLength))
    for (let i = 0; i < blockCount; i++) {
      const key = Buffer.from(hashes.subarray(i * 32, i * 32 + 32)).toString('hex')
      if (!this.byHash.has(key)) this.byHash.set(key, i)
    }
  }

  /** Creates an empty store for a volume whose block hashes are known (nothing held yet). */
  static async create (dir: string, id: string, blockSize: number, hashes: Uint8Array): Promise<BlockStore> {
    checkId(id)
    checkBlockSize(blockSize)
    if (hashes.byteLength % 32 !== 0) throw new InvalidArgumentError('hashes must be 32 bytes per block')
    const blockCount = hashes.byteLength / 32
    const base = join(dir, id)
    if (existsSync(`${base}.hashes`)) throw new InvalidArgumentError(`volume ${id} already exists in ${dir}`)
    const fd = openSync(`${base}.blocks`, 'wx')
    try { ftruncateSync(fd, blockCount * blockSize) } finally { closeSync(fd) }
    writeFileSync(`${base}.hashes`, hashes)
    writeFileSync(`${base}.meta`, JSON.stringify({ id, blockSize, blockCount }))
    return new BlockStore(dir, id, blockSize, blockCount, hashes, undefined, await open(`${base}.blocks`, 'r+'))
  }

  /** Imports a whole volume file in one pass: copies and hashes every block, and holds them all. */
  static async import (dir: string, id: string, path: string, blockSize: number): Promise<BlockStore> {
    checkId(id)
    checkBlockSize(blockSize)
    const base = join(dir, id)
    if (existsSync(`${base}.hashes`) || existsSync(`${base}.meta`)) throw new InvalidArgumentError(`volume ${id} already exists in ${dir}`)
    const src = await open(path, 'r').catch((err: NodeJS.ErrnoException) => {
      throw new InvalidArgumentError(`cannot import ${path}: ${err.code ?? err.message}`, { cause: err })
    })
    try {
      const st = await src.stat()
      if (!st.isFile()) throw new InvalidArgumentError(`cannot import ${path}: not a regular file`)
      const { size } = st
      if (size % blockSize !== 0) throw new InvalidArgumentError(`volume size ${size} is not a multiple of the block size ${blockSize}`)
      const n = size / blockSize
      const hashes = new Uint8Array(n * 32)
      const out = await open(`${base}.blocks`, 'wx')
      try {
        // Large sequential reads; each block is hashed from exactly the bytes written.
        const perRead = Math.max(1, Math.floor(IMPORT_READ_BYTES / blockSize))
        const buf = Buffer.allocUnsafe(perRead * blockSize)
        for (let i = 0; i < n; i += perRead) {
          const len = Math.min(perRead, n - i) * blockSize
          let got = 0
          while (got < len) {
            const { bytesRead } = await src.read(buf, got, len - got, i * blockSize + got)
            if (bytesRead === 0) throw new InvalidArgumentError(`${path} shrank while it was imported`)
            got += bytesRead
          }
          for (let k = 0; k * blockSize < len; k++) createHash('sha256').update(buf.subarray(k * blockSize, (k + 1) * blockSize)).digest().copy(hashes, (i + k) * 32)
          let put = 0
          while (put < len) put += (await out.write(buf, put, len - put, i * blockSize + put)).bytesWritten
        }
      } catch (err) {
        await out.close()
        rmSync(`${base}.blocks`, { force: true })
        throw err
      }
      await out.close()
      const have = new Bitmap(n)
      have.fill()
      writeFileSync(`${base}.hashes`, hashes)
      writeFileSync(`${base}.have`, have.bits)
      writeFileSync(`${base}.meta`, JSON.stringify({ id, blockSize, blockCount: n }))
      return await BlockStore.open(dir, id)
    } finally {
      await src.close()
    }
  }

  /** Opens a store made by {@link create}. */
  static async open (dir: string, id: string): Promise<BlockStore> {
    checkId(id)
    const base = join(dir, id)
    if (!existsSync(`${base}.meta`)) throw new UnknownVolumeError(`no volume ${id} in ${dir}`)
    const meta = JSON.parse(readFileSync(`${base}.meta`, 'utf8')) as { blockSize: number, blockCount: number }
    const hashes = readFileSync(`${base}.hashes`)
    if (hashes.byteLength !== meta.blockCount * 32) throw new UnknownVolumeError(`volume ${id}: hash file does not match its block count`)
    const have = existsSync(`${base}.have`) ? readFileSync(`${base}.have`) : undefined
    return new BlockStore(dir, id, meta.blockSize, meta.blockCount, hashes, have, await open(`${base}.blocks`, 'r+'))
  }

  /** Deletes a volume's files (close its store first). */
  static remove (dir: string, id: string): void {
    checkId(id)
    for (const ext of ['meta', 'hashes', 'have', 'have.tmp', 'blocks']) rmSync(join(dir, `${id}.${ext}`), { force: true })
  }

  /** The hash list of blocks [start, start + count). */
  hashRange (start: number, count: number): Uint8Array {
    if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 1 || start + count > this.blockCount) throw new RangeError(`blocks ${start}+${count} out of range`)
    return this.hashes.subarray(start * 32, (start + count) * 32)
  }

  /** SHA-256 of block `i` of the volume. */
  hashOf (i: number): Uint8Array { return this.hashes.subarray(i * 32, i * 32 + 32) }

  /** Index of a block with this hash, held or not. */
  indexOf (hash: Uint8Array): number | undefined { return this.byHash.get(Buffer.from(hash).toString('hex')) }

  /** Whether block `i` is held. */
  has (i: number): boolean { return i >= 0 && i < this.blockCount && this.have.get(i) }

  /** Bitmap of held blocks (the volume summary a replica announces). */
  summary (): Uint8Array { return this.have.bits.slice() }

  /** Number of blocks held. */
  held (): number { return this.have.count() }

  /** Reads a held block. */
  async read (i: number): Promise<Buffer> {
    if (!this.has(i)) throw new RangeError(`block ${i} of ${this.id} is not held`)
    const buf = Buffer.allocUnsafe(this.blockSize)
    const { bytesRead } = await this.fh.read(buf, 0, this.blockSize, i * this.blockSize)
    if (bytesRead !== this.blockSize) buf.fill(0, bytesRead)
    return buf
  }

  /**
   * Stores block `i` after checking that its bytes hash to the volume's hash for it. Pass
   * `checkedHash` when the caller has just verified the bytes against exactly that hash (a
   * {@link BlockClient} answer for `hashOf(i)`): it is compared instead of hashing twice.
   */
  async write (i: number, data: Uint8Array, checkedHash?: Uint8Array): Promise<void> {
    if (!Number.isInteger(i) || i < 0 || i >= this.blockCount) throw new RangeError(`block ${i} out of range`)
    if (data.byteLength !== this.blockSize) throw new BlockHashMismatchError(`block ${i} has ${data.byteLength} bytes, not ${this.blockSize}`)
    const got = checkedHash ?? createHash('sha256').update(data).digest()
    if (!Buffer.from(got).equals(this.hashOf(i))) throw new BlockHashMismatchError(`block ${i} of ${this.id} does not match its hash`)
    await this.fh.write(data, 0, data.byteLength, i * this.blockSize)
    this.have.set(i)
    this.dirty = true
  }

  /** Persists the held-blocks bitmap (temp file + rename). */
  async flush (): Promise<void> {
    if (!this.dirty) return
    const base = join(this.dir, this.id)
    writeFileSync(`${base}.have.tmp`, this.have.bits)
    renameSync(`${base}.have.tmp`, `${base}.have`)
    this.dirty = false
  }

  async close (): Promise<void> {
    await this.flush()
    await this.fh.close()
  }
}

function checkId (id: string): void {
  checkName(id, 'volume id')
}
