import { Worker } from 'node:worker_threads'
import { generateCertificate } from '@libp2p/tls/utils'
import type { PrivateKey } from '@libp2p/interface'
import { fromErrorInfo, LaneClosedError, MAX_FRAME_SIZE, ShoalError } from '@shoal/core'
import type { DataHeader, DataSink, LoadPlan, OffThreadLane } from '@shoal/core'
import { formatEndpoint } from './endpoint.js'
import type { FromWorker, ToWorker } from './protocol.js'

/** How long a data lane's TLS handshake (and identity check) may take. */
const HANDSHAKE_TIMEOUT_MS = 10_000
/** Bytes a lane's reader reports as read at once (and whenever its inbox runs empty). */
const CONSUMED_BATCH = 256 * 1024
/** Incoming data lanes one peer may hold open at once (16 per migration, 2 migrations, slack). */
const DEFAULT_MAX_LANES_PER_PEER = 64
/** Wait before a worker that died is started again. */
const RESPAWN_DELAY_MS = 500

/** Options of {@link createDataPlane}. */
export interface DataPlaneInit {
  /** Data worker threads (at least 1). */
  workers: number
  /** The node's identity: data lanes authenticate with it (libp2p's TLS certificate scheme). */
  privateKey: PrivateKey
  /** Addresses to take data lanes on (IPs; `0.0.0.0` or `::` for all). */
  listen: string[]
  /**
   * A data lane was accepted and its peer proved it holds `peerId`'s key. Abort the lane to
   * refuse it (peer not allowed, too many lanes).
   */
  onLane: (lane: OffThreadLane, info: { peerId: string }) => void
  /**
   * Lanes one peer may hold open here at once, over all workers (default 64): what an
   * authenticated peer can make this node buffer before its lanes join a session is bounded by it.
   */
  maxLanesPerPeer?: number
  /** Largest frame a lane accepts (default core's MAX_FRAME_SIZE); a larger one fails the lane. */
  maxFrameSize?: number
  /**
   * DATA frames wait in the worker for the session's sink (`OffThreadLane.sinkData`), so their
   * payload never reaches the session's thread (default true). With false, a lane without a sink
   * hands every frame to its reader, as any other Lane does.
   */
  holdData?: boolean
  /** Told when a worker died (it is started again). */
  onWorkerExit?: (index: number, error: Error) => void
}

/** Where one data worker takes lanes. */
export interface DataListener { worker: number, host: string, port: number }

/** Options of {@link DataPlane.dial}. */
export interface DataDialOptions {
  /** The peer that must answer (its libp2p peer ID). */
  peer: string
  host: string
  port: number
  /** Source address (the NIC the lane leaves through). */
  localAddress?: string
  /** Which worker owns the lane (default: spread over the workers). */
  worker?: number
  timeoutMs?: number
  signal?: AbortSignal
}

/**
 * A node's data workers: threads that each own data lanes' TLS connections and move their
 * payload between sockets and image files themselves. Lanes are authenticated with the node's
 * libp2p identity (the libp2p TLS certificate: the peer ID is proven, as on libp2p connections).
 */
export interface DataPlane {
  readonly size: number
  /** Where the workers take lanes now (a worker started again listens on new ports). */
  listening: () => DataListener[]
  /** The same as `host:port` endpoints, the form ACCEPT and VOLUME_SUMMARY carry. */
  endpoints: () => string[]
  /** Opens a data lane to a peer's data worker at `host:port`. */
  dial: (opts: DataDialOptions) => Promise<OffThreadLane>
  /** Ends worker `index` at once, as a crash would: its lanes break, and it is started again. */
  terminateWorker: (index: number) => Promise<void>
  /** Stops every worker; their lanes break. */
  stop: () => Promise<void>
}

