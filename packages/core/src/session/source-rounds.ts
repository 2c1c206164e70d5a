import { SCAN_LOOKAHEAD_BYTES } from '../constants.js'
import type { ChunkScheduler } from '../scheduler/chunk-scheduler.js'
import type { DirtyTracker } from '../tracker/dirty-tracker.js'
import type { Area, Frame } from '../wire/frames.js'
import { FrameType } from '../wire/frames.js'
import { planChunks } from './data-chunk.js'
import type { DataChunk } from './data-chunk.js'
import type { ProgressMeter } from './progress-meter.js'
import type { RoundStats } from './report.js'

/** One area of the image being migrated, with its tracker. */
export interface AreaState {
  area: Area
  name: 'memory' | 'cache'
  path: string
  size: number
  unitSize: number
  tracker: DirtyTracker
}

/** What a round works with. */
export interface RoundContext {
  areas: readonly AreaState[]
  scheduler: ChunkScheduler<DataChunk>
  meter: ProgressMeter
  chunkBytes: number
  signal?: AbortSignal
  /** Sends a control frame (ROUND_END) to the destination. */
  send: (f: Frame) => Promise<void>
  /** The auto-converge throttle in force, recorded with the round. */
  throttle: () => number
}

/** Chunk size of the final round: small, so that a small final dirty set still spreads over every lane. */
export const FINAL_CHUNK_BYTES = 256 * 1024

/**
 * Runs rounds: scan both areas, queue the dirty units as chunks (slice by slice as the scan
 * finishes them, so sending starts at once), wait until every chunk is acknowledged, ROUND_END.
 * The final round's scan also hashes both areas: they are frozen, so that is the digest at pause.
 */
export class RoundRunner {
  /** Rounds begun so far. */
  started = 0
  /** The areas' digests taken by the final round's scan. */
  pauseDigests: Uint8Array[] = []
  private chunkId = 0
  private lastRoundStart?: number

  constructor (private readonly ctx: RoundContext) {}

  /** Runs one round to its last acknowledgement and returns its figures. */
  async run (round: number, final: boolean): Promise<RoundStats> {
    const { ctx } = this
    this.started++
    const t0 = performance.now()
    const sincePrevious = this.lastRoundStart != null ? t0 - this.lastRoundStart : undefined
    this.lastRoundStart = t0
    let bytes = 0
    let units = 0
    const counts = ctx.areas.map(() => 0)
    const areaScanMs = ctx.areas.map(() => 0)
    ctx.meter.phase(final ? 'switchover' : 'precopy', round, 0)
    const scans = await Promise.all(ctx.areas.map(async (a, i) => {
      const r = await a.tracker.scan({
        signal: ctx.signal,
        digest: final,
        paused: final,
        // While the workload runs, scan only as far ahead of the lanes as keeps them busy.
        ...(final ? {} : { ahead: async () => { await ctx.scheduler.below(SCAN_LOOKAHEAD_BYTES) } }),
        onSlice: (dirty, from, to) => {
          const chunks = planChunks(dirty, a.area, a.unitSize, final ? Math.min(ctx.chunkBytes, FINAL_CHUNK_BYTES) : ctx.chunkBytes, round, () => ++this.chunkId, from, to)
          for (const c of chunks) {
            bytes += c.bytes
            ctx.meter.queued(c.bytes)
            const n = c.bytes / a.unitSize
            units += n
            counts[i]! += n
          }
          ctx.scheduler.push(chunks)
        }
      })
      areaScanMs[i] = performance.now() - t0 - (r.waitMs ?? 0)
      return r
    }))
    if (final) this.pauseDigests = scans.map(s => s.digest!)
    const incomplete = scans.some(s => s.incomplete === true)
    const scanWaitMs = Math.max(0, ...scans.map(s => s.waitMs ?? 0))
    const t1 = performance.now()
    await ctx.scheduler.idle()
    const t2 = performance.now()
    await ctx.send({ type: FrameType.RoundEnd, round, units, bytes })
    const holeBytes = scans.reduce((x, s) => x + (s.holeBytes ?? 0), 0)
    const initialScan = scans.some(s => s.initial === true)
    return {
      round, final, bytes, scanMs: t1 - t0, sendMs: t2 - t0, pages: counts[0] ?? 0, blocks: counts[1] ?? 0, throttle: ctx.throttle(),
      areaScanMs,
      ...(holeBytes > 0 ? { holeBytes } : {}),
      ...(initialScan ? { initialScan } : {}),
      ...(incomplete ? { incomplete } : {}),
      ...(scanWaitMs > 0 ? { scanWaitMs } : {}),
      ...(sincePrevious != null ? { dirtyRate: bytes / (sincePrevious / 1000) } : {}),
      ...(t2 > t0 ? { bandwidth: bytes / ((t2 - t0) / 1000) } : {})
    }
  }
}
