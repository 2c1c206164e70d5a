import { writeSync } from 'node:fs'
import { open } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { DEFAULT_CONTROL_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS } from '../constants.js'
import { storageFailure, isSystemError } from '../storage-failure.js'
import { errorCode, InvalidFrameError, LaneClosedError, PeerGoneError, ProtocolError, RemoteAbortError, ShoalError, TimeoutError } from '../errors.js'
import type { WorkerPool } from '../tracker/worker-pool.js'
import { isOffThreadLane } from '../transport/lane.js'
import type { DataSink, Lane } from '../transport/lane.js'
import { RegionDigests } from '../verify/region-digests.js'
import { Bitmap } from '../bitmap.js'
import { CacheFetch } from '../volume/cache-fetch.js'
import type { CacheFetchStats, CacheSources, CacheSourcesRequest } from '../volume/cache-fetch.js'
import { hashListDigest, ManifestAssembler } from '../volume/cache-manifest.js'
import type { CacheManifest } from '../volume/cache-manifest.js'
import type { CacheMetaInit } from '../volume/cache-meta.js'
import { PostCopyCache } from '../volume/postcopy-cache.js'
import { decodeFrame, encodeFrame } from '../wire/codec.js'
import type { DataHeader } from '../wire/codec.js'
import { Area, FrameType } from '../wire/frames.js'
import type { DataFrame, Frame, HelloFrame, LaneHelloFrame } from '../wire/frames.js'
import { ControlChannel } from './control-channel.js'

/** Control frames a source may send on any lane once the session is accepted. */
const CONTROL_REQUESTS = new Set([FrameType.RoundEnd, FrameType.Pause, FrameType.DeviceState, FrameType.Verify, FrameType.Commit, FrameType.Abort, FrameType.CacheManifest])

/** How long a committed destination keeps answering a repeated COMMIT. */
const COMMIT_LINGER_MS = 5000

/** How often the destination reports its cache fetch to the source. */
const CACHE_STATUS_MS = 500

/** Data frames of one lane being written at once. */
const WRITES_PER_LANE = 4

/** Where the destination's node keeps an incoming image, and how it takes it over. */
export interface DestinationHooks {
  /**
   * Called with a validated hello. Creates zero-filled staging files of the announced sizes and
   * returns their paths. Throw a {@link ShoalError} to refuse (its code goes back to the source).
   */
  prepare: (hello: HelloFrame) => Promise<{ memoryPath: string, cachePath: string }>
  /** Called once the session id is known, before ACCEPT is sent (so data lanes can find it). */
  register?: (sessionId: string) => void
  /**
   * The copy is verified and the source asked to commit: move it in place and start the
   * workload. `cache` is the cache's metadata when it caches a volume (to keep beside it).
   * `postcopy`, in a post-copy migration: the cache's missing blocks, still streaming; the node
   * owns it from here (the workload's reads of missing blocks go through it) and must stop it.
   */
  commit: (deviceState: Uint8Array, cache?: CacheMetaInit, postcopy?: PostCopyCache) => Promise<void>
  /**
   * Finds where clean cache blocks of a volume can come from besides the source (replicas, this
   * node's own stores). Without it, or when it fails, the source sends every block.
   */
  cacheSources?: (req: CacheSourcesRequest) => Promise<CacheSources>
  /**
   * Where this node takes data lanes on its data workers (`host:port`), sent in the ACCEPT so
   * that the source opens its data lanes there; none (or no hook) means on the control lane's transport.
   */
  dataEndpoints?: () => string[]
  /** Removes whatever `prepare` created. Called on every failure before commit. */
  discard: () => Promise<void>
}

/** How a destination session ended. */
export interface DestinationResult {
  image: string
  committed: boolean
  /** Payload bytes written. */
  bytes: number
  /** Data frames dropped as stale duplicates of acknowledged chunks. */
  staleFrames: number
  /** Cache blocks fetched elsewhere (replicas, dedup), for a cache that caches a volume. */
  cache?: CacheFetchStats
  error?: { code: string, message: string }
}

/** Options of {@link DestinationSession}. */
export interface DestinationSessionOptions {
  /** How long to wait for the hello. */
  helloTimeoutMs?: number
  /** Give up when no frame arrives from the source for this long. */
  idleTimeoutMs?: number
  signal?: AbortSignal
}