/** Starts `init.workers` data workers listening on `init.listen`. */
export async function createDataPlane (init: DataPlaneInit): Promise<DataPlane> {
  if (!Number.isInteger(init.workers) || init.workers < 1) throw new RangeError('a data plane needs at least one worker')
  const identity = await generateCertificate(init.privateKey)
  const handles: WorkerHandle[] = []
  let stopped = false
  let nextLane = 1
  let nextWorker = 0

  // Incoming lanes per peer, over all workers.
  const perPeer = new Map<string, number>()
  const maxPerPeer = init.maxLanesPerPeer ?? DEFAULT_MAX_LANES_PER_PEER
  const onLane = (lane: WorkerLane, info: { peerId: string }): void => {
    const n = perPeer.get(info.peerId) ?? 0
    if (n >= maxPerPeer) { lane.abort(new LaneClosedError(`peer ${info.peerId} holds ${n} data lanes here already`)); return }
    perPeer.set(info.peerId, n + 1)
    lane.onEnd = () => {
      const left = (perPeer.get(info.peerId) ?? 1) - 1
      if (left > 0) perPeer.set(info.peerId, left)
      else perPeer.delete(info.peerId)
    }
    init.onLane(lane, info)
  }

  const start = async (index: number): Promise<WorkerHandle> => {
    const h = new WorkerHandle(index, onLane)
    handles[index] = h
    h.worker.on('exit', (code) => {
      const err = new LaneClosedError(`data worker ${index} stopped (exit code ${code})`)
      h.exited(err)
      if (stopped) return
      init.onWorkerExit?.(index, err)
      setTimeout(() => { if (!stopped) start(index).catch(() => {}) }, RESPAWN_DELAY_MS).unref()
    })
    await h.init({ op: 'init', cert: identity.cert, key: identity.key, listen: init.listen, handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS, maxFrameSize: init.maxFrameSize ?? MAX_FRAME_SIZE, holdData: init.holdData ?? true })
    return h
  }
  try {
    for (let i = 0; i < init.workers; i++) await start(i)
  } catch (err) {
    stopped = true
    await Promise.all(handles.map(async h => await h.worker.terminate()))
    throw err
  }

  return {
    size: init.workers,
    listening: () => handles.flatMap(h => h.listening.map(l => ({ worker: h.index, ...l }))),
    endpoints: () => handles.flatMap(h => h.listening.map(l => formatEndpoint(l.host, l.port))),
    async dial (opts) {
      if (stopped) throw new LaneClosedError('the data plane is stopped')
      const index = opts.worker ?? nextWorker++ % handles.length
      const h = handles[index % handles.length]!
      return await h.dial(`d${nextLane++}`, opts)
    },
    async terminateWorker (index) {
      await handles[index]?.worker.terminate()
    },
    async stop () {
      stopped = true
      await Promise.all(handles.map(async h => await h.worker.terminate()))
    }
  }
}

/** The main thread's side of one worker: its lanes by id, and the dials in progress. */
class WorkerHandle {
  readonly worker: Worker
  listening: Array<{ host: string, port: number }> = []
  private readonly lanes = new Map<string, WorkerLane>()
  private readonly dials = new Map<string, { resolve: (l: WorkerLane) => void, reject: (e: Error) => void, opts: DataDialOptions }>()
  private ready?: { resolve: () => void, reject: (e: Error) => void }
  private dead?: Error

  constructor (readonly index: number, private readonly onLane: (lane: WorkerLane, info: { peerId: string }) => void) {
    this.worker = new Worker(new URL('./data-worker.js', import.meta.url))
    this.worker.on('message', (m: FromWorker) => { this.message(m) })
    // An uncaught error ends the worker: 'exit' follows and breaks its lanes.
    this.worker.on('error', (err) => { this.dead ??= err })
  }

  post (m: ToWorker): void {
    if (this.dead == null) this.worker.postMessage(m)
  }

