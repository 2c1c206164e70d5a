import type { BlockSource } from './multi-source-fetch.js'

/** How long one on-demand request may take before its source is skipped for that block. */
const REQUEST_TIMEOUT_MS = 10_000
/** Latencies kept for the percentiles (the most recent ones). */
const MAX_SAMPLES = 65_536
/** Retry period of a read whose block no source holds now (doubles up to the maximum). */
const BLOCKED_RETRY_MS = 50
const BLOCKED_RETRY_MAX_MS = 1000

/** Figures of the reads served on demand. */
export interface OnDemandStats {
  /** Blocks fetched on demand. */
  fetches: number
  /** Latency from the read's request to its block written, in ms (over the recent fetches). */
  p50Ms: number
  p99Ms: number
  maxMs: number
  /** Reads waiting now. */
  waiting: number
  /** Blocks that readers wait for and that no reachable source holds (first 16). */
  blocked: number[]
}

/** What {@link OnDemandFetches} works with. */
export interface OnDemandDeps {
  /** The sources usable now. */
  sources: () => BlockSource[]
  /** Whether source `s` holds block `index`. */
  has: (s: BlockSource, index: number) => boolean
  /** The SHA-256 block `index` must have. */
  hashOf: (index: number) => Uint8Array
  /** Writes verified bytes of block `index` (and of every block with the same hash). */
  write: (index: number, data: Uint8Array, source: string) => Promise<void>
  /** Whether block `index` is in the file already. */
  present: (index: number) => boolean
  onCorrupt?: (source: string) => void
}

/**
 * Blocks a workload reads before the bulk stream brought them: each is asked for at once, alone,
 * from the source with the fewest such requests in flight and then the shortest recent answer
 * time, on its urgent lane; a missing or corrupt answer moves on to the next source. While any
 * is being fetched the bulk stream takes no new work ({@link OnDemandFetches.idle}), so the
 * links carry the reader's block first. No source holding a block means the reader waits (and
 * the block is listed as blocked); it is never answered with bytes that were not verified.
 */
export class OnDemandFetches {
  private readonly pending = new Map<number, Promise<void>>()
  private readonly samples: number[] = []
  private next = 0
  private fetches = 0
  private maxMs = 0
  private active = 0
  private idleWaiters: Array<() => void> = []
  private readonly inFlight = new Map<string, number>()
  private readonly answerMs = new Map<string, number>()
  private readonly blocked = new Set<number>()
  private stopped?: Error

  constructor (private readonly deps: OnDemandDeps) {}

  /** Ends every fetch (their readers get `reason`); later demands fail at once. */
  stop (reason: Error): void { this.stopped ??= reason }

  /** Resolves once block `index` is present. */
  async demand (index: number, signal?: AbortSignal): Promise<void> {
    let p = this.pending.get(index)
    if (p == null) {
      p = this.fetch(index).finally(() => { this.pending.delete(index) })
      // Every reader gets the outcome; a fetch whose readers all gave up must not go unhandled.
      p.catch(() => {})
      this.pending.set(index, p)
    }
    if (signal == null) { await p; return }
    signal.throwIfAborted()
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => { reject(signal.reason) }
      signal.addEventListener('abort', onAbort, { once: true })
      p.then(resolve, reject).finally(() => { signal.removeEventListener('abort', onAbort) })
    })
  }

  /** Resolves when no on-demand fetch is on the wire (at once if none is). */
  async idle (): Promise<void> {
    if (this.active === 0) return
    await new Promise<void>(resolve => { this.idleWaiters.push(resolve) })
  }

  stats (): OnDemandStats {
    const sorted = [...this.samples].sort((a, b) => a - b)
    const q = (p: number): number => sorted.length === 0 ? 0 : Math.round(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! * 10) / 10
    return { fetches: this.fetches, p50Ms: q(0.5), p99Ms: q(0.99), maxMs: Math.round(this.maxMs * 10) / 10, waiting: this.pending.size, blocked: [...this.blocked].slice(0, 16) }
  }

  private async fetch (index: number): Promise<void> {
    const t0 = performance.now()
    const excluded = new Set<string>()
    let retryMs = BLOCKED_RETRY_MS
    try {
      while (!this.deps.present(index)) {
        if (this.stopped != null) throw this.stopped
        const candidates = this.deps.sources().filter(s => !excluded.has(s.id) && this.deps.has(s, index))
        if (candidates.length === 0) {
          // Nobody reachable holds it now: wait and ask again (a source may join or come back).
          this.blocked.add(index)
          await new Promise(resolve => setTimeout(resolve, retryMs))
          retryMs = Math.min(BLOCKED_RETRY_MAX_MS, retryMs * 2)
          excluded.clear()
          continue
        }
        this.blocked.delete(index)
        const s = this.pick(candidates)
        if (await this.ask(s, index)) break
        excluded.add(s.id)
      }
    } finally {
      this.blocked.delete(index)
    }
    const ms = performance.now() - t0
    this.fetches++
    this.maxMs = Math.max(this.maxMs, ms)
    if (this.samples.length < MAX_SAMPLES) this.samples.push(ms)
    else { this.samples[this.next] = ms; this.next = (this.next + 1) % MAX_SAMPLES }
  }

  /** The source with the fewest on-demand requests in flight, then the quickest recent answers. */
  private pick (candidates: BlockSource[]): BlockSource {
    let best = candidates[0]!
    const key = (s: BlockSource): [number, number] => [this.inFlight.get(s.id) ?? 0, this.answerMs.get(s.id) ?? 0]
    for (const s of candidates.slice(1)) {
      const [a, b] = key(s)
      const [x, y] = key(best)
      if (a < x || (a === x && b < y)) best = s
    }
    return best
  }

  /** Asks one source for the block; true once its verified bytes are written. */
  private async ask (s: BlockSource, index: number): Promise<boolean> {
    this.active++
    this.inFlight.set(s.id, (this.inFlight.get(s.id) ?? 0) + 1)
    const t0 = performance.now()
    let timer: NodeJS.Timeout | undefined
    try {
      const [answer] = await Promise.race([
        (s.fetchUrgent ?? s.fetch)([this.deps.hashOf(index)]),
        new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error('no answer in time')) }, REQUEST_TIMEOUT_MS) })
      ])
      const ms = performance.now() - t0
      this.answerMs.set(s.id, 0.7 * (this.answerMs.get(s.id) ?? ms) + 0.3 * ms)
      if (answer == null) return false
      if ('corrupt' in answer) { this.deps.onCorrupt?.(s.id); return false }
      if (!('data' in answer)) return false
      await this.deps.write(index, answer.data, s.id)
      return true
    } catch {
      return false
    } finally {
      clearTimeout(timer)
      this.inFlight.set(s.id, this.inFlight.get(s.id)! - 1)
      if (--this.active === 0) {
        const w = this.idleWaiters
        this.idleWaiters = []
        for (const f of w) f()
      }
    }
  }
}
