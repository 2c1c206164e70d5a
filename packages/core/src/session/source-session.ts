import { randomBytes } from 'node:crypto'
import {
  DEFAULT_CHUNK_BYTES, DEFAULT_COMMIT_TIMEOUT_MS, DEFAULT_CONTROL_TIMEOUT_MS, DEFAULT_DOWNTIME_TARGET_MS,
  DEFAULT_LANE_WINDOW, DEFAULT_MAX_ROUNDS, DEFAULT_SHADOW_LIMIT, DEFAULT_LANE_STALL_MS, DEFAULT_LANE_RETRY_MS,
  DEFAULT_CONTROL_ATTEMPT_MS
} from '../constants.js'
import { Bitmap } from '../bitmap.js'
import { AbortedError, CommitUnknownError, errorCode, InvalidArgumentError, NoLanesError, ProtocolError, RemoteAbortError, VerificationFailedError } from '../errors.js'
import type { ImageSpec, WorkloadController } from '../image.js'
import { ChunkScheduler } from '../scheduler/chunk-scheduler.js'
import { createDirtyTracker } from '../tracker/dirty-tracker.js'
import { createCooperativeTracker } from '../tracker/cooperative-tracker.js'
import type { DirtyTracker } from '../tracker/dirty-tracker.js'
import type { DirtySource } from '../tracker/cooperative-tracker.js'
import type { WorkerPool } from '../tracker/worker-pool.js'
import type { Lane } from '../transport/lane.js'
import { encodeFrame } from '../wire/codec.js'
import { Area, FrameType } from '../wire/frames.js'
import type { CacheStatusFrame, Frame } from '../wire/frames.js'
import { manifestFrames, parseCacheStats } from '../volume/cache-manifest.js'
import type { CacheManifest } from '../volume/cache-manifest.js'
import { ControlChannel } from './control-channel.js'
import { ControlLink } from './control-link.js'
import { BufferPool } from './buffer-pool.js'
import { planChunks } from './data-chunk.js'
import type { DataChunk } from './data-chunk.js'
import { LanePump } from './lane-pump.js'
import type { LaneStats } from './lane-pump.js'
import { planNextRound } from './round-planner.js'
import { Pacer } from '../pacing/pacer.js'
import { TokenBucket } from '../pacing/token-bucket.js'
import type { PlannerDecision } from './round-planner.js'
import { ProgressMeter } from './progress-meter.js'
import type { MigrationProgress, MigrationReport, RoundStats } from './report.js'

/** Options of a source session; every field has a default in constants.ts. */
export interface SourceSessionOptions {
  /** Payload bytes per data chunk. */
  chunkBytes?: number
  /** Unacknowledged bytes per lane. */
  laneWindow?: number
  /** Pre-copy rounds before switching over regardless. */
  maxRounds?: number
  /** Pause the planner aims for. */
  downtimeTargetMs?: number
  /** Throttle the workload step by step when its dirty set stops shrinking (default true). */
  autoConverge?: boolean
  /** Estimate of the pause's fixed part (device state, verification, commit) used by the planner. */
  fixedPauseMs?: number
  /** Bandwidth cap over all lanes, bytes per second (default none). */
  maxRate?: number
  /** Bandwidth cap per lane, bytes per second (default none). */
  laneRate?: number
  /** Share of a core each scan worker may use while the workload runs (0 < share ≤ 1, default 1). */
  scanCpuShare?: number
  /**
   * Adaptive pacing (default on when the workload reports its progress): back off when its ops/s
   * drop by more than `pacingDrop` (default 0.1) against before the migration, speed up again
   * when they recover.
   */
  adaptivePacing?: boolean
  pacingDrop?: number
  /** How long the destination may take to answer a control frame. */
  controlTimeoutMs?: number
  /** How long to wait for a control answer on one lane before trying another. */
  controlAttemptMs?: number
  /** How long verification and commit may take on the destination. */
  commitTimeoutMs?: number
  /** A lane with bytes in flight and no acknowledgement for this long is declared dead. */
  laneStallMs?: number
  /** How often to try to replace failed lanes (when `replenish` is given). */
  laneRetryMs?: number
  /** Areas up to this many bytes are tracked by shadow copy, larger ones by fingerprints. */
  shadowLimitBytes?: number
  /** Called with progress snapshots. */
  onProgress?: (p: MigrationProgress) => void
  /** Aborts the migration (the source resumes). */
  signal?: AbortSignal
}

