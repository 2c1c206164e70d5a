import type { BlockResult } from './block-service.js'

/** A replica that can serve blocks (e.g. a {@link BlockClient} bound to one volume). */
export interface BlockSource {
  readonly id: string
  /** Whether the source holds block `index` (from its volume summary). */
  has: (index: number) => boolean
  /** Requests it takes at once (e.g. its open streams); default `inFlightPerSource`. */
  slots?: number
  /** Fetches blocks by hash; each answer is data (already verified), missing or corrupt. */
  fetch: (hashes: Uint8Array[]) => Promise<BlockResult[]>
  /**
   * Like `fetch`, on a lane the bulk requests do not use, so an urgent request (a workload
   * waiting for the block) does not queue behind them at the source. Default: `fetch`.
   */
  fetchUrgent?: (hashes: Uint8Array[]) => Promise<BlockResult[]>
}

/** Adds sources to a fetch that is running (see {@link MultiSourceFetchOptions.onStart}). */
export interface FetchControl {
  addSource: (s: BlockSource) => void
}

/** A block to fetch: where it goes and what it must hash to. */
export interface FetchItem { index: number, hash: Uint8Array }

/** Options of {@link fetchFromSources}. */
export interface MultiSourceFetchOptions {
  /** Requests in flight per source (default 2). */
  inFlightPerSource?: number
  /** Blocks per request (default 8). */
  batch?: number
  /** Corrupt blocks a source may serve before it is dropped (default 3). */
  maxCorrupt?: number
  /** A request unanswered for this long drops its source (default 30 s). */
  requestTimeoutMs?: number
  /** Called for each corrupt block a source served (it was discarded). */
  onCorrupt?: (source: string) => void
  /** Called when a source is dropped. */
  onDrop?: (source: string, reason: string) => void
  /** Items already written another way (fetched on demand): dropped from the queue unfetched. */
  skip?: (item: FetchItem) => boolean
  /** Awaited before a request loop takes more work: the bulk stream yields while it is pending. */
  gate?: () => Promise<void>
  /** Called once at the start with what adds a source while the fetch runs. */
  onStart?: (control: FetchControl) => void
  signal?: AbortSignal
}

/** What a multi-source fetch did. */
export interface MultiSourceFetchReport {
  /** Bytes fetched per source id. */
  bytes: Record<string, number>
  /** Blocks fetched per source id. */
  blocks: Record<string, number>
  /** Sources dropped, with the reason. */
  dropped: Record<string, string>
  /** Corrupt blocks detected (and discarded) per source id. */
  corrupt: Record<string, number>
  /** Items no source could serve: the caller gets them elsewhere (the migrating source). */
  leftover: FetchItem[]
}

interface Pending { item: FetchItem, excluded: Set<string> }

/**
 * Pulls blocks from many replicas at once. Every source runs a few request loops that take the
 * next blocks it holds from one shared queue (work stealing: a faster source simply comes back
 * for more). A missing block goes back to the queue for the other sources; a corrupt one too,
 * and a source that served too many corrupt blocks, or whose connection failed, is dropped with
 * its unfinished blocks re-queued. Blocks that no remaining source can serve are returned as
 * `leftover`. `write` receives verified bytes only.
 */