  async init (m: Extract<ToWorker, { op: 'init' }>): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.ready = { resolve, reject }
      this.post(m)
    })
  }

  async dial (id: string, opts: DataDialOptions): Promise<WorkerLane> {
    if (this.dead != null) throw new LaneClosedError(`data worker ${this.index} is gone: ${this.dead.message}`)
    opts.signal?.throwIfAborted()
    return await new Promise<WorkerLane>((resolve, reject) => {
      const onAbort = (): void => { this.dials.delete(id); this.post({ op: 'abort', lane: id }); reject(opts.signal!.reason) }
      opts.signal?.addEventListener('abort', onAbort, { once: true })
      const done = <T>(f: (v: T) => void) => (v: T): void => { opts.signal?.removeEventListener('abort', onAbort); f(v) }
      this.dials.set(id, { resolve: done(resolve), reject: done(reject), opts })
      this.post({ op: 'dial', lane: id, host: opts.host, port: opts.port, peer: opts.peer, localAddress: opts.localAddress, timeoutMs: opts.timeoutMs ?? HANDSHAKE_TIMEOUT_MS })
    })
  }

  /** The worker ended: every lane and dial of it fails with `err`. */
  exited (err: Error): void {
    this.dead ??= err
    const reason = new LaneClosedError(`data worker ${this.index} stopped: ${this.dead.message}`)
    this.ready?.reject(reason)
    for (const d of this.dials.values()) d.reject(reason)
    this.dials.clear()
    for (const l of this.lanes.values()) l.ended(reason)
    this.lanes.clear()
  }

  private message (m: FromWorker): void {
    switch (m.op) {
      case 'ready': this.listening = m.listening; this.ready?.resolve(); return
      case 'failed': this.ready?.reject(fromErrorInfo(m.error)); return
      case 'opened': {
        const d = this.dials.get(m.lane)
        if (d == null) { this.post({ op: 'abort', lane: m.lane }); return }
        this.dials.delete(m.lane)
        const lane = new WorkerLane(this, m.lane, m.local, m.remote ?? d.opts.host)
        this.lanes.set(m.lane, lane)
        d.resolve(lane)
        return
      }
      case 'incoming': {
        const lane = new WorkerLane(this, m.lane, m.local, m.remote)
        this.lanes.set(m.lane, lane)
        this.onLane(lane, { peerId: m.peer })
        return
      }
      case 'closed': {
        const d = this.dials.get(m.lane)
        if (d != null) {
          this.dials.delete(m.lane)
          d.reject(m.error != null ? fromErrorInfo(m.error) : new LaneClosedError('data lane closed while opening'))
          return
        }
        this.lanes.get(m.lane)?.ended(m.error != null ? fromErrorInfo(m.error) : undefined)
        this.lanes.delete(m.lane)
        return
      }
      default: this.lanes.get(m.lane)?.message(m)
    }
  }
}

/** A data lane owned by a data worker, as the session's thread sees it. */
class WorkerLane implements OffThreadLane {
  readonly id: string
  private readonly inbox: Uint8Array[] = []
  private waiter?: () => void
  private done = false
  private error?: Error
  private nextSeq = 1
  private readonly taken = new Map<number, { resolve: () => void, reject: (e: Error) => void }>()
  private sink?: DataSink
  /** Frames the session admitted that the worker has not reported written yet. */
  private readonly admitted = new Set<number>()
  private closing?: Promise<void>
  private closed?: () => void
  /** Called once when the lane is gone. */
  onEnd?: () => void
  /** Bytes read from the inbox and not yet reported to the worker. */
  private unreported = 0

  constructor (private readonly owner: WorkerHandle, private readonly key: string, readonly localAddress?: string, readonly remoteAddress?: string) {
    this.id = `${localAddress ?? '?'}>${remoteAddress ?? '?'}#w${owner.index}.${key}`
  }

  async send (frame: Uint8Array | readonly Uint8Array[]): Promise<void> {
    if (this.done) throw this.sendError()
    // Copied into the message here (parts as they are, not joined first): the caller may reuse
    // its buffers once this resolves.
    const bytes = frame instanceof Uint8Array ? frame : [...frame]
    const seq = this.nextSeq++
    await new Promise<void>((resolve, reject) => {
      this.taken.set(seq, { resolve, reject })
      this.owner.post({ op: 'send', lane: this.key, seq, frame: bytes })
    })
  }