/** What a source session works with. */
export interface SourceSessionDeps {
  image: ImageSpec
  controller: WorkloadController
  /** Control lane to the destination. */
  control: Lane
  /**
   * Data lanes to the destination (at least one), or a function that opens them, called once the
   * destination accepted the session (so a refused session opens no lanes).
   */
  lanes: Lane[] | { count: number, open: () => Promise<Lane[]> }
  /** Worker threads for scans and digests. */
  pool: WorkerPool
  /**
   * Opens replacement lanes while fewer lanes are active than the session started with (a NIC
   * came back): given the lanes still active, returns new lanes (possibly none). Errors are
   * ignored and retried.
   */
  replenish?: (active: LaneStats[]) => Promise<Lane[]>
  /**
   * The cache's metadata when the cache caches a volume: the destination may then take clean,
   * cold blocks from replicas or its own stores, and the source sends only hot and dirty ones
   * (plus whatever the destination could not get elsewhere).
   */
  cacheManifest?: CacheManifest
  /**
   * The memory's dirty-marks file when the workload marks the pages it writes (cooperative
   * tracking: rounds cost what changed); without it, memory is scanned.
   */
  memoryMarks?: string
  /** The cache's dirty-marks file when the workload marks the blocks it writes (one mark per block). */
  cacheMarks?: string
  /**
   * Where the cache's written blocks come from when neither the workload's marks nor a scan
   * (e.g. a hypervisor's dirty bitmaps of the disk): rounds then cost what changed.
   */
  cacheDirtySource?: DirtySource
}

interface AreaState { area: Area, unitSize: number, tracker: DirtyTracker }

/**
 * Migrates one image to a destination: handshake, pre-copy rounds, switchover, verification,
 * commit. Any failure before COMMIT resumes the source workload untouched; the report says so.
 */
