import { createHash } from 'node:crypto'
import { Bitmap } from '../bitmap.js'
import { InvalidFrameError, ProtocolError } from '../errors.js'
import { MAX_HASHES_PER_FRAME } from '../wire/codec.js'
import { FrameType } from '../wire/frames.js'
import type { CacheManifestFrame } from '../wire/frames.js'
import type { CacheFetchStats } from './cache-fetch.js'

/** What the source tells the destination about a cache that caches a volume. */
export interface CacheManifest {
  volume: string
  /** 32 bytes per block: the volume's block hashes. */
  hashes: Uint8Array
  /** Blocks written locally: the source sends them. */
  dirty: Bitmap
  /** Blocks recently read: the source sends them early. */
  hot: Bitmap
}

/** Cuts a manifest into CACHE_MANIFEST frames of up to 65536 blocks each. */
export function manifestFrames (m: CacheManifest): CacheManifestFrame[] {
  const n = m.hashes.byteLength / 32
  const out: CacheManifestFrame[] = []
  for (let start = 0; start < n; start += MAX_HASHES_PER_FRAME) {
    const count = Math.min(MAX_HASHES_PER_FRAME, n - start)
    out.push({
      type: FrameType.CacheManifest,
      volume: m.volume,
      start,
      hashes: m.hashes.subarray(start * 32, (start + count) * 32),
      dirty: sliceBits(m.dirty, start, count),
      hot: sliceBits(m.hot, start, count)
    })
  }
  return out
}

/** Reassembles a manifest from its frames, checking that they cover the cache in order. */
export class ManifestAssembler {
  private next = 0
  private volume?: string
  private readonly hashes: Uint8Array
  private readonly dirty: Bitmap
  private readonly hot: Bitmap

  constructor (readonly blockCount: number) {
    this.hashes = new Uint8Array(blockCount * 32)
    this.dirty = new Bitmap(blockCount)
    this.hot = new Bitmap(blockCount)
  }

  /** Adds a frame; returns the manifest once the last block arrived. */
  add (f: CacheManifestFrame): CacheManifest | undefined {
    const n = f.hashes.byteLength / 32
    if (f.start !== this.next) throw new ProtocolError(`cache manifest frame for block ${f.start}, expected ${this.next}`)
    if (this.volume != null && f.volume !== this.volume) throw new ProtocolError('cache manifest frames name different volumes')
    if (f.start + n > this.blockCount) throw new InvalidFrameError(`cache manifest covers blocks beyond the cache (${this.blockCount})`)
    this.volume = f.volume
    this.hashes.set(f.hashes, f.start * 32)
    this.dirty.bits.set(f.dirty, f.start / 8)
    this.hot.bits.set(f.hot, f.start / 8)
    this.next += n
    if (this.next < this.blockCount) return undefined
    return { volume: f.volume, hashes: this.hashes, dirty: this.dirty, hot: this.hot }
  }
}

/** SHA-256 of a hash list (what replicas of the same volume content agree on). */
export function hashListDigest (hashes: Uint8Array): Uint8Array {
  return createHash('sha256').update(hashes).digest()
}

/** Reads the figures a destination sent in CACHE_STATUS; undefined when they are malformed. */
export function parseCacheStats (text: string): CacheFetchStats | undefined {
  try {
    const v = JSON.parse(text) as CacheFetchStats
    const num = (x: unknown): boolean => typeof x === 'number' && Number.isFinite(x)
    if (typeof v !== 'object' || v == null || typeof v.volume !== 'string' || !num(v.claimedBlocks) || !num(v.leftoverBlocks) ||
      !num(v.ms) || typeof v.sources !== 'object' || typeof v.dedup !== 'object' || typeof v.done !== 'boolean') return undefined
    return v
  } catch {
    return undefined
  }
}

function sliceBits (b: Bitmap, start: number, count: number): Uint8Array {
  return b.bits.slice(start / 8, start / 8 + Math.ceil(count / 8))
}