/** Reads the LANE_HELLO that opens a data lane; returns it and the iterator positioned after it. */
export async function readLaneHello (lane: Lane, timeoutMs = DEFAULT_CONTROL_TIMEOUT_MS): Promise<{ hello: LaneHelloFrame, frames: AsyncIterator<Uint8Array> }> {
  const frames = lane[Symbol.asyncIterator]()
  let timer: NodeJS.Timeout | undefined
  const first = await Promise.race([
    frames.next(),
    new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new LaneClosedError('no lane hello')) }, timeoutMs) })
  ]).finally(() => { clearTimeout(timer) })
  if (first.done === true) throw new LaneClosedError('lane closed before its hello')
  const f = decodeFrame(first.value)
  if (f.type !== FrameType.LaneHello) throw new ProtocolError(`expected LaneHello, got ${FrameType[f.type]}`)
  return { hello: f, frames }
}

/** A failed write into a staging file. A full disk is not a broken lane: it ends the session, named, on both sides. */
function writeFailure (err: Error, area: Area, path: string): ShoalError {
  return storageFailure(err, `the incoming ${Area[area].toLowerCase()} ${path}`)
}

/** One staging file of the session, by area. */
interface StagingFile { fh: FileHandle, path: string, unitSize: number, units: number, digests: RegionDigests }

/**
 * The receiving side of a migration: validates every frame before writing, writes pages and
 * blocks into staging files, acknowledges chunks, verifies digests, and commits or discards.
 */
export class DestinationSession {
  private hello?: HelloFrame
  private files: Array<StagingFile | undefined> = []
  private currentRound = 0
  private readonly pendingWrites = new Set<Promise<unknown>>()
  /** Frames admitted and being written (here or by a data worker), by ticket. */
  private readonly admitted = new Map<number, { file: StagingFile, header: DataHeader, bytes: number, done: () => void }>()
  private nextTicket = 1
  private readonly result: DestinationResult = { image: '', committed: false, bytes: 0, staleFrames: 0 }
  private readonly control: ControlChannel
  private failure?: Error
  private readonly inbox: Array<{ frame: Frame, lane: Lane }> = []
  private inboxWaiter?: () => void
  private controlGone = false
  private lastActivity = performance.now()
  private idleTimer?: NodeJS.Timeout
  private readonly failed: { promise: Promise<ShoalError>, resolve: (e: ShoalError) => void } = (() => {
    let resolve!: (e: ShoalError) => void
    const promise = new Promise<ShoalError>(r => { resolve = r })
    return { promise, resolve }
  })()
  private readonly lanes = new Set<Lane>()
  private manifest?: CacheManifest
  private cacheFetch?: CacheFetch
  private cacheFetchDone?: Promise<void>
  private readonly cacheAbort = new AbortController()
  /** Cache blocks the source sent after its first round (written during the migration). */
  private lateBlocks?: Bitmap
  /** Post-copy: the switchover leaves claimed blocks to stream in afterwards. */
  private postcopy = false
  /** Post-copy with prefetch: the bulk stream is not held until the switchover. */
  private prefetch = false
  /** Post-copy: the fetch's own handle of the cache file (it outlives the session's). */
  private postcopyFile?: FileHandle
  /** Post-copy: what verification found missing, and the masked digest (computed once, writes held). */
  private deferred?: { mask: Bitmap, cacheDigest: Uint8Array, release: () => void }
  /** Post-copy: handed to the node at COMMIT (the session no longer stops the fetch). */
  private handedOff?: PostCopyCache
  private cacheFetchRun?: Promise<CacheFetchStats>
  private ticker?: NodeJS.Timeout

  constructor (controlLane: Lane, private readonly deps: { pool: WorkerPool, hooks: DestinationHooks }, private readonly options: DestinationSessionOptions = {}) {
    this.control = new ControlChannel(controlLane)
  }

  /** The hello of the session, once received. */
  get helloFrame (): HelloFrame | undefined { return this.hello }

  /** Attaches a data lane whose LANE_HELLO named this session; `onEnd` is called when it is gone. */
  addLane (lane: Lane, frames: AsyncIterator<Uint8Array>, onEnd?: () => void): void {
    this.lanes.add(lane)
    void this.dataLoop(lane, frames).finally(() => {
      onEnd?.()
      this.lanes.delete(lane)
      this.checkLanes()
    })
  }

