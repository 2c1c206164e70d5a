import { DEFAULT_LANE_RETRY_MS, DEFAULT_LANE_STALL_MS, DEFAULT_LANE_WINDOW } from '../constants.js'
import type { ChunkScheduler } from '../scheduler/chunk-scheduler.js'
import type { TokenBucket } from '../pacing/token-bucket.js'
import type { DirtyTracker } from '../tracker/dirty-tracker.js'
import type { Lane } from '../transport/lane.js'
import { encodeFrame } from '../wire/codec.js'
import { FrameType } from '../wire/frames.js'
import type { Frame } from '../wire/frames.js'
import { BufferPool } from './buffer-pool.js'
import type { DataChunk } from './data-chunk.js'
import { LanePump } from './lane-pump.js'
import type { LaneStats } from './lane-pump.js'

/** What the lanes phase works with. */
export interface SourceLanesInit {
  sessionId: Uint8Array
  scheduler: ChunkScheduler<DataChunk>
  /** The trackers by area number: chunks are loaded from them. */
  trackers: readonly DirtyTracker[]
  chunkBytes: number
  window?: number
  stallMs?: number
  /** Budgets every lane pays for what it sends (all lanes), plus one per lane when `laneRate` is set. */
  budget: TokenBucket
  /** A budget shared with other migrations (paid too), when given. */
  sharedBudget?: Pick<TokenBucket, 'take'>
  laneBudget?: () => TokenBucket
  /** An acknowledged chunk (its bytes count as sent). */
  onAck: (bytes: number) => void
  /** A control frame that arrived on a data lane. */
  onControl: (f: Frame) => void
}

/**
 * The data lanes of a source session: one {@link LanePump} per lane, pooled chunk buffers, and
 * the replenisher that opens replacements while lanes are missing. `close()` releases all of it.
 */
export class SourceLanes {
  readonly pumps: LanePump[] = []
  private readonly buffers: BufferPool
  private replenisher?: NodeJS.Timeout
  private target = 0

  constructor (private readonly init: SourceLanesInit) {
    // One contiguous pooled buffer per chunk: the tracker's shadow is shared memory, and Noise
    // encrypting straight from shared memory was measured 2.5x slower than from a private copy.
    this.buffers = new BufferPool(init.chunkBytes)
  }

  /** Lanes that may still carry frames (control answers may come on any of them). */
  alive (): Lane[] { return this.pumps.filter(p => p.alive).map(p => p.lane) }

  /** Figures of every lane opened so far. */
  stats (): LaneStats[] { return this.pumps.map(p => p.stats) }

  /** Adds the session's first lanes; their number is what the replenisher keeps up. */
  async start (lanes: readonly Lane[]): Promise<void> {
    for (const lane of lanes) await this.add(lane)
    this.target = lanes.length
  }

  /**
   * While fewer lanes are active than at the start, asks `replenish` every `retryMs` for new ones
   * (a NIC came back). Failures are ignored and retried.
   */
  replenishWith (replenish: (active: LaneStats[]) => Promise<Lane[]>, retryMs = DEFAULT_LANE_RETRY_MS): void {
    let busy = false
    this.replenisher = setInterval(() => {
      const active = this.pumps.filter(p => p.stats.state === 'active').map(p => p.stats)
      if (busy || active.length >= this.target || active.length === 0) return
      busy = true
      replenish(active).then(async (fresh) => {
        for (const lane of fresh) {
          if (this.replenisher == null) { lane.abort(); continue }
          await this.add(lane).catch(() => { lane.abort() })
        }
      }, () => {}).finally(() => { busy = false })
    }, retryMs)
    this.replenisher.unref()
  }

  /** Every byte is acknowledged: no more replacements, and the lanes only carry control answers. */
  drain (): void {
    this.stopReplenishing()
    for (const p of this.pumps) p.drain()
  }

  /** Closes every lane and stops the replenisher. */
  async close (): Promise<void> {
    this.stopReplenishing()
    await Promise.all(this.pumps.map(async p => { await p.close() }))
  }

  private stopReplenishing (): void {
    clearInterval(this.replenisher)
    this.replenisher = undefined
  }

  private async add (lane: Lane): Promise<void> {
    const { init } = this
    const index = this.pumps.length
    await lane.send(encodeFrame({ type: FrameType.LaneHello, sessionId: init.sessionId, lane: index }))
    this.pumps.push(new LanePump(lane, {
      index,
      scheduler: init.scheduler,
      load: async (c) => await this.load(c),
      plan: (c) => init.trackers[c.area]!.plan(c.runs),
      window: init.window ?? DEFAULT_LANE_WINDOW,
      stallTimeoutMs: init.stallMs ?? DEFAULT_LANE_STALL_MS,
      onAck: (c) => {
        init.onAck(c.bytes)
        // Sent twice, read at least once by a worker: which bytes the destination kept is unknown.
        if ((c.sends ?? 0) > 1 && c.planned === true) init.trackers[c.area]!.forget(c.runs)
        for (const p of c.parts ?? []) this.buffers.release(p)
      },
      onControl: init.onControl,
      budgets: [init.budget, ...(init.sharedBudget != null ? [init.sharedBudget] : []), ...(init.laneBudget != null ? [init.laneBudget()] : [])]
    }))
  }

  private async load (c: DataChunk): Promise<Uint8Array[]> {
    const parts = await this.init.trackers[c.area]!.load(c.runs)
    const buf = this.buffers.acquire(c.bytes)
    let off = 0
    for (const p of parts) { buf.set(p, off); off += p.byteLength }
    return [buf]
  }
}
