import { randomBytes } from 'node:crypto'
import {
  DEFAULT_CHUNK_BYTES, DEFAULT_COMMIT_TIMEOUT_MS, DEFAULT_CONTROL_TIMEOUT_MS, DEFAULT_DOWNTIME_TARGET_MS,
  DEFAULT_MAX_ROUNDS, DEFAULT_SHADOW_LIMIT, DEFAULT_CONTROL_ATTEMPT_MS
} from '../constants.js'
import { Bitmap } from '../bitmap.js'
import { abortedBy, AbortedError, CommitUnknownError, errorCode, InvalidArgumentError, NoLanesError, ProtocolError, RemoteAbortError, VerificationFailedError } from '../errors.js'
import { ChunkScheduler } from '../scheduler/chunk-scheduler.js'
import { createDirtyTracker } from '../tracker/dirty-tracker.js'
import { createCooperativeTracker } from '../tracker/cooperative-tracker.js'
import { Area, FrameType } from '../wire/frames.js'
import type { AcceptFrame, CacheStatusFrame, Frame } from '../wire/frames.js'
import { parseCacheStats } from '../volume/cache-manifest.js'
import { Pacer } from '../pacing/pacer.js'
import { TokenBucket } from '../pacing/token-bucket.js'
import { ControlChannel } from './control-channel.js'
import { ControlLink } from './control-link.js'
import type { DataChunk } from './data-chunk.js'
import { DEFAULT_FIXED_PAUSE_MS, planNextRound } from './round-planner.js'
import type { PlannerDecision } from './round-planner.js'
import { ProgressMeter } from './progress-meter.js'
import type { MigrationReport, MigrationWarning } from './report.js'
import { SourceLanes } from './source-lanes.js'
import { RoundRunner } from './source-rounds.js'
import type { AreaState } from './source-rounds.js'
import type { SourceSessionDeps, SourceSessionOptions } from './source-options.js'
import { estimateScanWarnings, judgePause, measuredScanWarnings } from './pause-advice.js'
import { offerCacheBlocks, waitFor } from './source-steps.js'

/** How long a session whose planner wants to switch over waits for a busy gate before another round. */
const GATE_WAIT_MS = 250

export type { CacheMode, KeptCache, SourceSessionDeps, SourceSessionOptions } from './source-options.js'

/** How long the source idles between rounds while the destination still fetches cache blocks. */
const CACHE_WAIT_MS = 1000
/** Pause between pre-copy rounds while the destination still fetches cache blocks from replicas. */
const CACHE_ROUND_GAP_MS = 1000

/**
 * Migrates one image to a destination: handshake, pre-copy rounds, switchover, verification,
 * commit. Any failure before COMMIT resumes the source workload untouched; the report says so.
 */
export async function runSourceSession (deps: SourceSessionDeps, options: SourceSessionOptions = {}): Promise<MigrationReport> {
  return await new SourceSession(deps, options).run()
}

/**
 * The source side of one migration, as the phases of docs/ARCHITECTURE.md: {@link handshake},
 * {@link offerCache}, {@link openLanes}, {@link precopy} (rounds), {@link switchover},
 * {@link verify}, {@link commit}; {@link abort} when any of them fails before COMMIT, and
 * {@link cleanup} always. What abort must undo is held in fields (`paused`, `throttle`,
 * `commitSent`) that the phase which changes it sets, so each phase can be read alone.
 */