  /** Runs the session to its end; never throws (the result carries the error). */
  async run (): Promise<DestinationResult> {
    let prepared = false
    // A stopping node ends its sessions that have not started to commit (the source resumes);
    // one that is committing finishes (the source waits for its COMMITTED).
    let committing = false
    const stop = (): void => {
      if (committing) return
      const reason: unknown = this.options.signal?.reason
      this.fail(reason instanceof ShoalError ? reason : new PeerGoneError('the node is stopping'))
    }
    this.options.signal?.addEventListener('abort', stop, { once: true })
    try {
      const hello = await this.control.expect(FrameType.Hello, this.options.helloTimeoutMs ?? DEFAULT_CONTROL_TIMEOUT_MS, this.options.signal)
      this.hello = hello
      this.result.image = hello.image
      if (this.options.signal?.aborted === true) stop()
      prepared = true
      const paths = await this.deps.hooks.prepare(hello)
      const { pool } = this.deps
      this.files[Area.Memory] = { fh: await open(paths.memoryPath, 'r+'), path: paths.memoryPath, unitSize: hello.pageSize, units: hello.memorySize / hello.pageSize, digests: new RegionDigests(pool, paths.memoryPath, hello.memorySize) }
      this.files[Area.Cache] = { fh: await open(paths.cachePath, 'r+'), path: paths.cachePath, unitSize: hello.blockSize, units: hello.cacheSize / hello.blockSize, digests: new RegionDigests(pool, paths.cachePath, hello.cacheSize) }
      for (const f of this.files) f?.digests.start()
      this.deps.hooks.register?.(Buffer.from(hello.sessionId).toString('hex'))
      const dataEndpoints = this.deps.hooks.dataEndpoints?.()
      await this.control.send({ type: FrameType.Accept, sessionId: hello.sessionId, ...(dataEndpoints != null && dataEndpoints.length > 0 ? { dataEndpoints } : {}) })
      this.watchControlLane()
      let deviceState: Uint8Array | undefined
      let verified = false
      let manifest: ManifestAssembler | undefined
      // Control frames may arrive on the control lane or on any data lane (the source moves
      // when a path dies); answers go back on the lane the request came in on, and repeated
      // requests are answered again.
      while (true) {
        const { frame: f, lane } = await this.nextControl()
        switch (f.type) {
          case FrameType.RoundEnd:
          case FrameType.Pause:
            break
          case FrameType.DeviceState:
            deviceState = f.state.slice()
            break
          case FrameType.CacheManifest: {
            if (this.manifest != null) throw new ProtocolError('a second cache manifest')
            manifest ??= new ManifestAssembler(hello.cacheSize / hello.blockSize)
            if (f.start === 0) { this.postcopy = f.postcopy === true; this.prefetch = f.prefetch === true } else if ((f.postcopy === true) !== this.postcopy || (f.prefetch === true) !== this.prefetch) throw new ProtocolError('cache manifest frames disagree on post-copy')
            const m = manifest.add(f)
            if (m != null) await this.answer(lane, { type: FrameType.CacheClaim, claimed: (await this.startCacheFetch(m)).bits })
            break
          }
          case FrameType.Verify: {
            if (this.postcopy && this.cacheFetch != null) {
              // Post-copy: blocks still missing are left out of the cache digest (each comes later,
              // checked against its hash); the source checks the rest with the same mask.
              await this.freeze()
              const d = this.deferred ??= await this.maskedDigests()
              const m = await this.files[Area.Memory]!.digests.digest(this.options.signal)
              verified = Buffer.from(m).equals(f.memoryDigest) && Buffer.from(d.cacheDigest).equals(f.cacheDigest)
              await this.answer(lane, { type: FrameType.VerifyResult, ok: verified, memoryDigest: m, cacheDigest: d.cacheDigest, deferred: d.mask.bits })
              break
            }
            // The source verifies only after our fetch ended; a source that does not is waited for.
            await this.cacheFetchDone
            await this.freeze()
            const [m, c] = await Promise.all(this.files.map(async f => await f!.digests.digest(this.options.signal))) as [Uint8Array, Uint8Array]
            verified = Buffer.from(m).equals(f.memoryDigest) && Buffer.from(c).equals(f.cacheDigest)
            await this.answer(lane, { type: FrameType.VerifyResult, ok: verified, memoryDigest: m, cacheDigest: c })
            break
          }
          case FrameType.Commit: {
            if (!verified) throw new ProtocolError('commit before a successful verification')
            if (deviceState == null) throw new ProtocolError('commit without device state')
            committing = true
            await this.closeFiles()
            // From here the missing blocks may land again (the workload's reads will need them).
            this.deferred?.release()
            const postcopy = this.postcopyHandoff()
            await this.deps.hooks.commit(deviceState, this.cacheMetaAfter(hello.blockSize), postcopy)
            this.handedOff = postcopy
            this.result.committed = true
            await this.answer(lane, { type: FrameType.Committed })
            await this.lingerAfterCommit()
            return this.result
          }
          case FrameType.Abort:
            throw new RemoteAbortError(f.code, f.message)
          default:
            throw new ProtocolError(`unexpected ${FrameType[f.type]} as a control frame`)
        }
      }
    } catch (caught) {
      // A local file failure (a full disk at commit) is reported as what it is, to both sides.
      const err = this.failure ?? (isSystemError(caught) ? storageFailure(caught, `the incoming image ${this.result.image}`) : caught)
      this.result.error = { code: errorCode(err), message: err instanceof Error ? err.message : String(err) }
      // Tell the source why (unless it told us), so both sides report the same cause.
      if (!(err instanceof RemoteAbortError)) {
        // On every lane: the control lane may be the one that died.
        const abort = encodeFrame({ type: FrameType.Abort, code: this.result.error.code, message: this.result.error.message })
        await Promise.all([this.control.lane, ...this.lanes].map(async l => { await l.send(abort).catch(() => {}) }))
      }
      return this.result
    } finally {
      this.options.signal?.removeEventListener('abort', stop)
      clearInterval(this.idleTimer)
      this.deferred?.release()
      if (this.handedOff == null) {
        this.cacheAbort.abort()
        await this.cacheFetchDone?.catch(() => {})
        await this.postcopyFile?.close().catch(() => {})
      }
      for (const l of this.lanes) {
        if (this.result.committed) await l.close().catch(() => {})
        else l.abort()
      }
      await this.freeze().catch(() => {})
      await this.closeFiles()
      if (!this.result.committed && prepared) await this.deps.hooks.discard().catch(() => {})
      await this.control.lane.close().catch(() => {})
    }
  }

