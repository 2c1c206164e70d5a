import { createHash } from 'node:crypto'
import type { FileHandle } from 'node:fs/promises'
import { Bitmap } from '../bitmap.js'
import { POSTCOPY_BULK_BYTES_PER_SOURCE } from '../constants.js'
import { zeroHash } from '../verify/digest.js'
import { fetchFromSources } from './multi-source-fetch.js'
import type { BlockSource, FetchControl, FetchItem, MultiSourceFetchOptions, MultiSourceFetchReport } from './multi-source-fetch.js'
import { OnDemandFetches } from './on-demand.js'
import type { OnDemandStats } from './on-demand.js'

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
  /** Post-copy: claimed blocks present so far, and the workload's on-demand fetches. */
  postcopy?: { presentBlocks: number, onDemand: OnDemandStats }
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
  /**
   * Post-copy: every clean block that is not hot is claimed (the source serves it too, once it
   * joins with {@link CacheFetch.addSource}), blocks no source can serve now wait for one, and
   * the workload's reads are served on demand ({@link CacheFetch.demand}).
   */
  postcopy?: boolean
  /**
   * Post-copy: the bulk stream takes no block until {@link CacheFetch.releaseBulk} (the node calls
   * it at the switchover); reads on demand are not held. Before the switchover the destination's
   * CPU, disk and links are better spent on the memory rounds: streaming cold blocks then cannot
   * bring the resume closer, only push it back.
   */
  holdBulk?: boolean
  /** Called when claimed block `index` became present (fetched, copied or owned by a writer). */
  onPresent?: (index: number) => void
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
  /** Claimed blocks written with their verified bytes (or zeros). */
  private readonly written: Bitmap
  /** Group of each claimed block (-1: none, a zero block). */
  private readonly groupOf: Int32Array
  private readonly inFlight = new Map<number, Promise<void>>()
  private groups: Group[] = []
  private readonly stats: CacheFetchStats
  private readonly started = performance.now()
  private readonly sources: BlockSource[] = []
  private readonly dropped = new Set<string>()
  private control?: FetchControl
  private readonly onDemand: OnDemandFetches
  /** Writes wait while the destination verifies (the digest must see a still file). */
  private frozen?: { promise: Promise<void>, release: () => void }
  private sourceAdded?: () => void
  /** Held until the switchover (post-copy with `holdBulk`). */
  private bulkHeld?: { promise: Promise<void>, release: () => void }
  private presentListener?: (index: number) => void

  constructor (private readonly init: CacheFetchInit) {
    this.blockCount = init.hashes.byteLength / 32
    this.claimed = new Bitmap(this.blockCount)
    this.sourceOwned = new Bitmap(this.blockCount)
    this.written = new Bitmap(this.blockCount)
    this.groupOf = new Int32Array(this.blockCount).fill(-1)
    this.onDemand = new OnDemandFetches({
      sources: () => this.sources.filter(s => !this.dropped.has(s.id)),
      has: (s, i) => s.has(this.groupOf[i]!),
      hashOf: i => init.hashes.subarray(i * 32, i * 32 + 32),
      write: async (i, data, source) => { await this.writeFetched(this.groupOf[i]!, data, source) },
      present: i => this.isPresent(i),
      onCorrupt: (source) => { const s = this.stats.sources[source]; if (s != null) s.corrupt++ }
    })
    this.stats = {
      volume: init.volume, claimedBlocks: 0, sources: {}, dropped: {}, dedup: { zeroBytes: 0, duplicateBytes: 0, localBytes: 0 },
      leftoverBlocks: 0, supersededBlocks: 0, ms: 0, done: false
    }
    for (const s of init.sources.sources) this.stats.sources[s.id] = { bytes: 0, blocks: 0, corrupt: 0 }
    if (init.postcopy === true && init.holdBulk === true) {
      let release!: () => void
      const promise = new Promise<void>(resolve => { release = resolve })
      this.bulkHeld = { promise, release }
    }
  }

  /** Lets the bulk stream start (post-copy with `holdBulk`: at the switchover); idempotent. */
  releaseBulk (): void {
    const held = this.bulkHeld
    this.bulkHeld = undefined
    held?.release()
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
        // The staging file is zero-filled: the block is there already.
        this.claimed.set(i)
        this.written.set(i)
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
      if (this.init.postcopy !== true && local?.has(g.hash) !== true && !g.indices.some(i => sources.some(s => s.has(i)))) continue
      for (const i of g.indices) { this.claimed.set(i); this.groupOf[i] = this.groups.length }
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

  /** Whether block `index` holds its final bytes here (not claimed, or claimed and arrived). */
  isPresent (index: number): boolean {
    return !this.claimed.get(index) || this.written.get(index) || this.sourceOwned.get(index)
  }

  /**
   * Claimed blocks not here yet (not written, not the source's nor a writer's): what a post-copy
   * switchover leaves to be fetched by hash.
   */
  missing (): Bitmap {
    const out = new Bitmap(this.blockCount)
    for (const r of this.claimed.runs()) for (let i = r.start; i < r.start + r.count; i++) if (!this.isPresent(i)) out.set(i)
    return out
  }

  /**
   * A reader needs block `index` (post-copy): resolves once its verified bytes are in the file,
   * fetched ahead of the bulk stream from the source that answers fastest. Never resolves with
   * wrong data: while no source holds the block, it waits (see {@link OnDemandStats.blocked}).
   */
  async demand (index: number, signal?: AbortSignal): Promise<void> {
    if (this.isPresent(index)) return
    await this.onDemand.demand(index, signal)
  }

  /**
   * A writer is about to overwrite all of block `index`: its bytes win, no fetch is needed, and a
   * fetched copy in flight is waited for so that it cannot land afterwards.
   */
  async own (index: number): Promise<void> {
    if (this.isPresent(index)) return
    await this.yieldTo(index, index + 1)
    this.present(index)
  }

  /** Calls `cb` with each claimed block that becomes present from now on. */
  onPresent (cb: (index: number) => void): void { this.presentListener = cb }

  private present (index: number): void {
    this.init.onPresent?.(index)
    this.presentListener?.(index)
  }

  /** Adds a block source while the fetch runs (post-copy: the migrating source, once it switched over). */
  addSource (s: BlockSource): void {
    if (this.sources.some(x => x.id === s.id)) return
    const source = this.wrapSource(s)
    this.sources.push(source)
    this.stats.sources[s.id] ??= { bytes: 0, blocks: 0, corrupt: 0 }
    this.dropped.delete(s.id)
    this.control?.addSource(source)
    this.sourceAdded?.()
  }

  /** Holds every write of fetched bytes (and waits for those in flight) until the returned release is called. */
  async freeze (): Promise<() => void> {
    if (this.frozen == null) {
      let release!: () => void
      const promise = new Promise<void>(resolve => { release = resolve })
      this.frozen = { promise, release }
    }
    await Promise.allSettled([...this.inFlight.values()])
    const f = this.frozen
    return () => { if (this.frozen === f) { this.frozen = undefined; f.release() } }
  }

  /** The current figures. */
  snapshot (): CacheFetchStats {
    const out: CacheFetchStats = { ...this.stats, ms: Math.round(performance.now() - this.started), sources: structuredClone(this.stats.sources), dropped: { ...this.stats.dropped }, dedup: { ...this.stats.dedup } }
    if (this.init.postcopy === true) out.postcopy = { presentBlocks: this.presentClaimed(), onDemand: this.onDemand.stats() }
    return out
  }

  /** Claimed blocks present (fetched, zero, or the source's or a writer's), each counted once. */
  private presentClaimed (): number {
    let n = 0
    for (const r of this.claimed.runs()) for (let i = r.start; i < r.start + r.count; i++) if (this.written.get(i) || this.sourceOwned.get(i)) n++
    return n
  }

  /** Claimed blocks in all (the post-copy progress is {@link CacheFetchStats.postcopy} against it). */
  get claimedBlocks (): number { return this.stats.claimedBlocks }

  /** A group-level view of a source (it holds a group when it holds any block of it). */
  private wrapSource (s: BlockSource): BlockSource {
    return {
      id: s.id,
      ...(s.slots != null ? { slots: s.slots } : {}),
      has: (k: number) => this.groups[k]!.indices.some(i => s.has(i)),
      fetch: async (hashes) => await s.fetch(hashes),
      ...(s.fetchUrgent != null ? { fetchUrgent: s.fetchUrgent } : {})
    }
  }

  /** Writes a verified block that `source` served to its group, and counts it. */
  private async writeFetched (k: number, data: Uint8Array, source: string): Promise<void> {
    const g = this.groups[k]!
    if (g.indices.every(i => this.isPresent(i))) return
    await this.writeGroup(g, data)
    const s = this.stats.sources[source]
    if (s != null) { s.bytes += data.byteLength; s.blocks++ }
  }

  /**
   * Fetches every claimed block from the replicas. Returns the figures and `need`: claimed
   * blocks nobody could serve, which the source must send itself.
   */
  async run (opts: MultiSourceFetchOptions = {}): Promise<{ stats: CacheFetchStats, need: Bitmap }> {
    let items: FetchItem[] = []
    const local = this.init.sources.local
    for (const [k, g] of this.groups.entries()) {
      opts.signal?.throwIfAborted()
      if (local != null && await this.copyLocal(g, local)) continue
      items.push({ index: k, hash: g.hash })
    }
    for (const s of this.init.sources.sources) this.sources.push(this.wrapSource(s))
    // Readers waiting for a block are told when the fetch stops (instead of retrying forever).
    opts.signal?.addEventListener('abort', () => { this.onDemand.stop(opts.signal!.reason instanceof Error ? opts.signal!.reason : new Error('the cache fetch stopped')) }, { once: true })
    const done = (item: FetchItem): boolean => this.groups[item.index]!.indices.every(i => this.isPresent(i))
    let report: MultiSourceFetchReport
    while (true) {
      const sourcesNow = this.sources.length
      const live = this.sources.filter(s => !this.dropped.has(s.id))
      report = await fetchFromSources(items, live, async (item, data, source) => {
        await this.writeFetched(item.index, data, source)
      }, {
        ...opts,
        ...(this.init.postcopy === true ? { batch: postcopyBatch(this.init.blockSize, live) } : {}),
        skip: done,
        // The bulk stream waits for the switchover if held, and yields while a reader waits for a block.
        gate: async () => {
          const held = this.bulkHeld
          if (held != null) await abortable(held.promise, opts.signal)
          await this.onDemand.idle()
        },
        onStart: (c) => { this.control = c },
        onCorrupt: (source) => { this.stats.sources[source]!.corrupt++; opts.onCorrupt?.(source) },
        onDrop: (source, why) => { this.dropped.add(source); this.stats.dropped[source] = why; opts.onDrop?.(source, why) }
      })
      this.control = undefined
      items = report.leftover.filter(item => !done(item))
      // Post-copy: blocks nobody serves now wait for a source to join (the migrating source
      // after the switchover, a replica coming back); readers that need them wait too.
      if (this.init.postcopy !== true || items.length === 0) break
      if (this.sources.length === sourcesNow) {
        await new Promise<void>((resolve, reject) => {
          this.sourceAdded = resolve
          opts.signal?.addEventListener('abort', () => { reject(opts.signal!.reason) }, { once: true })
        }).finally(() => { this.sourceAdded = undefined })
      }
    }
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
      if (this.written.get(i)) continue
      while (this.frozen != null) await this.frozen.promise
      if (this.sourceOwned.get(i) || this.written.get(i)) continue
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
      this.written.set(i)
      this.present(i)
      copies++
    }
    if (countDuplicates && copies > 1) this.stats.dedup.duplicateBytes += (copies - 1) * blockSize
    return copies
  }
}

/** `p`, or a rejection with the signal's reason once it aborts. */
async function abortable (p: Promise<void>, signal?: AbortSignal): Promise<void> {
  if (signal == null) return await p
  signal.throwIfAborted()
  let onAbort!: () => void
  const aborted = new Promise<never>((_resolve, reject) => { onAbort = () => { reject(signal.reason) }; signal.addEventListener('abort', onAbort, { once: true }) })
  try { await Promise.race([p, aborted]) } finally { signal.removeEventListener('abort', onAbort) }
}

/** Blocks per bulk request in post-copy: a source's lanes together hold at most POSTCOPY_BULK_BYTES_PER_SOURCE. */
function postcopyBatch (blockSize: number, sources: BlockSource[]): number {
  const slots = Math.max(1, ...sources.map(s => s.slots ?? 2))
  return Math.max(1, Math.floor(POSTCOPY_BULK_BYTES_PER_SOURCE / (blockSize * slots)))
}