export async function runSourceSession (deps: SourceSessionDeps, options: SourceSessionOptions = {}): Promise<MigrationReport> {
  const { image, controller, pool } = deps
  const started = performance.now()
  const control = new ControlChannel(deps.control)
  const controlTimeout = options.controlTimeoutMs ?? DEFAULT_CONTROL_TIMEOUT_MS
  const commitTimeout = options.commitTimeoutMs ?? DEFAULT_COMMIT_TIMEOUT_MS
  const chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES
  const signal = options.signal
  const scheduler = new ChunkScheduler<DataChunk>()
  const meter = new ProgressMeter(options.onProgress)
  const report: MigrationReport = { image: image.name, ok: false, rounds: [], lanes: [], bytes: 0, totalMs: 0, verified: false }
  const areas: AreaState[] = []
  const pumps: LanePump[] = []
  let paused = false
  let throttle = 0
  let maxThrottle = 0
  let commitSent = false
  let chunkId = 0
  let replenisher: NodeJS.Timeout | undefined
  let link: ControlLink | undefined
  const onAbortSignal = (): void => { scheduler.fail(new AbortedError()) }
  signal?.addEventListener('abort', onAbortSignal, { once: true })

  const budget = new TokenBucket(options.maxRate ?? Infinity)
  let pacer: Pacer | undefined
  try {
    for (const [k, v] of [['maxRate', options.maxRate], ['laneRate', options.laneRate]] as const) {
      if (v != null && !(v > 0)) throw new InvalidArgumentError(`${k} must be a positive number of bytes per second`)
    }
    if (options.scanCpuShare != null && !(options.scanCpuShare > 0 && options.scanCpuShare <= 1)) throw new InvalidArgumentError('scanCpuShare must be in (0, 1]')
    // The workload's pace before the migration is what adaptive pacing protects.
    if ((options.adaptivePacing ?? true) && controller.progress != null) {
      const before = await controller.progress().catch(() => undefined)
      if (before != null && before.opsPerSec > 0) {
        pacer = new Pacer({ budget, maxRate: options.maxRate ?? Infinity, progress: controller.progress, sendRate: () => meter.snapshot().rate, dropFraction: options.pacingDrop }, before.opsPerSec)
      }
    }
    const laneCount = Array.isArray(deps.lanes) ? deps.lanes.length : deps.lanes.count
    if (laneCount === 0) throw new NoLanesError('a source session needs at least one data lane')
    meter.phase('handshake', 0)
    const sessionId = randomBytes(16)
    await control.send({
      type: FrameType.Hello, sessionId, image: image.name, pageSize: image.memory.pageSize, memorySize: image.memory.size,
      blockSize: image.cache.blockSize, cacheSize: image.cache.size, lanes: laneCount, driver: image.driver,
      driverConfig: JSON.stringify(image.driverConfig)
    })
    await control.expect(FrameType.Accept, controlTimeout, signal)
    const cache = deps.cacheManifest != null && image.cache.size > 0
      ? await offerCacheBlocks(control, deps.cacheManifest, image.cache.size / image.cache.blockSize, controlTimeout, signal)
      : undefined
    const shadowLimit = options.shadowLimitBytes ?? DEFAULT_SHADOW_LIMIT
    for (const [area, path, size, unitSize] of [
      [Area.Memory, image.memory.path, image.memory.size, image.memory.pageSize],
      [Area.Cache, image.cache.path, image.cache.size, image.cache.blockSize]
    ] as const) {
      const mode = size <= shadowLimit ? 'shadow' : 'hash'
      const cpuShare = options.scanCpuShare
      const marksPath = area === Area.Memory ? deps.memoryMarks : deps.cacheMarks
      const source = area === Area.Cache && size > 0 ? deps.cacheDirtySource : undefined
      const tracker = marksPath != null || source != null
        ? createCooperativeTracker({ path, size, unitSize, marksPath, source, cpuShare }, pool)
        : createDirtyTracker({ path, size, unitSize, mode, cpuShare }, pool)
      areas.push({ area, unitSize, tracker })
    }
    if (cache != null) {
      // Claimed blocks are sent only if their bytes here differ from the volume's.
      const tracker = areas[Area.Cache]!.tracker
      for (const r of cache.runs()) for (let i = r.start; i < r.start + r.count; i++) tracker.assume(i, deps.cacheManifest!.hashes.subarray(i * 32, i * 32 + 32))
    }
    // Figures and the end of the destination's own fetch of cache blocks (CACHE_STATUS frames).
    let roundsStarted = 0
    let fetchDoneAfterRound = -1
    let fetchDone: () => void = () => {}
    const fetchFinished = new Promise<void>(resolve => { fetchDone = resolve })
    const onCacheStatus = (f: CacheStatusFrame): void => {
      const stats = parseCacheStats(f.stats)
      if (stats != null) { report.cache = { ...stats, sourceBlocks: report.rounds.reduce((a, r) => a + r.blocks, 0) }; meter.cache = stats }
      if (!f.done || fetchDoneAfterRound >= 0 || cache == null) return
      const blocks = image.cache.size / image.cache.blockSize
      if (f.need.byteLength === Math.ceil(blocks / 8)) {
        // Claimed blocks nobody could serve: the destination still holds zeros there.
        const need = new Bitmap(blocks)
        need.bits.set(f.need)
        areas[Area.Cache]?.tracker.invalidate([...need.runs()])
      }
      fetchDoneAfterRound = roundsStarted
      fetchDone()
    }
    const onControlFrame = (f: Frame): void => {
      if (f.type === FrameType.CacheStatus) onCacheStatus(f)
      else link?.deliver(f)
    }
    // From here control answers may come on any lane (see ControlLink).
    link = new ControlLink(deps.control, () => pumps.filter(p => p.alive).map(p => p.lane))
    const controlLink = link
    void (async () => {
      try {
        for (let f = await control.nextRaw(); f != null; f = await control.nextRaw()) onControlFrame(f)
      } catch {}
      controlLink.controlLost()
    })()

    // One contiguous pooled buffer per chunk: the tracker's shadow is shared memory, and Noise
    // encrypting straight from shared memory was measured 2.5x slower than from a private copy.
    const buffers = new BufferPool(chunkBytes)
    const load = async (c: DataChunk): Promise<Uint8Array[]> => {
      const parts = await areas[c.area]!.tracker.load(c.runs)
      const buf = buffers.acquire(c.bytes)
      let off = 0
      for (const p of parts) { buf.set(p, off); off += p.byteLength }
      return [buf]
    }
    const lanes = Array.isArray(deps.lanes) ? deps.lanes : await deps.lanes.open()
    if (lanes.length === 0) throw new NoLanesError('no data lane could be opened')
    const addLane = async (lane: Lane): Promise<void> => {
      const index = pumps.length
      await lane.send(encodeLaneHello(sessionId, index))
      pumps.push(new LanePump(lane, {
        index,
        scheduler, load, window: options.laneWindow ?? DEFAULT_LANE_WINDOW, stallTimeoutMs: options.laneStallMs ?? DEFAULT_LANE_STALL_MS,
        onAck: (c) => {
          report.bytes += c.bytes
          meter.acked(c.bytes)
          for (const p of c.parts ?? []) buffers.release(p)
        },
        onControl: onControlFrame,
        budgets: [budget, ...(options.laneRate != null ? [new TokenBucket(options.laneRate)] : [])]
      }))
    }
    for (const lane of lanes) await addLane(lane)
    const laneTarget = lanes.length
    if (deps.replenish != null) {
      const replenish = deps.replenish
      let busy = false
      replenisher = setInterval(() => {
        const active = pumps.filter(p => p.stats.state === 'active').map(p => p.stats)
        if (busy || active.length >= laneTarget || active.length === 0) return
        busy = true
        replenish(active).then(async (fresh) => {
          for (const lane of fresh) {
            if (replenisher == null) { lane.abort(); continue }
            await addLane(lane).catch(() => { lane.abort() })
          }
        }, () => {}).finally(() => { busy = false })
      }, options.laneRetryMs ?? DEFAULT_LANE_RETRY_MS)
      replenisher.unref()
    }
    meter.lanes = () => pumps.map(p => p.stats)

    // One round: scan both areas, queue the dirty units, wait until every chunk is acknowledged.
    // The final round's scan also hashes both areas: they are frozen, so that is the digest at pause.
    let pauseDigests: Uint8Array[] = []
    let lastRoundStart: number | undefined
    const runRound = async (round: number, final: boolean): Promise<RoundStats> => {
      roundsStarted++
      const t0 = performance.now()
      const sincePrevious = lastRoundStart != null ? t0 - lastRoundStart : undefined
      lastRoundStart = t0
      let bytes = 0
      let units = 0
      const counts = [0, 0]
      meter.phase(final ? 'switchover' : 'precopy', round, 0)
      // Chunks are queued slice by slice as the scan finishes them, so sending starts at once.
      const scans = await Promise.all(areas.map(async (a, i) => await a.tracker.scan({
        signal,
        digest: final,
        paused: final,
        onSlice: (dirty, from, to) => {
          const chunks = planChunks(dirty, a.area, a.unitSize, final ? Math.min(chunkBytes, FINAL_CHUNK_BYTES) : chunkBytes, round, () => ++chunkId, from, to)
          for (const c of chunks) {
            bytes += c.bytes
            meter.queued(c.bytes)
            const n = c.bytes / a.unitSize
            units += n
            counts[i]! += n
          }
          scheduler.push(chunks)
        }
      })))
      if (final) pauseDigests = scans.map(s => s.digest!)
      const incomplete = scans.some(s => s.incomplete === true)
      const scanWaitMs = Math.max(0, ...scans.map(s => s.waitMs ?? 0))
      const t1 = performance.now()
      await scheduler.idle()
      const t2 = performance.now()
      await link!.send({ type: FrameType.RoundEnd, round, units, bytes })
      const stats: RoundStats = {
        round, final, bytes, scanMs: t1 - t0, sendMs: t2 - t0, pages: counts[0]!, blocks: counts[1]!, throttle,
        ...(incomplete ? { incomplete } : {}),
        ...(scanWaitMs > 0 ? { scanWaitMs } : {}),
        ...(sincePrevious != null ? { dirtyRate: bytes / (sincePrevious / 1000) } : {}),
        ...(t2 > t0 ? { bandwidth: bytes / ((t2 - t0) / 1000) } : {})
      }
      report.rounds.push(stats)
      return stats
    }

    let round = 1
    pacer?.start()
    await runRound(round, false)
    const limits = {
      maxRounds: options.maxRounds ?? DEFAULT_MAX_ROUNDS,
      downtimeTargetMs: options.downtimeTargetMs ?? DEFAULT_DOWNTIME_TARGET_MS,
      autoConverge: (options.autoConverge ?? true) && controller.throttle != null,
      fixedPauseMs: options.fixedPauseMs
    }
    // With cache blocks fetched elsewhere, switch over only after the destination's fetch ended
    // and a round has since sent what it could not get; keep copying dirty pages meanwhile.
    const cacheReady = (): boolean => cache == null || (fetchDoneAfterRound >= 0 && roundsStarted > fetchDoneAfterRound)
    let decision: PlannerDecision
    while (true) {
      decision = planNextRound(report.rounds, throttle, { ...limits, paced: budget.rate !== Infinity || options.laneRate != null })
      report.rounds[report.rounds.length - 1]!.predictedPauseMs = decision.predictedPauseMs
      if (decision.switchOver && cacheReady()) break
      if (decision.switchOver && fetchDoneAfterRound < 0) await waitFor(fetchFinished, CACHE_WAIT_MS, signal)
      else if (fetchDoneAfterRound < 0 && cache != null && report.rounds.length >= 2) {
        // The switchover waits for the destination's fetch from the replicas anyway: until it
        // ends, a round every CACHE_ROUND_GAP_MS keeps the dirty set small without rescanning
        // the image back to back (the scans' CPU is what the fetch needs on a small host).
        await waitFor(fetchFinished, CACHE_ROUND_GAP_MS, signal)
      }
      if (decision.throttle !== throttle) {
        throttle = decision.throttle
        maxThrottle = Math.max(maxThrottle, throttle)
        if (pacer != null) pacer.throttle = throttle
        await controller.throttle?.(throttle)
      }
      await runRound(++round, false)
    }
    // Converged: the dirty set got as small as it gets (the pause may still be scan-bound).
    report.convergence = {
      converged: decision.reason === 'converged' || decision.reason === 'idle' || decision.reason === 'scan-bound',
      targetMet: decision.predictedPauseMs <= limits.downtimeTargetMs,
      reason: decision.reason,
      maxThrottle
    }

    // Switchover: from here the workload is paused until commit or abort, and the final round
    // goes at full speed (the pause is what the workload notices most).
    pacer?.stop()
    budget.setRate(Infinity)
    const pausedAt = performance.now()
    await controller.pause()
    paused = true
    await link!.send({ type: FrameType.Pause, round: round + 1 })
    const fin = await runRound(round + 1, true)
    // Every byte is acknowledged: the data lanes only carry control answers from now on.
    clearInterval(replenisher)
    replenisher = undefined
    scheduler.close()
    for (const p of pumps) p.drain()
    const state = await controller.deviceState()
    await link!.send({ type: FrameType.DeviceState, state }, true)
    meter.phase('verify', round + 1)
    const tv = performance.now()
    const [memoryDigest, cacheDigest] = pauseDigests as [Uint8Array, Uint8Array]
    report.memoryDigest = Buffer.from(memoryDigest).toString('hex')
    report.cacheDigest = Buffer.from(cacheDigest).toString('hex')
    const attempt = { attemptMs: options.controlAttemptMs ?? DEFAULT_CONTROL_ATTEMPT_MS, totalMs: commitTimeout, signal }
    const result = await link!.request({ type: FrameType.Verify, memoryDigest, cacheDigest }, FrameType.VerifyResult, attempt)
    const remoteOk = Buffer.from(result.memoryDigest).equals(memoryDigest) && Buffer.from(result.cacheDigest).equals(cacheDigest)
    if (!result.ok || !remoteOk) throw new VerificationFailedError()
    report.verified = true
    meter.phase('commit', round + 1)
    const tc = performance.now()
    commitSent = true
    try {
      await link!.request({ type: FrameType.Commit }, FrameType.Committed, { ...attempt, signal: undefined })
    } catch (err) {
      // An explicit refusal means the destination did not take over: resume here as usual.
      if (err instanceof RemoteAbortError) { commitSent = false; throw err }
      throw new CommitUnknownError(`commit not acknowledged: ${(err as Error).message}; source kept paused with its image intact`)
    }
    const resumedAt = performance.now()
    report.downtimeMs = resumedAt - pausedAt
    report.downtime = { finalScanMs: fin.scanMs, finalSendMs: fin.sendMs, verifyMs: tc - tv, commitMs: resumedAt - tc }
    report.ok = true
    await controller.stop()
    meter.phase('done', round + 1)
    return report
  } catch (err) {
    report.error = { code: errorCode(err), message: err instanceof Error ? err.message : String(err) }
    if (!commitSent) {
      const abort = { type: FrameType.Abort, code: errorCode(err), message: report.error.message } as const
      await (link != null ? link.send(abort) : control.send(abort)).catch(() => {})
      if (throttle > 0) await controller.throttle?.(0).catch(() => {})
      if (paused) {
        await controller.resume()
        report.sourceResumed = true
      }
    }
    meter.phase('aborted', report.rounds.length)
    throw Object.assign(err instanceof Error ? err : new Error(String(err)), { report })
  } finally {
    signal?.removeEventListener('abort', onAbortSignal)
    clearInterval(replenisher)
    replenisher = undefined
    scheduler.close()
    meter.stop()
    await Promise.all(pumps.map(async p => { await p.close() }))
    await deps.control.close().catch(() => {})
    for (const a of areas) await a.tracker.close().catch(() => {})
    pacer?.stop()
    if (pacer != null) report.pacing = pacer.report
    report.lanes = pumps.map(p => ({ ...p.stats }))
    if (report.cache != null) report.cache.sourceBlocks = report.rounds.reduce((a, r) => a + r.blocks, 0)
    if (link != null && link.switches.length > 0) report.controlMoves = [...link.switches]
    report.totalMs = performance.now() - started
  }
}