export class SourceSession {
  readonly report: MigrationReport
  private readonly control: ControlChannel
  private readonly meter: ProgressMeter
  private readonly scheduler = new ChunkScheduler<DataChunk>()
  private readonly budget: TokenBucket
  private readonly started = performance.now()
  private readonly sessionId = randomBytes(16)
  private readonly areas: AreaState[] = []
  private readonly warnings: MigrationWarning[] = []
  private pacer?: Pacer
  private link?: ControlLink
  private lanes?: SourceLanes
  private rounds?: RoundRunner
  /** The destination's ACCEPT (where it takes data lanes). */
  private accepted?: AcceptFrame
  /** Cache blocks the destination claimed (it gets them elsewhere). */
  private claim?: Bitmap
  private fetchDoneAfterRound = -1
  private fetchDone: () => void = () => {}
  private readonly fetchFinished = new Promise<void>(resolve => { this.fetchDone = resolve })
  // What abort has to undo.
  private paused = false
  private throttle = 0
  private maxThrottle = 0
  private commitSent = false
  /** Post-copy: drops the cache this node started to serve, if the migration aborts. */
  private dropKept?: () => Promise<void>
  /** Who this session is to a {@link SwitchoverGate} it shares. */
  private readonly gateId = Symbol('source session')
  private readonly onAbortSignal = (): void => { this.scheduler.fail(abortedBy(this.options.signal)) }

  constructor (private readonly deps: SourceSessionDeps, private readonly options: SourceSessionOptions = {}) {
    this.control = new ControlChannel(deps.control)
    this.meter = new ProgressMeter(options.onProgress)
    this.budget = new TokenBucket(options.maxRate ?? Infinity)
    this.report = { image: deps.image.name, ok: false, rounds: [], lanes: [], bytes: 0, totalMs: 0, verified: false }
  }

  private get targetMs (): number { return this.options.downtimeTargetMs ?? DEFAULT_DOWNTIME_TARGET_MS }
  private get fixedPauseMs (): number { return this.options.fixedPauseMs ?? DEFAULT_FIXED_PAUSE_MS }
  private get controlTimeout (): number { return this.options.controlTimeoutMs ?? DEFAULT_CONTROL_TIMEOUT_MS }

  /** Runs every phase in order; on failure aborts, and always cleans up. */
  async run (): Promise<MigrationReport> {
    this.options.signal?.addEventListener('abort', this.onAbortSignal, { once: true })
    try {
      await this.checkOptions()
      await this.handshake()
      await this.offerCache()
      this.createTrackers()
      this.listenForControl()
      await this.openLanes()
      const decision = await this.precopy()
      const pause = await this.switchover(decision)
      await this.verify(pause)
      await this.keepCache()
      await this.commit(pause)
      return this.report
    } catch (err) {
      await this.abort(err)
      throw Object.assign(err instanceof Error ? err : new Error(String(err)), { report: this.report })
    } finally {
      this.options.switchoverGate?.release(this.gateId)
      await this.cleanup()
    }
  }

  /** Bad options change nothing; the workload's pace before the migration is what pacing protects. */
  private async checkOptions (): Promise<void> {
    const { options, deps } = this
    for (const [k, v] of [['maxRate', options.maxRate], ['laneRate', options.laneRate]] as const) {
      if (v != null && !(v > 0)) throw new InvalidArgumentError(`${k} must be a positive number of bytes per second`)
    }
    if (options.scanCpuShare != null && !(options.scanCpuShare > 0 && options.scanCpuShare <= 1)) throw new InvalidArgumentError('scanCpuShare must be in (0, 1]')
    if (options.cacheMode != null && options.cacheMode !== 'precopy' && options.cacheMode !== 'postcopy') throw new InvalidArgumentError(`cache mode must be precopy or postcopy, not ${String(options.cacheMode)}`)
    if (options.postcopyPrefetch === true && options.cacheMode !== 'postcopy') throw new InvalidArgumentError('postcopy prefetch needs cache mode postcopy')
    if (options.cacheMode === 'postcopy' && (deps.cacheManifest == null || deps.image.cache.size === 0)) {
      throw new InvalidArgumentError(`post-copy needs a cache that caches a volume (the blocks that arrive after the switchover are checked against the volume's hashes); the cache of ${deps.image.name} does not`)
    }
    const laneCount = Array.isArray(deps.lanes) ? deps.lanes.length : deps.lanes.count
    if (laneCount === 0) throw new NoLanesError('a source session needs at least one data lane')
    if ((options.adaptivePacing ?? true) && deps.controller.progress != null) {
      const before = await deps.controller.progress().catch(() => undefined)
      if (before != null && before.opsPerSec > 0) {
        this.pacer = new Pacer({ budget: this.budget, maxRate: options.maxRate ?? Infinity, progress: deps.controller.progress, sendRate: () => this.meter.snapshot().rate, dropFraction: options.pacingDrop }, before.opsPerSec)
      }
    }
  }

