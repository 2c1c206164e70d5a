import { open } from 'node:fs/promises'
import { Bitmap } from '../bitmap.js'
import { CacheFetch } from './cache-fetch.js'
import type { CacheFetchStats, CacheSources } from './cache-fetch.js'
import type { BlockSource } from './multi-source-fetch.js'

/** How a post-copy cache ended. */
export interface PostCopyOutcome {
  /** Every claimed block arrived (verified by hash) or was overwritten by the workload. */
  complete: boolean
  stats: CacheFetchStats
  /** Why it did not complete (stopped, or a file error). */
  error?: Error
}

/** What a {@link PostCopyCache} is made of (the destination session builds it at COMMIT). */
export interface PostCopyCacheInit {
  fetch: CacheFetch
  /** The fetch's run: resolves when every claimed block is present. */
  run: Promise<CacheFetchStats>
  /** Stops the fetch (and every request it has in flight). */
  abort: AbortController
  /** Releases the fetch's sources and file handle. */
  close: () => Promise<void>
  volume: string
  blockSize: number
  /** 32 bytes per block: the volume's hashes (what every missing block must hash to). */
  hashes: Uint8Array
  /** The session (the source's node keeps its copy under it until released). */
  sessionId: Uint8Array
}

/**
 * The destination's cache after a post-copy switchover: the workload runs while the clean
 * blocks it has not got yet keep streaming in from every source. Readers ask for a block with
 * {@link PostCopyCache.demand} (it is fetched ahead of the stream), writers that overwrite a
 * whole block claim it with {@link PostCopyCache.own}. Owned by the node once the session ended;
 * {@link PostCopyCache.stop} ends it (the missing blocks then stay missing: the source keeps its copy).
 */
export class PostCopyCache {
  readonly volume: string
  readonly blockSize: number
  readonly blockCount: number
  readonly hashes: Uint8Array
  readonly sessionId: Uint8Array
  /** Resolves when the cache is complete, or the stream stopped. */
  readonly outcome: Promise<PostCopyOutcome>
  private readonly fetch: CacheFetch
  private readonly abort: AbortController
  private readonly closeFn: () => Promise<void>
  private closed = false

  constructor (init: PostCopyCacheInit) {
    this.fetch = init.fetch
    this.abort = init.abort
    this.closeFn = init.close
    this.volume = init.volume
    this.blockSize = init.blockSize
    this.blockCount = init.fetch.blockCount
    this.hashes = init.hashes
    this.sessionId = init.sessionId
    this.outcome = init.run.then(
      (stats): PostCopyOutcome => ({ complete: true, stats }),
      (err: unknown): PostCopyOutcome => ({ complete: false, stats: this.fetch.snapshot(), error: err instanceof Error ? err : new Error(String(err)) })
    ).then(async (o) => {
      await this.close()
      return o
    })
  }

  /** Whether block `index` holds its final bytes. */
  isPresent (index: number): boolean { return this.fetch.isPresent(index) }

  /** Blocks still to arrive. */
  missing (): Bitmap { return this.fetch.missing() }

  /** Resolves once block `index` is present (fetched now if it is not). */
  async demand (index: number, signal?: AbortSignal): Promise<void> {
    this.check(index)
    await this.fetch.demand(index, AbortSignal.any([this.abort.signal, ...(signal != null ? [signal] : [])]))
  }

  /** A writer overwrites all of block `index`: no fetch; the stream's copy will not land over it. */
  async own (index: number): Promise<void> {
    this.check(index)
    await this.fetch.own(index)
  }

  /** Calls `cb` with each block that becomes present from now on (after its bytes are written). */
  watch (cb: (index: number) => void): void { this.fetch.onPresent(cb) }

  /** One more source of blocks (the migrating source's node, once it serves its kept copy). */
  addSource (s: BlockSource): void { this.fetch.addSource(s) }

  /** Progress: blocks present, on-demand fetches and their latency, bytes per source. */
  stats (): CacheFetchStats { return this.fetch.snapshot() }

  /** Stops streaming (readers waiting are released with an error). */
  async stop (): Promise<void> {
    this.abort.abort(new Error('post-copy stopped'))
    await this.outcome
  }

  private check (index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.blockCount) throw new RangeError(`block ${index} is outside the cache (${this.blockCount} blocks)`)
  }

  private async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.abort.abort()
    await this.closeFn().catch(() => {})
  }
}

/** What {@link resumePostCopyCache} needs: the state a post-copy destination keeps on disk. */
export interface ResumePostCopyInit {
  cachePath: string
  volume: string
  blockSize: number
  /** 32 bytes per block: the volume's hashes (the cache's metadata). */
  hashes: Uint8Array
  /** Blocks present in the cache file (its present bytes): everything else is fetched by hash. */
  present: Bitmap
  sources: CacheSources
  sessionId: Uint8Array
}

/**
 * Takes a post-copy up again after the destination's node restarted: every block not present
 * is claimed and streams in from the sources given (replicas, the migrating source's kept copy),
 * each checked against its hash, and readers are served on demand as before.
 */
export async function resumePostCopyCache (init: ResumePostCopyInit): Promise<PostCopyCache> {
  const file = await open(init.cachePath, 'r+')
  const abort = new AbortController()
  const blocks = init.hashes.byteLength / 32
  // Present blocks count as the source's (never claimed); the rest is claimed, from any source.
  const fetch = new CacheFetch({ volume: init.volume, blockSize: init.blockSize, hashes: init.hashes, dirty: init.present, hot: new Bitmap(blocks), file, sources: init.sources, postcopy: true })
  fetch.claim()
  const run = fetch.run({ signal: abort.signal }).then(r => r.stats)
  run.catch(() => {})
  return new PostCopyCache({
    fetch, run, abort, volume: init.volume, blockSize: init.blockSize, hashes: init.hashes, sessionId: init.sessionId,
    close: async () => { await init.sources.close().catch(() => {}); await file.close().catch(() => {}) }
  })
}
