import { errorCode, RemoteAbortError, ProtocolError, TimeoutError } from '../errors.js'

const RATE_WINDOW_MS = 2000
import type { ChunkScheduler } from '../scheduler/chunk-scheduler.js'
import type { TokenBucket } from '../pacing/token-bucket.js'
import { isOffThreadLane } from '../transport/lane.js'
import type { Lane, OffThreadLane } from '../transport/lane.js'
import type { LoadPlan } from '../tracker/load-plan.js'
import { decodeFrame, encodeDataFrame } from '../wire/codec.js'
import { FrameType } from '../wire/frames.js'
import type { Frame } from '../wire/frames.js'

/** Frames a destination may send on a data lane besides ACK. */
const CONTROL_ANSWERS = new Set([FrameType.VerifyResult, FrameType.Committed, FrameType.Abort, FrameType.CacheStatus])
import type { DataChunk } from './data-chunk.js'

/** Per-lane figures for progress and the report. */
export interface LaneStats {
  id: string
  /** Position in the session (lanes opened later to replace failed ones get new indexes). */
  index: number
  localAddress?: string
  remoteAddress?: string
  /** Payload bytes acknowledged by the destination. */
  bytes: number
  /** Chunks acknowledged. */
  chunks: number
  /** Chunks handed back to the queue when this lane failed. */
  requeued: number
  /** Acknowledged bytes per second over the last two seconds. */
  rate: number
  state: 'active' | 'failed' | 'closed'
  /** Why it failed. */
  error?: string
}

/** What a lane pump needs from its session. */
export interface LanePumpDeps {
  /** The lane's index in the session (also sent in its LANE_HELLO). */
  index: number
  scheduler: ChunkScheduler<DataChunk>
  /** Loads a chunk's bytes the first time it is sent (the tracker records them as sent). */
  load: (chunk: DataChunk) => Promise<Uint8Array[]>
  /** How a data worker reads a chunk's bytes, for a lane whose payload stays off this thread. */
  plan?: (chunk: DataChunk) => LoadPlan
  /** Called for every acknowledged chunk. */
  onAck: (chunk: DataChunk, lane: LaneStats) => void
  /** Bandwidth budgets this lane pays each chunk's bytes to (e.g. the session's and its own). */
  budgets?: Array<Pick<TokenBucket, 'take'>>
  /** Control answers (VERIFY_RESULT, COMMITTED, ABORT) that the destination sent on this lane. */
  onControl?: (frame: Frame) => void
  /** Unacknowledged bytes allowed on this lane. */
  window: number
  /** A lane with bytes in flight and no acknowledgement for this long is declared dead. */
  stallTimeoutMs: number
}

/**
 * Drives one data lane of a source session: takes chunks while its window has room, sends them,
 * and reads acknowledgements. A lane that breaks hands its chunks back to the scheduler.
 */
export class LanePump {
  readonly stats: LaneStats
  private windowWaiter?: () => void
  /** Scheduler key: unique in the session even when transports reuse lane ids. */
  private readonly key: string
  private readonly watchdog: NodeJS.Timeout
  private lastProgress = performance.now()
  private readonly samples: Array<[number, number]> = []
  private stopped = false
  private draining = false

  /** The lane, when its payload is carried off this thread and chunks can be sent as plans. */
  private readonly offThread?: OffThreadLane

  constructor (readonly lane: Lane, private readonly deps: LanePumpDeps) {
    if (isOffThreadLane(lane) && deps.plan != null) this.offThread = lane
    this.key = `lane${deps.index}`
    this.stats = { id: lane.id, index: deps.index, localAddress: lane.localAddress, remoteAddress: lane.remoteAddress, bytes: 0, chunks: 0, requeued: 0, rate: 0, state: 'active' }
    deps.scheduler.addLane(this.key)
    // A link that silently drops packets (cable pulled, NIC down) never errors the TCP socket
    // in useful time: a lane is dead when it holds unacknowledged bytes and nothing comes back.
    this.watchdog = setInterval(() => { this.check() }, Math.max(50, Math.floor(deps.stallTimeoutMs / 4)))
    this.watchdog.unref()
    void this.sendLoop()
    void this.ackLoop()
  }