  /** HELLO → ACCEPT (or the destination's ABORT, which `expect` throws). */
  private async handshake (): Promise<void> {
    const { image, lanes } = this.deps
    this.meter.phase('handshake', 0)
    await this.control.send({
      type: FrameType.Hello, sessionId: this.sessionId, image: image.name, pageSize: image.memory.pageSize, memorySize: image.memory.size,
      blockSize: image.cache.blockSize, cacheSize: image.cache.size, lanes: Array.isArray(lanes) ? lanes.length : lanes.count, driver: image.driver,
      driverConfig: JSON.stringify(image.driverConfig),
      ...(this.deps.stopped === true ? { stopped: true } : {})
    })
    this.accepted = await this.control.expect(FrameType.Accept, this.controlTimeout, this.options.signal)
  }

  /** A cache that caches a volume: the manifest out, the destination's claim back. */
  private async offerCache (): Promise<void> {
    const { image, cacheManifest } = this.deps
    this.report.cacheMode = this.postcopy ? 'postcopy' : 'precopy'
    if (cacheManifest == null || image.cache.size === 0) return
    this.claim = await offerCacheBlocks(this.control, cacheManifest, image.cache.size / image.cache.blockSize, this.controlTimeout, this.options.signal, this.postcopy, this.options.postcopyPrefetch === true)
  }

  /** Post-copy was asked for (checkOptions made sure the cache caches a volume). */
  private get postcopy (): boolean { return this.options.cacheMode === 'postcopy' }

  /** One tracker per area: the workload's marks or a dirty source when there are any, else scans. */
  private createTrackers (): void {
    const { image, deps, options } = this
    const shadowLimit = options.shadowLimitBytes ?? DEFAULT_SHADOW_LIMIT
    for (const [area, name, path, size, unitSize] of [
      [Area.Memory, 'memory', image.memory.path, image.memory.size, image.memory.pageSize],
      [Area.Cache, 'cache', image.cache.path, image.cache.size, image.cache.blockSize]
    ] as const) {
      const mode = size <= shadowLimit ? 'shadow' : 'hash'
      const cpuShare = options.scanCpuShare
      const marksPath = area === Area.Memory ? deps.memoryMarks : deps.cacheMarks
      const source = area === Area.Cache && size > 0 ? deps.cacheDirtySource : undefined
      const tracker = marksPath != null || source != null
        ? createCooperativeTracker({ path, size, unitSize, marksPath, source, cpuShare, ...(options.skipHoles === false ? { dataExtents: false } : {}) }, deps.pool)
        : createDirtyTracker({ path, size, unitSize, mode, cpuShare, ...(options.skipHoles === false ? { dataExtents: false } : {}), ...(deps.shadows != null ? { shadows: deps.shadows } : {}) }, deps.pool)
      this.areas.push({ area, name, path, size, unitSize, tracker })
    }
    if (this.claim != null) {
      // Claimed blocks are sent only if their bytes here differ from the volume's.
      const tracker = this.areas[Area.Cache]!.tracker
      const hashes = deps.cacheManifest!.hashes
      for (const r of this.claim.runs()) for (let i = r.start; i < r.start + r.count; i++) tracker.assume(i, hashes.subarray(i * 32, i * 32 + 32))
    }
  }

  private get image (): SourceSessionDeps['image'] { return this.deps.image }

  /** From here control answers may come on any lane (see ControlLink); CACHE_STATUS is handled here. */
  private listenForControl (): void {
    // The destination's ABORT ends the rounds at once with its cause (a full disk is not a lost lane).
    const link = this.link = new ControlLink(this.deps.control, () => this.lanes?.alive() ?? [], (err) => { this.scheduler.fail(err) })
    void (async () => {
      try {
        for (let f = await this.control.nextRaw(); f != null; f = await this.control.nextRaw()) this.onControlFrame(f)
      } catch {}
      link.controlLost()
    })()
  }