  /**
   * Decides which clean cache blocks to get elsewhere and starts fetching them in the background;
   * returns the claim. Progress goes to the source every half second, the end on every lane.
   */
  private async startCacheFetch (m: CacheManifest): Promise<Bitmap> {
    this.manifest = m
    const blockSize = this.hello!.blockSize
    const blockCount = m.hashes.byteLength / 32
    this.lateBlocks = new Bitmap(blockCount)
    let sources: CacheSources = { sources: [], close: async () => {} }
    const find = this.deps.hooks.cacheSources
    if (find != null) {
      try {
        sources = await find({ volume: m.volume, blockSize, blockCount, hashesDigest: hashListDigest(m.hashes), signal: this.cacheAbort.signal })
      } catch {
        // No replicas to be found: the source sends every block.
      }
    }
    const file = this.files[Area.Cache]!
    // Post-copy: the fetch goes on after the session closed its files, on a handle of its own.
    if (this.postcopy) this.postcopyFile = await open(file.path, 'r+')
    const fetch = new CacheFetch({
      volume: m.volume, blockSize, hashes: m.hashes, dirty: m.dirty, hot: m.hot, file: this.postcopyFile ?? file.fh, sources,
      touch: (from, to) => { file.digests.touch(from, to) },
      ...(this.postcopy ? { postcopy: true, holdBulk: !this.prefetch } : {})
    })
    this.cacheFetch = fetch
    const claimed = fetch.claim()
    const status = (done: boolean, need: Uint8Array, stats: CacheFetchStats): Uint8Array[] => {
      this.result.cache = stats
      return encodeFrame({ type: FrameType.CacheStatus, done, need, stats: JSON.stringify(stats) })
    }
    const ticker = this.ticker = setInterval(() => { void this.control.lane.send(status(false, new Uint8Array(0), fetch.snapshot())).catch(() => {}) }, CACHE_STATUS_MS)
    const run = fetch.run({ signal: this.cacheAbort.signal })
    this.cacheFetchRun = run.then(r => r.stats)
    this.cacheFetchRun.catch(() => {})
    this.cacheFetchDone = (async () => {
      try {
        const { stats, need } = await run
        clearInterval(ticker)
        // On every lane: whichever path still works carries it; the source takes the first.
        const frame = status(true, need.bits, stats)
        await Promise.all([this.control.lane, ...this.lanes].map(async l => { await l.send(frame).catch(() => {}) }))
      } catch (err) {
        if (!this.cacheAbort.signal.aborted) {
          this.fail(err instanceof ShoalError ? err : isSystemError(err) ? storageFailure(err, `the incoming cache ${file.path}`) : new ProtocolError(`cache fetch failed: ${(err as Error).message}`))
        }
      } finally {
        clearInterval(ticker)
        await sources.close().catch(() => {})
      }
    })()
    return claimed
  }