/** Chunk size of the final round: small, so that a small final dirty set still spreads over every lane. */
const FINAL_CHUNK_BYTES = 256 * 1024

/** How long the source idles between rounds while the destination still fetches cache blocks. */
const CACHE_WAIT_MS = 1000
/** Pause between pre-copy rounds while the destination still fetches cache blocks from replicas. */
const CACHE_ROUND_GAP_MS = 1000

/**
 * Sends the cache manifest and reads the destination's claim: the clean cold blocks it will get
 * elsewhere. Returns the claimed blocks the source will not send (clean and cold per the manifest).
 */
async function offerCacheBlocks (control: ControlChannel, m: CacheManifest, blocks: number, timeoutMs: number, signal?: AbortSignal): Promise<Bitmap> {
  if (m.hashes.byteLength !== blocks * 32 || m.dirty.size !== blocks || m.hot.size !== blocks) {
    throw new InvalidArgumentError(`cache manifest describes ${m.hashes.byteLength / 32} blocks, the cache has ${blocks}`)
  }
  for (const f of manifestFrames(m)) await control.send(f)
  const claim = await control.expect(FrameType.CacheClaim, timeoutMs, signal)
  if (claim.claimed.byteLength !== Math.ceil(blocks / 8)) throw new ProtocolError('cache claim does not match the block count')
  const out = new Bitmap(blocks)
  out.bits.set(claim.claimed)
  for (let i = 0; i < blocks; i++) if (out.get(i) && (m.dirty.get(i) || m.hot.get(i))) out.clear(i)
  return out
}

/** Resolves when `p` settles or after `ms`, whichever is first; throws if `signal` aborts. */
async function waitFor (p: Promise<unknown>, ms: number, signal?: AbortSignal): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([p, new Promise(resolve => { timer = setTimeout(resolve, ms) })]).finally(() => { clearTimeout(timer) })
  signal?.throwIfAborted()
}

function encodeLaneHello (sessionId: Uint8Array, lane: number): Uint8Array[] {
  return encodeFrame({ type: FrameType.LaneHello, sessionId, lane })
}
