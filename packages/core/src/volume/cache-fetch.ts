import { createHash } from 'node:crypto'
import type { FileHandle } from 'node:fs/promises'
import { Bitmap } from '../bitmap.js'
import { zeroHash } from '../verify/digest.js'
import { fetchFromSources } from './multi-source-fetch.js'
import type { BlockSource, FetchItem, MultiSourceFetchOptions } from './multi-source-fetch.js'

/** Where a destination can get cache blocks besides the migrating source. */
export interface CacheSources {
  /** Replicas holding (some of) the volume, each with its summary. */
  sources: BlockSource[]
  /** Blocks this node already holds (its own replica stores), by hash. */
  local?: LocalBlocks
  /** Releases the replicas' connections. */
  close: () => Promise<void>
}

/** Blocks a node holds itself, looked up by content hash. */
export interface LocalBlocks {
  has: (hash: Uint8Array) => boolean
  /** The bytes (checked against the hash by the caller), or undefined. */
  read: (hash: Uint8Array) => Promise<Uint8Array | undefined>
}

/** What the destination needs to find replicas of a volume. */
export interface CacheSourcesRequest {
  volume: string
  blockSize: number
  blockCount: number
  /** SHA-256 of the volume's hash list (replicas of other content are ignored). */
  hashesDigest: Uint8Array
  signal?: AbortSignal
}

/** Figures of the cache blocks a destination fetched elsewhere. */
export interface CacheFetchStats {
  volume: string
  /** Blocks the destination took on (clean, cold, and available elsewhere). */
  claimedBlocks: number
  /** Bytes, blocks and corrupt blocks per replica (by peer id). */
  sources: Record<string, { bytes: number, blocks: number, corrupt: number }>
  /** Replicas dropped, with the reason. */
  dropped: Record<string, string>
  /** Bytes written without fetching them: zero blocks, copies of a block fetched once, local stores. */
  dedup: { zeroBytes: number, duplicateBytes: number, localBytes: number }
  /** Claimed blocks no replica could serve: the source sent them after all. */
  leftoverBlocks: number
  /** Claimed blocks the source wrote meanwhile (its bytes are newer), so the replica's copy was dropped. */
  supersededBlocks: number
  /** Milliseconds since the fetch started. */
  ms: number
  done: boolean
}

/** Inputs of {@link CacheFetch}. */
export interface CacheFetchInit {
  volume: string
  blockSize: number
  /** 32 bytes per block: the volume's hashes. */
  hashes: Uint8Array
  /** Blocks the source wrote locally (never taken from elsewhere). */
  dirty: Bitmap
  /** Blocks the source sends early itself. */
  hot: Bitmap
  /** The staging cache file (zero-filled). */
  file: FileHandle
  /** Called before and after a write of bytes [from, to) (keeps background digests honest). */
  touch?: (from: number, to: number) => void
  sources: CacheSources
}

interface Group { hash: Uint8Array, indices: number[] }

/**
 * The destination's side of cold cache blocks: decides which blocks it takes on (clean, not hot,
 * and available from a replica, a local store, or all zeros), then fetches them from every replica
 * at once and writes them into the staging cache file. Blocks of one hash are fetched once and
 * copied; zero blocks are never fetched (the staging file is zero-filled). The source's bytes
 * always win: {@link CacheFetch.yieldTo} marks blocks the source writes, and a replica's copy
 * of such a block is dropped.
 */
export class CacheFetch {
  readonly blockCount: number
  private readonly claimed: Bitmap
  private readonly sourceOwned: Bitmap
  private readonly inFlight = new Map<number, Promise<void>>()
  private groups: Group[] = []
  private readonly stats: CacheFetchStats
  private readonly started = performance.now()

  constructor (private readonly init: CacheFetchInit) {
    this.blockCount = init.hashes.byteLength / 32
    this.claimed = new Bitmap(this.blockCount)
    this.sourceOwned = new Bitmap(this.blockCount)
    this.stats = {
      volume: init.volume, claimedBlocks: 0, sources: {}, dropped: {}, dedup: { zeroBytes: 0, duplicateBytes: 0, localBytes: 0 },
      leftoverBlocks: 0, supersededBlocks: 0, ms: 0, done: false
    }
    for (const s of init.sources.sources) this.stats.sources[s.id] = { bytes: 0, blocks: 0, corrupt: 0 }
  }