  private onControlFrame (f: Frame): void {
    if (f.type === FrameType.CacheStatus) this.onCacheStatus(f)
    else this.link?.deliver(f)
  }

  /** Figures and the end of the destination's own fetch of cache blocks. */
  private onCacheStatus (f: CacheStatusFrame): void {
    const stats = parseCacheStats(f.stats)
    if (stats != null) { this.report.cache = { ...stats, sourceBlocks: this.report.rounds.reduce((a, r) => a + r.blocks, 0) }; this.meter.cache = stats }
    if (!f.done || this.fetchDoneAfterRound >= 0 || this.claim == null) return
    const blocks = this.image.cache.size / this.image.cache.blockSize
    if (f.need.byteLength === Math.ceil(blocks / 8)) {
      // Claimed blocks nobody could serve: the destination still holds zeros there.
      const need = new Bitmap(blocks)
      need.bits.set(f.need)
      this.areas[Area.Cache]?.tracker.invalidate([...need.runs()])
    }
    this.fetchDoneAfterRound = this.rounds?.started ?? 0
    this.fetchDone()
  }

  /** Opens the data lanes (only now: a refused session opens none) and starts replenishing them. */
  private async openLanes (): Promise<void> {
    const { deps, options } = this
    const lanes = this.lanes = new SourceLanes({
      sessionId: this.sessionId,
      scheduler: this.scheduler,
      trackers: this.areas.map(a => a.tracker),
      chunkBytes: options.chunkBytes ?? DEFAULT_CHUNK_BYTES,
      window: options.laneWindow,
      stallMs: options.laneStallMs,
      budget: this.budget,
      // Shared with other migrations: a budget, and a gate whose holder is in its pause (this
      // session's lanes wait meanwhile). Our own final round waits for neither.
      ...(options.sharedBudget != null || options.switchoverGate != null
        ? {
            sharedBudget: {
              take: async (n: number) => {
                if (this.paused) return
                await options.switchoverGate?.whileHeldByOther(this.gateId, options.signal)
                await options.sharedBudget?.take(n)
              }
            }
          }
        : {}),
      ...(options.laneRate != null ? { laneBudget: () => new TokenBucket(options.laneRate!) } : {}),
      onAck: (bytes) => { this.report.bytes += bytes; this.meter.acked(bytes) },
      onControl: (f) => { this.onControlFrame(f) }
    })
    const opened = Array.isArray(deps.lanes) ? deps.lanes : await deps.lanes.open(this.accepted!)
    if (opened.length === 0) throw new NoLanesError('no data lane could be opened')
    await lanes.start(opened)
    if (deps.replenish != null) lanes.replenishWith(deps.replenish, options.laneRetryMs)
    this.meter.lanes = () => lanes.stats()
    this.rounds = new RoundRunner({
      areas: this.areas, scheduler: this.scheduler, meter: this.meter, chunkBytes: options.chunkBytes ?? DEFAULT_CHUNK_BYTES,
      signal: options.signal, send: async (f) => { await this.link!.send(f) }, throttle: () => this.throttle
    })
  }

  private warn (w: MigrationWarning): void {
    this.warnings.push(w)
    this.report.warnings = [...this.warnings]
    this.meter.warn(w)
  }