  /** Post-copy: holds the fetch's writes and digests the cache with the blocks still missing masked. */
  private async maskedDigests (): Promise<{ mask: Bitmap, cacheDigest: Uint8Array, release: () => void }> {
    const release = await this.cacheFetch!.freeze()
    try {
      const mask = this.cacheFetch!.missing()
      const cacheDigest = await this.files[Area.Cache]!.digests.digest(this.options.signal, { units: mask, unitSize: this.hello!.blockSize })
      return { mask, cacheDigest, release }
    } catch (err) {
      release()
      throw err
    }
  }

  /** Post-copy: the fetch, still running, as the node's from now on (undefined in pre-copy). */
  private postcopyHandoff (): PostCopyCache | undefined {
    const fetch = this.cacheFetch
    const run = this.cacheFetchRun
    const m = this.manifest
    if (!this.postcopy || fetch == null || run == null || m == null) return undefined
    // Everything arrived before the switchover: nothing streams afterwards, no fault path.
    if (this.deferred != null && this.deferred.mask.count() === 0) return undefined
    clearInterval(this.ticker)
    // Resume first, stream after: the bulk stream was held for the memory rounds.
    fetch.releaseBulk()
    const file = this.postcopyFile
    return new PostCopyCache({
      fetch, run, abort: this.cacheAbort, volume: m.volume, blockSize: this.hello!.blockSize, hashes: m.hashes, sessionId: this.hello!.sessionId,
      close: async () => { await file?.close() }
    })
  }

  /** The cache's metadata after the migration: the source's, plus blocks written meanwhile as dirty. */
  private cacheMetaAfter (blockSize: number): CacheMetaInit | undefined {
    const m = this.manifest
    if (m == null) return undefined
    const dirty = new Bitmap(m.dirty.size)
    dirty.or(m.dirty)
    if (this.lateBlocks != null) dirty.or(this.lateBlocks)
    return { volume: m.volume, blockSize, hashes: m.hashes, dirty, hot: m.hot }
  }

  /** Stops accepting data and waits for writes in progress. */
  private async freeze (): Promise<void> {
    this.currentRound = Number.MAX_SAFE_INTEGER
    await Promise.allSettled([...this.pendingWrites])
  }

  private async closeFiles (): Promise<void> {
    const files = this.files
    this.files = []
    for (const f of files) {
      f?.digests.stop()
      await f?.fh.close().catch(() => {})
    }
  }

  private async dataLoop (lane: Lane, frames: AsyncIterator<Uint8Array>): Promise<void> {
    // Writes of one lane overlap (up to WRITES_PER_LANE) so the lane keeps reading while the disk
    // works; units of one round are disjoint, and the round barrier in write() orders rounds.
    const inFlight = new Set<Promise<void>>()
    const onError = (err: unknown): void => {
      // A lane that merely breaks is the source's to replace. A bad frame or a failed write ends
      // the session: its ABORT goes out on this lane at once (and on every lane when the session
      // ends) — resetting the lane first would show the source a lost lane instead of the cause.
      if (err instanceof ShoalError && !(err instanceof LaneClosedError)) {
        void lane.send(encodeFrame({ type: FrameType.Abort, code: err.code, message: err.message })).catch(() => {})
        this.fail(err)
        return
      }
      lane.abort(err instanceof Error ? err : undefined)
    }
    // A data worker owns this lane's connection: it writes the payloads, we decide and acknowledge.
    if (isOffThreadLane(lane)) lane.sinkData(this.sinkFor(lane, onError))
    try {
      while (true) {
        const r = await frames.next()
        if (r.done === true) break
        const f = decodeFrame(r.value)
        this.lastActivity = performance.now()
        if (CONTROL_REQUESTS.has(f.type)) { this.pushControl(f, lane); continue }
        if (f.type !== FrameType.Data) throw new ProtocolError(`unexpected ${FrameType[f.type]} on a data lane`)
        const p: Promise<void> = this.write(f)
          .then(async (written) => { if (written) await lane.send(encodeFrame({ type: FrameType.Ack, chunkIds: [f.chunkId] })) })
          .catch(onError)
          .finally(() => { inFlight.delete(p) })
        inFlight.add(p)
        if (inFlight.size >= WRITES_PER_LANE) await Promise.race(inFlight)
      }
      await Promise.all(inFlight)
    } catch (err) {
      onError(err)
    }
  }