  /** Decides which blocks to take on and returns them (the CACHE_CLAIM bitmap). */
  claim (): Bitmap {
    const { blockSize, hashes, dirty, hot } = this.init
    const zero = zeroHash(blockSize)
    const byHash = new Map<string, Group>()
    for (let i = 0; i < this.blockCount; i++) {
      if (dirty.get(i) || hot.get(i)) continue
      const hash = hashes.subarray(i * 32, i * 32 + 32)
      if (zero.equals(hash)) {
        this.claimed.set(i)
        this.stats.dedup.zeroBytes += blockSize
        continue
      }
      const key = Buffer.from(hash).toString('hex')
      let g = byHash.get(key)
      if (g == null) { g = { hash, indices: [] }; byHash.set(key, g) }
      g.indices.push(i)
    }
    const { local, sources } = this.init.sources
    for (const g of byHash.values()) {
      if (local?.has(g.hash) !== true && !g.indices.some(i => sources.some(s => s.has(i)))) continue
      for (const i of g.indices) this.claimed.set(i)
      this.groups.push(g)
    }
    this.stats.claimedBlocks = this.claimed.count()
    return this.claimed
  }

  /** Copies a group from a local store; false when that fails (the replicas are asked instead). */
  private async copyLocal (g: Group, local: LocalBlocks): Promise<boolean> {
    if (!local.has(g.hash)) return false
    const data = await local.read(g.hash).catch(() => undefined)
    if (data == null || data.byteLength !== this.init.blockSize || !createHash('sha256').update(data).digest().equals(g.hash)) return false
    const copies = await this.writeGroup(g, data, false)
    this.stats.dedup.localBytes += data.byteLength * copies
    return true
  }

  /**
   * The source is about to write blocks [from, to): from now on its bytes win there. Waits for
   * replica writes in flight on those blocks, so they cannot land after the source's.
   */
  async yieldTo (from: number, to: number): Promise<void> {
    const waits: Array<Promise<void>> = []
    for (let i = from; i < to; i++) {
      this.sourceOwned.set(i)
      const w = this.inFlight.get(i)
      if (w != null) waits.push(w)
    }
    if (waits.length > 0) await Promise.allSettled(waits)
  }

  /** The current figures. */
  snapshot (): CacheFetchStats {
    return { ...this.stats, ms: Math.round(performance.now() - this.started), sources: structuredClone(this.stats.sources), dropped: { ...this.stats.dropped }, dedup: { ...this.stats.dedup } }
  }

  /**
   * Fetches every claimed block from the replicas. Returns the figures and `need`: claimed
   * blocks nobody could serve, which the source must send itself.
   */
  async run (opts: MultiSourceFetchOptions = {}): Promise<{ stats: CacheFetchStats, need: Bitmap }> {
    const items: FetchItem[] = []
    const local = this.init.sources.local
    for (const [k, g] of this.groups.entries()) {
      opts.signal?.throwIfAborted()
      if (local != null && await this.copyLocal(g, local)) continue
      items.push({ index: k, hash: g.hash })
    }
    // A replica "has" a group when it holds any block of it.
    const sources: BlockSource[] = this.init.sources.sources.map(s => ({
      id: s.id,
      ...(s.slots != null ? { slots: s.slots } : {}),
      has: (k: number) => this.groups[k]!.indices.some(i => s.has(i)),
      fetch: async (hashes) => await s.fetch(hashes)
    }))
    const report = await fetchFromSources(items, sources, async (item, data, source) => {
      await this.writeGroup(this.groups[item.index]!, data)
      const s = this.stats.sources[source]!
      s.bytes += data.byteLength
      s.blocks++
    }, {
      ...opts,
      onCorrupt: (source) => { this.stats.sources[source]!.corrupt++; opts.onCorrupt?.(source) },
      onDrop: (source, why) => { this.stats.dropped[source] = why; opts.onDrop?.(source, why) }
    })
    const need = new Bitmap(this.blockCount)
    for (const item of report.leftover) {
      for (const i of this.groups[item.index]!.indices) {
        if (!this.sourceOwned.get(i)) need.set(i)
      }
    }
    this.stats.leftoverBlocks = need.count()
    this.stats.done = true
    return { stats: this.snapshot(), need }
  }

  /**
   * Writes one block's bytes to every index of its group the source has not claimed; returns
   * how many copies were written (copies beyond the first count as dedup savings).
   */
  private async writeGroup (g: Group, data: Uint8Array, countDuplicates = true): Promise<number> {
    const { blockSize, file, touch } = this.init
    let copies = 0
    for (const i of g.indices) {
      if (this.sourceOwned.get(i)) { this.stats.supersededBlocks++; continue }
      const from = i * blockSize
      touch?.(from, from + blockSize)
      const p = (async () => {
        let done = 0
        while (done < blockSize) done += (await file.write(data, done, blockSize - done, from + done)).bytesWritten
      })()
      this.inFlight.set(i, p)
      try { await p } finally {
        this.inFlight.delete(i)
        touch?.(from, from + blockSize)
      }
      copies++
    }
    if (countDuplicates && copies > 1) this.stats.dedup.duplicateBytes += (copies - 1) * blockSize
    return copies
  }
}