  /** Why sends fail now: the lane's error, as a LaneClosedError when it was not one of ours. */
  private sendError (): Error {
    return this.error instanceof ShoalError ? this.error : new LaneClosedError(this.error?.message ?? 'lane closed')
  }

  async sendData (header: Omit<DataHeader, 'type'>, plan: LoadPlan): Promise<void> {
    if (this.done) throw this.sendError()
    const seq = this.nextSeq++
    await new Promise<void>((resolve, reject) => {
      this.taken.set(seq, { resolve, reject })
      this.owner.post({ op: 'data', lane: this.key, seq, header: { round: header.round, chunkId: header.chunkId, area: header.area, runs: header.runs }, plan })
    })
  }

  sinkData (sink: DataSink): void {
    this.sink = sink
    this.owner.post({ op: 'sink', lane: this.key, files: [...sink.files] })
  }

  [Symbol.asyncIterator] (): AsyncIterator<Uint8Array> {
    return {
      next: async () => {
        while (true) {
          const f = this.inbox.shift()
          if (f != null) {
            this.read(f.byteLength)
            return { value: f, done: false }
          }
          if (this.done) {
            if (this.error != null) throw this.error
            return { value: undefined, done: true }
          }
          await new Promise<void>(resolve => { this.waiter = resolve })
        }
      }
    }
  }

  async close (): Promise<void> {
    if (this.done) return
    this.closing ??= new Promise<void>(resolve => {
      this.closed = resolve
      this.owner.post({ op: 'close', lane: this.key })
    })
    await this.closing
  }

  abort (err?: Error): void {
    if (this.done) return
    this.owner.post({ op: 'abort', lane: this.key, message: err?.message })
    this.ended(err ?? new LaneClosedError('lane aborted'))
  }

  /** The lane is gone (`err` when it broke). */
  ended (err?: Error): void {
    if (this.done) return
    this.done = true
    this.error = err
    const reason = err ?? new LaneClosedError('lane closed')
    for (const t of this.taken.values()) t.reject(reason instanceof ShoalError ? reason : new LaneClosedError(reason.message))
    this.taken.clear()
    // The worker reports everything it wrote before the lane's end: the rest was never written.
    for (const t of this.admitted) this.sink?.abandon(t)
    this.admitted.clear()
    this.closed?.()
    this.onEnd?.()
    this.wake()
  }

  message (m: FromWorker): void {
    switch (m.op) {
      case 'frame': this.inbox.push(m.frame); this.wake(); return
      case 'taken': { const t = this.taken.get(m.seq); this.taken.delete(m.seq); t?.resolve(); return }
      case 'header': {
        const sink = this.sink
        if (sink == null) return
        void sink.admit(m.header, m.payloadBytes).then(ticket => {
          if (ticket == null) { this.owner.post({ op: 'admit', lane: this.key, id: m.id }); return }
          // A lane that broke meanwhile writes nothing more.
          if (this.done) { sink.abandon(ticket); return }
          this.admitted.add(ticket)
          this.owner.post({ op: 'admit', lane: this.key, id: m.id, ticket })
        })
        return
      }
      case 'written': {
        const err = m.error != null ? Object.assign(new Error(m.error.message), { code: m.error.code }) : undefined
        this.admitted.delete(m.ticket)
        this.sink?.written(m.ticket, err)
      }
    }
  }

  /** Tells the worker what was read, in batches (it stops reading the socket while too much is unread). */
  private read (bytes: number): void {
    this.unreported += bytes
    if (this.unreported < CONSUMED_BATCH && this.inbox.length > 0) return
    this.owner.post({ op: 'consumed', lane: this.key, bytes: this.unreported })
    this.unreported = 0
  }

  private wake (): void {
    const w = this.waiter
    this.waiter = undefined
    w?.()
  }
}