  /** Queues a control frame that arrived on `lane`. */
  private pushControl (frame: Frame, lane: Lane): void {
    this.inbox.push({ frame, lane })
    const w = this.inboxWaiter
    this.inboxWaiter = undefined
    w?.()
  }

  /** The next control frame from any lane; throws when the session failed. */
  private async nextControl (): Promise<{ frame: Frame, lane: Lane }> {
    while (true) {
      if (this.failure != null) throw this.failure
      const next = this.inbox.shift()
      if (next != null) return next
      await Promise.race([new Promise<void>(resolve => { this.inboxWaiter = resolve }), this.failed.promise])
    }
  }

  /** Answers on the lane the request came in on; if that fails, the source will ask elsewhere. */
  private async answer (lane: Lane, frame: Frame): Promise<void> {
    await lane.send(encodeFrame(frame)).catch(() => {})
  }

  /**
   * Reads the control lane into the inbox. Its loss is not fatal while data lanes remain; the
   * session ends when no lane is left, or when the source stays silent too long.
   */
  private watchControlLane (): void {
    const lane = this.control.lane
    void (async () => {
      try {
        for (let f = await this.control.nextRaw(); f != null; f = await this.control.nextRaw()) {
          this.lastActivity = performance.now()
          this.pushControl(f, lane)
        }
      } catch {}
      this.controlGone = true
      this.checkLanes()
    })()
    const idleMs = this.options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS
    this.idleTimer = setInterval(() => {
      if (performance.now() - this.lastActivity > idleMs) this.fail(new TimeoutError(`no frame from the source for ${idleMs} ms`))
    }, Math.min(1000, idleMs))
    this.idleTimer.unref()
  }

  private checkLanes (): void {
    if (this.controlGone && this.lanes.size === 0 && !this.result.committed) {
      this.fail(new LaneClosedError('every lane to the source is gone'))
    }
  }

  /**
   * After COMMITTED, keep answering a repeated COMMIT for a while: if our answer was lost, the
   * source asks again on another lane instead of staying paused. Ends when the source closes.
   */
  private async lingerAfterCommit (): Promise<void> {
    const until = performance.now() + COMMIT_LINGER_MS
    while (performance.now() < until && !(this.controlGone && this.lanes.size === 0) && this.failure == null) {
      let timer: NodeJS.Timeout | undefined
      const got = await Promise.race([
        this.nextControl().catch(() => undefined),
        new Promise<undefined>(resolve => { timer = setTimeout(() => { resolve(undefined) }, 200) })
      ]).finally(() => { clearTimeout(timer) })
      if (got?.frame.type === FrameType.Commit) await this.answer(got.lane, { type: FrameType.Committed })
    }
  }

  /** Ends the session with `err` (the control loop wakes up and reports it). */
  private fail (err: ShoalError): void {
    if (this.failure != null) return
    this.failure = err
    this.failed.resolve(err)
  }