  /** Pre-copy rounds until the planner switches over (and the destination's cache fetch is done). */
  private async precopy (): Promise<PlannerDecision> {
    const { options, deps } = this
    // Up front: can the trackers chosen meet the target at all for this image?
    for (const w of await estimateScanWarnings(this.areas.map(a => ({ ...a, mode: a.tracker.mode })), deps.pool.size, this.targetMs, this.fixedPauseMs)) this.warn(w)
    let round = 1
    this.pacer?.start()
    await this.runRound(round)
    const limits = {
      maxRounds: options.maxRounds ?? DEFAULT_MAX_ROUNDS,
      downtimeTargetMs: this.targetMs,
      autoConverge: (options.autoConverge ?? true) && deps.controller.throttle != null,
      fixedPauseMs: options.fixedPauseMs
    }
    // With cache blocks fetched elsewhere, switch over only after the destination's fetch ended
    // and a round has since sent what it could not get; keep copying dirty pages meanwhile.
    // Post-copy does not wait: what the destination has not fetched by then streams in afterwards.
    const cacheReady = (): boolean => this.claim == null || this.postcopy || (this.fetchDoneAfterRound >= 0 && this.rounds!.started > this.fetchDoneAfterRound)
    let decision: PlannerDecision
    while (true) {
      decision = planNextRound(this.report.rounds, this.throttle, { ...limits, paced: this.budget.rate !== Infinity || options.laneRate != null || options.sharedBudget != null })
      this.report.rounds[this.report.rounds.length - 1]!.predictedPauseMs = decision.predictedPauseMs
      if (decision.switchOver && cacheReady()) {
        const gate = options.switchoverGate
        if (gate == null || gate.tryAcquire(this.gateId)) break
        // Another migration sharing the gate is in its pause: at the round limit wait for it;
        // else give it a moment, then one more round keeps the dirty set small meanwhile.
        if (decision.reason === 'max-rounds') { await gate.acquire(this.gateId, options.signal); break }
        await gate.changed(options.signal, GATE_WAIT_MS)
        await this.runRound(++round)
        continue
      }
      if (decision.switchOver && this.fetchDoneAfterRound < 0) await waitFor(this.fetchFinished, CACHE_WAIT_MS, options.signal)
      else if (this.fetchDoneAfterRound < 0 && this.claim != null && !this.postcopy && this.report.rounds.length >= 2) {
        // The switchover waits for the destination's fetch from the replicas anyway: until it
        // ends, a round every CACHE_ROUND_GAP_MS keeps the dirty set small without rescanning
        // the image back to back (the scans' CPU is what the fetch needs on a small host).
        await waitFor(this.fetchFinished, CACHE_ROUND_GAP_MS, options.signal)
      }
      if (decision.throttle !== this.throttle) {
        this.throttle = decision.throttle
        this.maxThrottle = Math.max(this.maxThrottle, this.throttle)
        if (this.pacer != null) this.pacer.throttle = this.throttle
        await deps.controller.throttle?.(this.throttle)
      }
      await this.runRound(++round)
    }
    // Converged: the dirty set got as small as it gets (the pause may still be scan-bound).
    this.report.convergence = {
      converged: decision.reason === 'converged' || decision.reason === 'idle' || decision.reason === 'scan-bound',
      targetMet: decision.predictedPauseMs <= limits.downtimeTargetMs,
      reason: decision.reason,
      maxThrottle: this.maxThrottle
    }
    return decision
  }

  private async runRound (round: number): Promise<void> {
    const stats = await this.rounds!.run(round, false)
    this.report.rounds.push(stats)
    // Measured: warn about a tracker the estimate did not catch (the final scan costs as much).
    const measured = measuredScanWarnings(this.areas.map(a => ({ ...a, mode: a.tracker.mode })), stats.areaScanMs ?? [], this.targetMs, this.fixedPauseMs, this.warnings)
    for (const w of measured) this.warn(w)
  }