  private check (): void {
    const now = performance.now()
    while (this.samples.length > 1 && now - this.samples[0]![0] > RATE_WINDOW_MS) this.samples.shift()
    const first = this.samples[0]
    this.stats.rate = first != null && now > first[0] ? (this.stats.bytes - first[1]) / ((now - first[0]) / 1000) : 0
    this.samples.push([now, this.stats.bytes])
    if (this.deps.scheduler.inFlightBytes(this.key) === 0) { this.lastProgress = now; return }
    if (now - this.lastProgress > this.deps.stallTimeoutMs) {
      this.fail(new TimeoutError(`lane ${this.lane.id} stalled: no acknowledgement for ${this.deps.stallTimeoutMs} ms`))
    }
  }

  /**
   * All data is acknowledged: the lane now only carries control answers, and the peer closing
   * it (as it does after commit) is the normal end, not a failure.
   */
  drain (): void {
    this.draining = true
    clearInterval(this.watchdog)
    this.stats.rate = 0
  }

  /** True while the lane is usable. */
  get alive (): boolean { return this.stats.state === 'active' && !this.stopped }

  /** Closes the lane gracefully. */
  async close (): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    clearInterval(this.watchdog)
    this.stats.rate = 0
    if (this.stats.state === 'active') this.stats.state = 'closed'
    this.wakeWindow()
    await this.lane.close().catch(() => {})
  }

  private wakeWindow (): void {
    const w = this.windowWaiter
    this.windowWaiter = undefined
    w?.()
  }

  private fail (err: unknown): void {
    if (this.stats.state !== 'active' || this.stopped) return
    this.stats.state = 'failed'
    this.stats.rate = 0
    clearInterval(this.watchdog)
    this.stats.error = err instanceof Error ? `${err.message} (${errorCode(err)})` : String(err)
    this.stats.requeued += this.deps.scheduler.failLane(this.key)
    this.lane.abort(err instanceof Error ? err : undefined)
    this.wakeWindow()
  }

  private async sendLoop (): Promise<void> {
    const { scheduler } = this.deps
    try {
      while (this.stats.state === 'active' && !this.stopped) {
        while (scheduler.inFlightBytes(this.key) >= this.deps.window && this.stats.state === 'active' && !this.stopped) {
          await new Promise<void>(resolve => { this.windowWaiter = resolve })
        }
        const chunk = await scheduler.take(this.key)
        if (chunk == null) return
        chunk.sends = (chunk.sends ?? 0) + 1
        const header = { round: chunk.round, chunkId: chunk.id, area: chunk.area, runs: chunk.runs }
        if (this.offThread != null && chunk.parts == null) {
          // The lane's worker reads the bytes: they never come to this thread.
          chunk.planned = true
          await this.offThread.sendData(header, this.deps.plan!(chunk))
        } else {
          chunk.parts ??= await this.deps.load(chunk)
          await this.lane.send(encodeDataFrame(header, chunk.parts))
        }
        // Paid after sending, so a lane waiting for budget holds no unacknowledged chunk.
        for (const b of this.deps.budgets ?? []) await b.take(chunk.bytes)
      }
    } catch (err) {
      this.fail(err)
    }
  }

  private async ackLoop (): Promise<void> {
    try {
      for await (const raw of this.lane) {
        const f = decodeFrame(raw)
        if (CONTROL_ANSWERS.has(f.type) && this.deps.onControl != null) { this.deps.onControl(f); continue }
        if (f.type === FrameType.Abort) throw new RemoteAbortError(f.code, f.message)
        if (f.type !== FrameType.Ack) throw new ProtocolError(`unexpected ${FrameType[f.type]} on a data lane`)
        for (const id of f.chunkIds) {
          const c = this.deps.scheduler.complete(this.key, id)
          if (c == null) continue
          this.stats.bytes += c.bytes
          this.stats.chunks++
          this.lastProgress = performance.now()
          this.deps.onAck(c, this.stats)
          c.parts = undefined
        }
        this.wakeWindow()
      }
      if (!this.stopped && !this.draining) this.fail(new ProtocolError('data lane closed by peer'))
      else if (this.stats.state === 'active') this.stats.state = 'closed'
    } catch (err) {
      if (this.draining && this.stats.state === 'active') this.stats.state = 'closed'
      else this.fail(err)
    }
  }
}