export async function fetchFromSources (
  items: FetchItem[],
  sources: BlockSource[],
  write: (item: FetchItem, data: Uint8Array, source: string) => Promise<void>,
  opts: MultiSourceFetchOptions = {}
): Promise<MultiSourceFetchReport> {
  const batch = opts.batch ?? 8
  const maxCorrupt = opts.maxCorrupt ?? 3
  const report: MultiSourceFetchReport = { bytes: {}, blocks: {}, dropped: {}, corrupt: {}, leftover: [] }
  const queue: Pending[] = items.map(item => ({ item, excluded: new Set<string>() }))
  sources = [...sources]
  const live = new Set(sources.map(s => s.id))
  for (const s of sources) { report.bytes[s.id] = 0; report.blocks[s.id] = 0; report.corrupt[s.id] = 0 }
  const timeoutMs = opts.requestTimeoutMs ?? 30_000
  const drop = (id: string, reason: string): void => {
    if (!live.delete(id)) return
    report.dropped[id] = reason
    opts.onDrop?.(id, reason)
  }

  /**
   * Takes up to `batch` queued blocks this source holds and has not failed. Near the end, requests
   * shrink so that every request loop still gets a share: the last blocks finish together
   * instead of one replica working alone through a full batch.
   */
  const take = (s: BlockSource): Pending[] => {
    const out: Pending[] = []
    const slots = sources.reduce((n, x) => n + (live.has(x.id) ? (x.slots ?? opts.inFlightPerSource ?? 2) : 0), 0)
    const size = Math.max(1, Math.min(batch, Math.ceil(queue.length / Math.max(1, slots))))
    for (let i = 0; i < queue.length && out.length < size;) {
      const p = queue[i]!
      if (opts.skip?.(p.item) === true) { queue.splice(i, 1); continue }
      if (!p.excluded.has(s.id) && s.has(p.item.index)) { out.push(p); queue.splice(i, 1) } else i++
    }
    return out
  }

  // Each request loop writes a batch while its next request is on the wire (at most one batch
  // being written per loop, so memory stays bounded).
  const worker = async (s: BlockSource): Promise<void> => {
    let writing: Promise<void> = Promise.resolve()
    try {
      while (live.has(s.id)) {
        opts.signal?.throwIfAborted()
        await opts.gate?.()
        const work = take(s)
        if (work.length === 0) return
        let answers: BlockResult[]
        let timer: NodeJS.Timeout | undefined
        try {
          answers = await Promise.race([
            s.fetch(work.map(p => p.item.hash)),
            new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`no answer within ${timeoutMs} ms`)) }, timeoutMs) })
          ])
        } catch (err) {
          drop(s.id, `failed: ${(err as Error).message}`)
          queue.unshift(...work)
          return
        } finally {
          clearTimeout(timer)
        }
        const good: Array<{ item: FetchItem, data: Uint8Array }> = []
        for (const [k, a] of answers.entries()) {
          const p = work[k]!
          if ('data' in a) { good.push({ item: p.item, data: a.data }); continue }
          p.excluded.add(s.id)
          queue.push(p)
          if ('corrupt' in a) {
            opts.onCorrupt?.(s.id)
            if (++report.corrupt[s.id]! > maxCorrupt) drop(s.id, `served ${report.corrupt[s.id]} corrupt blocks`)
          }
        }
        await writing
        writing = (async () => {
          for (const g of good) {
            await write(g.item, g.data, s.id)
            report.bytes[s.id]! += g.data.byteLength
            report.blocks[s.id]!++
          }
        })()
      }
    } finally {
      await writing
    }
  }

  // Rounds of workers: a block re-queued after its last willing worker ended gets a new round.
  // A source added meanwhile starts its request loops at once.
  const running = new Set<Promise<void>>()
  let finished = false
  const spawn = (s: BlockSource): void => {
    for (let k = 0; k < (s.slots ?? opts.inFlightPerSource ?? 2); k++) {
      const p: Promise<void> = worker(s).finally(() => { running.delete(p) })
      // Its failure is reported by the Promise.all below, or, for a loop started after that
      // snapshot was taken, by the next one; never left unhandled once the fetch ended.
      p.catch(() => {})
      running.add(p)
    }
  }
  opts.onStart?.({
    addSource: (s) => {
      if (finished || sources.some(x => x.id === s.id)) return
      sources.push(s)
      live.add(s.id)
      report.bytes[s.id] = 0; report.blocks[s.id] = 0; report.corrupt[s.id] = 0
      spawn(s)
    }
  })
  try {
    while (true) {
      for (const s of sources) if (live.has(s.id)) spawn(s)
      while (running.size > 0) await Promise.all([...running])
      const servable = queue.some(p => opts.skip?.(p.item) !== true && sources.some(s => live.has(s.id) && !p.excluded.has(s.id) && s.has(p.item.index)))
      if (!servable) break
    }
  } finally {
    finished = true
  }
  report.leftover = queue.filter(p => opts.skip?.(p.item) !== true).map(p => p.item)
  return report
}