  /**
   * Pauses the workload and runs the final round at full speed (the pause is what the workload
   * notices most), then sends the device state. From here the workload stays paused until commit
   * or abort.
   */
  private async switchover (decision: PlannerDecision): Promise<PauseTimes> {
    const { deps } = this
    this.pacer?.stop()
    this.budget.setRate(Infinity)
    const pausedAt = performance.now()
    await deps.controller.pause()
    this.paused = true
    const t0 = performance.now()
    const round = this.report.rounds.length + 1
    await this.link!.send({ type: FrameType.Pause, round })
    const fin = await this.rounds!.run(round, true)
    this.report.rounds.push(fin)
    // Every byte is acknowledged: the data lanes only carry control answers from now on.
    this.scheduler.close()
    this.lanes!.drain()
    const ts = performance.now()
    const state = await deps.controller.deviceState()
    await this.link!.send({ type: FrameType.DeviceState, state }, true)
    return { pausedAt, pauseMs: t0 - pausedAt, predictedMs: decision.predictedPauseMs, finalScanMs: fin.scanMs, finalSendMs: fin.sendMs, deviceStateMs: performance.now() - ts, verifyStartedAt: 0 }
  }

  /** VERIFY with the digests taken at pause; the destination must answer with the same ones. */
  private async verify (t: PauseTimes): Promise<void> {
    this.meter.phase('verify', this.report.rounds.length)
    t.verifyStartedAt = performance.now()
    const [memoryDigest, cacheDigest] = this.rounds!.pauseDigests as [Uint8Array, Uint8Array]
    this.report.memoryDigest = Buffer.from(memoryDigest).toString('hex')
    this.report.cacheDigest = Buffer.from(cacheDigest).toString('hex')
    let result = await this.link!.request({ type: FrameType.Verify, memoryDigest, cacheDigest }, FrameType.VerifyResult, this.attempt())
    let expected = cacheDigest
    if (result.deferred != null && this.postcopy) {
      // Post-copy: the destination left out the blocks it has not got yet. Mask ours the same
      // way and ask again: both sides then agree on every byte that is there.
      const deferred = this.deferredBlocks(result.deferred)
      expected = this.areas[Area.Cache]!.tracker.maskedDigest({ units: deferred, unitSize: this.image.cache.blockSize })
      this.report.cacheDigest = Buffer.from(expected).toString('hex')
      const n = deferred.count()
      this.report.postcopy = { deferredBlocks: n, deferredBytes: n * this.image.cache.blockSize }
      if (!Buffer.from(result.cacheDigest).equals(expected)) throw new VerificationFailedError('the cache blocks the destination holds differ from the source\'s')
      result = await this.link!.request({ type: FrameType.Verify, memoryDigest, cacheDigest: expected }, FrameType.VerifyResult, this.attempt())
    }
    const remoteOk = Buffer.from(result.memoryDigest).equals(memoryDigest) && Buffer.from(result.cacheDigest).equals(expected)
    if (!result.ok || !remoteOk) throw new VerificationFailedError()
    this.report.verified = true
  }

  /**
   * The blocks a post-copy destination says it does not hold yet. Only claimed blocks may be
   * missing: any other block was the source's to send, so a claim beyond that is refused.
   */
  private deferredBlocks (bits: Uint8Array): Bitmap {
    const blocks = this.image.cache.size / this.image.cache.blockSize
    if (bits.byteLength !== Math.ceil(blocks / 8)) throw new ProtocolError('deferred block bitmap does not match the cache')
    const out = new Bitmap(blocks)
    out.bits.set(bits)
    for (const r of out.runs()) for (let i = r.start; i < r.start + r.count; i++) if (this.claim?.get(i) !== true) throw new ProtocolError(`the destination defers block ${i}, which it did not claim`)
    return out
  }

  /** Post-copy: from here this node serves the cache's clean blocks to the destination. */
  private async keepCache (): Promise<void> {
    const { deps } = this
    if (!this.postcopy || deps.keepCache == null || this.claim == null || deps.cacheManifest == null) return
    // Nothing deferred: the destination holds the whole cache, verified; nothing to keep.
    if ((this.report.postcopy?.deferredBlocks ?? 0) === 0) return
    this.dropKept = await deps.keepCache({
      sessionId: this.sessionId, volume: deps.cacheManifest.volume, blockSize: this.image.cache.blockSize, hashes: deps.cacheManifest.hashes, servable: this.claim
    })
  }