  /**
   * Validates and writes one data frame (see {@link DestinationSession.admit}). Memory is staged on
   * tmpfs, where a write is a memory copy: written synchronously, a frame of scattered pages costs
   * microseconds instead of a thread-pool round trip per page.
   */
  private async write (f: DataFrame): Promise<boolean> {
    const ticket = await this.admit(f, f.payload.byteLength)
    if (ticket == null) return false
    const { file } = this.admitted.get(ticket)!
    let error: Error | undefined
    try {
      let off = 0
      for (const r of f.runs) {
        const len = r.count * file.unitSize
        let done = 0
        while (done < len) {
          done += f.area === Area.Memory
            ? writeSync(file.fh.fd, f.payload, off + done, len - done, r.start * file.unitSize + done)
            : (await file.fh.write(f.payload, off + done, len - done, r.start * file.unitSize + done)).bytesWritten
        }
        off += len
      }
    } catch (err) {
      error = err as Error
    }
    this.written(ticket, error)
    if (error != null) throw writeFailure(error, f.area, file.path)
    return true
  }

  /**
   * Decides about a data frame before its payload is written (here or by a data worker): checks
   * it against the image, and returns a ticket, or undefined for a stale duplicate. Rounds are
   * barriers: every chunk of round k is acknowledged before round k+1 starts, so a round-k frame
   * seen after a later round began is a duplicate re-sent over a failed lane and is dropped; and
   * writes of a new round wait for the older round's writes, so an old duplicate can never land
   * over newer bytes. The write must be reported to {@link DestinationSession.written}.
   */
  private async admit (f: DataHeader, payloadBytes: number): Promise<number | undefined> {
    const file = this.files[f.area]
    if (this.hello == null || file == null) throw new ProtocolError('data before the session was accepted')
    let units = 0
    for (const r of f.runs) {
      if (r.start + r.count > file.units) throw new InvalidFrameError(`run ${r.start}+${r.count} beyond ${Area[f.area]} (${file.units} units)`)
      units += r.count
    }
    if (payloadBytes !== units * file.unitSize) throw new InvalidFrameError(`payload of ${payloadBytes} bytes, runs need ${units * file.unitSize}`)
    if (f.round < this.currentRound) { this.result.staleFrames++; return undefined }
    if (f.round > this.currentRound) {
      await Promise.allSettled([...this.pendingWrites])
      if (f.round < this.currentRound) { this.result.staleFrames++; return undefined }
      this.currentRound = f.round
    }
    if (f.area === Area.Cache && this.cacheFetch != null) {
      // The source's bytes win over a replica's copy of the same block.
      for (const r of f.runs) {
        await this.cacheFetch.yieldTo(r.start, r.start + r.count)
        if (f.round > 1) for (let i = r.start; i < r.start + r.count; i++) this.lateBlocks?.set(i)
      }
    }
    if (this.failure != null) throw this.failure
    for (const r of f.runs) file.digests.touch(r.start * file.unitSize, (r.start + r.count) * file.unitSize)
    let done!: () => void
    const pending = new Promise<void>(resolve => { done = resolve })
    const ticket = this.nextTicket++
    this.admitted.set(ticket, { file, header: f, bytes: payloadBytes, done })
    this.pendingWrites.add(pending)
    void pending.then(() => { this.pendingWrites.delete(pending) })
    return ticket
  }

  /** The decisions a data worker asks for before it writes the frames of `lane`. */
  private sinkFor (lane: Lane, onError: (err: unknown) => void): DataSink {
    return {
      files: this.files.map(f => f == null ? undefined : { path: f.path, unitSize: f.unitSize, units: f.units }),
      admit: async (header, payloadBytes) => {
        this.lastActivity = performance.now()
        try {
          return await this.admit(header, payloadBytes)
        } catch (err) {
          onError(err)
          return undefined
        }
      },
      written: (ticket, error) => {
        const a = this.admitted.get(ticket)
        if (a == null) return
        this.written(ticket, error)
        if (error != null) { onError(writeFailure(error, a.header.area, a.file.path)); return }
        lane.send(encodeFrame({ type: FrameType.Ack, chunkIds: [a.header.chunkId] })).catch(onError)
      },
      abandon: (ticket) => { this.written(ticket, new LaneClosedError('lane lost before the write')) }
    }
  }

  /** The write of admitted frame `ticket` ended (`error` if it failed). */
  private written (ticket: number, error?: Error): void {
    const a = this.admitted.get(ticket)
    if (a == null) return
    this.admitted.delete(ticket)
    // Touched again: a digest pass that ran during the write may have hashed a half-written region.
    for (const r of a.header.runs) a.file.digests.touch(r.start * a.file.unitSize, (r.start + r.count) * a.file.unitSize)
    if (error == null) this.result.bytes += a.bytes
    a.done()
  }
}