  private attempt (): { attemptMs: number, totalMs: number, signal?: AbortSignal } {
    return { attemptMs: this.options.controlAttemptMs ?? DEFAULT_CONTROL_ATTEMPT_MS, totalMs: this.options.commitTimeoutMs ?? DEFAULT_COMMIT_TIMEOUT_MS, signal: this.options.signal }
  }

  /**
   * COMMIT → COMMITTED: the destination runs the workload; the source stops its own. An explicit
   * refusal aborts as usual; a lost answer leaves the source paused (ERR_COMMIT_UNKNOWN).
   */
  private async commit (t: PauseTimes): Promise<void> {
    const tv = t.verifyStartedAt
    this.meter.phase('commit', this.report.rounds.length)
    const tc = performance.now()
    this.commitSent = true
    try {
      await this.link!.request({ type: FrameType.Commit }, FrameType.Committed, { ...this.attempt(), signal: undefined })
    } catch (err) {
      if (err instanceof RemoteAbortError) { this.commitSent = false; throw err }
      throw new CommitUnknownError(`commit not acknowledged: ${(err as Error).message}; source kept paused with its image intact`)
    }
    const resumedAt = performance.now()
    const report = this.report
    report.downtimeMs = resumedAt - t.pausedAt
    report.downtime = { pauseMs: t.pauseMs, finalScanMs: t.finalScanMs, finalSendMs: t.finalSendMs, deviceStateMs: t.deviceStateMs, verifyMs: tc - tv, commitMs: resumedAt - tc }
    const judged = judgePause({
      targetMs: this.targetMs,
      predictedMs: t.predictedMs,
      fixedMs: this.fixedPauseMs,
      parts: {
        pause: t.pauseMs,
        'final-scan': t.finalScanMs,
        'final-send': Math.max(0, t.finalSendMs - t.finalScanMs),
        'device-state': t.deviceStateMs,
        verify: tc - tv,
        commit: resumedAt - tc
      }
    })
    report.pause = judged.verdict
    if (judged.warning != null) this.warn(judged.warning)
    report.ok = true
    await this.deps.controller.stop()
    this.meter.phase('done', report.rounds.length)
  }

  /** Any failure before COMMIT: tell the destination, lift the throttle, resume a paused workload. */
  private async abort (err: unknown): Promise<void> {
    const { report, deps } = this
    report.error = { code: errorCode(err), message: err instanceof Error ? err.message : String(err) }
    if (!this.commitSent) {
      const abort = { type: FrameType.Abort, code: errorCode(err), message: report.error.message } as const
      await (this.link != null ? this.link.send(abort) : this.control.send(abort)).catch(() => {})
      if (this.throttle > 0) await deps.controller.throttle?.(0).catch(() => {})
      if (this.paused) {
        await deps.controller.resume()
        report.sourceResumed = true
      }
      await this.dropKept?.().catch(() => {})
    }
    this.meter.phase('aborted', report.rounds.length)
  }

  /** Releases lanes, the control lane, trackers, timers; completes the report. */
  private async cleanup (): Promise<void> {
    const { report } = this
    this.options.signal?.removeEventListener('abort', this.onAbortSignal)
    this.scheduler.close()
    this.meter.stop()
    await this.lanes?.close()
    await this.deps.control.close().catch(() => {})
    for (const a of this.areas) await a.tracker.close().catch(() => {})
    this.pacer?.stop()
    if (this.pacer != null) report.pacing = this.pacer.report
    report.lanes = this.lanes?.stats().map(s => ({ ...s })) ?? []
    if (report.cache != null) report.cache.sourceBlocks = report.rounds.reduce((a, r) => a + r.blocks, 0)
    if (this.link != null && this.link.switches.length > 0) report.controlMoves = [...this.link.switches]
    report.totalMs = performance.now() - this.started
  }
}

/** Timings of the pause's first parts, taken by {@link SourceSession.switchover}. */
interface PauseTimes {
  pausedAt: number
  pauseMs: number
  predictedMs: number
  finalScanMs: number
  finalSendMs: number
  deviceStateMs: number
  verifyStartedAt: number
}
