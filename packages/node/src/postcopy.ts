import { closeSync, openSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { createServer } from 'node:net'
import type { Server, Socket } from 'node:net'
import { join } from 'node:path'
import type { CacheFetchStats, PostCopyAccess, PostCopyCache, PostCopyOutcome } from '@shoal/core'
import { POSTCOPY_FAULT_MAX_PENDING, POSTCOPY_RELEASE_TIMEOUT_MS, POSTCOPY_STALL_LOG_MS } from './constants.js'
import type { Logger } from './logger.js'

/** Post-copy progress of an image, as `shoal status` shows it. */
export interface PostCopyStatus {
  /** Peer the image came from (its node keeps the cache until released). */
  from: string
  /** Claimed blocks, and those present so far. */
  blocks: number
  presentBlocks: number
  /** The fetch's figures: bytes per source, dedup, on-demand fetches and their latency, blocked reads. */
  stats: CacheFetchStats
}

/** What {@link PostCopyService} needs from the node. */
export interface PostCopyServiceDeps {
  log: Logger
  /** Adds the migrating source's node as a block source (once it can be reached). */
  addSourceNode: (pc: PostCopyCache, peer: string, signal: AbortSignal) => Promise<void>
  /** Tells the source's node that its kept copy may go. */
  release: (peer: string, volume: string, sessionId: Uint8Array, signal: AbortSignal) => Promise<void>
  /** The cache is complete: the workload leaves the fault path (a VM moves to the local file). */
  complete: (image: string) => Promise<void>
  /** Extra ways in for drivers that need them (an NBD export for QEMU); stopped with the service. */
  exports?: (image: string, pc: PostCopyCache, cachePath: string, runDir: string) => Promise<{ access: Partial<PostCopyAccess>, stop: () => Promise<void> }>
}

/**
 * The destination's side of one image's post-copy cache: the present bytes beside the cache
 * file (`<cache>.present`), the fault socket in the run directory, the migrating source added as
 * a block source, and, once every block is present, the release of the source's copy. A read of
 * a block no source holds waits, and the node logs it (every POSTCOPY_STALL_LOG_MS) with the
 * block numbers: it is never answered with other bytes.
 */
export class PostCopyService {
  readonly done: Promise<PostCopyOutcome>
  private server?: Server
  private presentFd?: number
  private readonly sockets = new Set<Socket>()
  private readonly stopping = new AbortController()
  private stallTimer?: NodeJS.Timeout
  private extra?: { access: Partial<PostCopyAccess>, stop: () => Promise<void> }
  private readonly presentPath: string
  private readonly socketPath: string
  /** What the workload is launched with (once started). */
  access?: PostCopyAccess
  /** Completion waits for the workload to be launched: it must be told, and its ways in must exist until then. */
  private launchedResolve!: () => void
  private readonly launched = new Promise<void>(resolve => { this.launchedResolve = resolve })

  constructor (readonly image: string, private readonly pc: PostCopyCache, private readonly cachePath: string, private readonly runDir: string, readonly from: string, private readonly deps: PostCopyServiceDeps) {
    this.presentPath = `${cachePath}.present`
    this.socketPath = join(runDir, 'faults.sock')
    this.done = pc.outcome.then(async (o) => {
      await Promise.race([this.launched, new Promise(resolve => { this.stopping.signal.addEventListener('abort', resolve, { once: true }) })])
      await this.finish(o)
      return o
    })
  }

  /** Opens the ways in; returns what the workload is launched with. */
  async start (): Promise<PostCopyAccess> {
    const { pc } = this
    // The listener first: a block that arrives while the file is written is set again after.
    const pending: number[] = []
    pc.watch((i) => { if (this.presentFd != null) writeSync(this.presentFd, ONE, 0, 1, i); else pending.push(i) })
    const bytes = Buffer.alloc(pc.blockCount)
    for (let i = 0; i < pc.blockCount; i++) if (pc.isPresent(i)) bytes[i] = 1
    writeFileSync(`${this.presentPath}.tmp`, bytes)
    renameSync(`${this.presentPath}.tmp`, this.presentPath)
    this.presentFd = openSync(this.presentPath, 'r+')
    for (const i of pending) writeSync(this.presentFd, ONE, 0, 1, i)
    rmSync(this.socketPath, { force: true })
    this.server = createServer(socket => { this.serve(socket) })
    await new Promise<void>((resolve, reject) => { this.server!.once('error', reject); this.server!.listen(this.socketPath, resolve) })
    this.extra = await this.deps.exports?.(this.image, pc, this.cachePath, this.runDir)
    void this.deps.addSourceNode(pc, this.from, this.stopping.signal).catch((err: Error) => {
      this.deps.log.warn('post-copy: the source node is not a block source (replicas only)', { image: this.image, from: this.from, error: err.message })
    })
    this.stallTimer = setInterval(() => { this.reportStalls() }, POSTCOPY_STALL_LOG_MS)
    this.stallTimer.unref()
    this.access = { presentPath: this.presentPath, faultSocket: this.socketPath, ...this.extra?.access }
    return this.access
  }

  /** The workload runs (launched or adopted): completion may now move it off the fault path. */
  workloadStarted (): void { this.launchedResolve() }

  status (): PostCopyStatus {
    const stats = this.pc.stats()
    return { from: this.from, blocks: stats.claimedBlocks, presentBlocks: stats.postcopy?.presentBlocks ?? 0, stats }
  }

  /** Stops streaming (the source keeps its copy); readers waiting get an error. */
  async stop (): Promise<void> {
    this.stopping.abort()
    await this.pc.stop()
    await this.done.catch(() => {})
  }

  /** One connection of the fault protocol (see PostCopyAccess in core's driver.ts). */
  private serve (socket: Socket): void {
    this.sockets.add(socket)
    let buf = ''
    let pending = 0
    socket.setEncoding('utf8')
    socket.on('close', () => { this.sockets.delete(socket) })
    socket.on('error', () => {})
    socket.on('data', (chunk: string) => {
      buf += chunk
      if (buf.length > 4096 && !buf.includes('\n')) { socket.destroy(); return }
      let nl: number
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim()
        buf = buf.slice(nl + 1)
        const m = /^([RW]) (\d{1,12})$/.exec(line)
        const block = m != null ? Number(m[2]) : NaN
        if (m == null) { socket.write(`ERR ${JSON.stringify(line.slice(0, 32))} ERR_INVALID_FRAME\n`); continue }
        if (block >= this.pc.blockCount) { socket.write(`ERR ${block} ERR_INVALID_ARGUMENT\n`); continue }
        if (pending >= POSTCOPY_FAULT_MAX_PENDING) { socket.write(`ERR ${block} ERR_BUSY\n`); continue }
        pending++
        const p = m[1] === 'W' ? this.pc.own(block) : this.pc.demand(block, this.stopping.signal)
        // A node that stops answers nothing: the workload keeps waiting and asks the restarted node.
        p.then(() => { if (!socket.destroyed) socket.write(`OK ${block}\n`) }, () => { if (!socket.destroyed && !this.stopping.signal.aborted) socket.write(`ERR ${block} ERR_PEER_GONE\n`) })
          .finally(() => { pending-- })
      }
    })
  }

  private reportStalls (): void {
    const s = this.pc.stats().postcopy?.onDemand
    if (s != null && s.blocked.length > 0) {
      this.deps.log.error('post-copy: reads wait for blocks no reachable source holds', { image: this.image, blocks: s.blocked, waiting: s.waiting, code: 'ERR_POSTCOPY_STALLED' })
    }
  }

  private async finish (o: PostCopyOutcome): Promise<void> {
    clearInterval(this.stallTimer)
    const { log } = this.deps
    if (o.complete) {
      try {
        await this.deps.complete(this.image)
      } catch (err) {
        log.error('post-copy: the workload could not leave the fault path', { image: this.image, error: (err as Error).message })
      }
    }
    await this.extra?.stop().catch(() => {})
    for (const s of this.sockets) s.destroy()
    await new Promise<void>(resolve => { if (this.server == null) resolve(); else this.server.close(() => { resolve() }) })
    rmSync(this.socketPath, { force: true })
    if (this.presentFd != null) closeSync(this.presentFd)
    this.presentFd = undefined
    if (!o.complete) {
      log.warn('post-copy stopped before the cache was complete; the source keeps its copy', { image: this.image, from: this.from, present: o.stats.postcopy?.presentBlocks, blocks: o.stats.claimedBlocks, error: o.error?.message })
      return
    }
    rmSync(this.presentPath, { force: true })
    log.info('post-copy complete', { image: this.image, from: this.from, ms: o.stats.ms, sources: o.stats.sources, onDemand: o.stats.postcopy?.onDemand })
    try {
      await this.deps.release(this.from, this.pc.volume, this.pc.sessionId, AbortSignal.timeout(POSTCOPY_RELEASE_TIMEOUT_MS))
    } catch (err) {
      log.warn('post-copy: could not tell the source to drop its copy (it keeps it until told)', { image: this.image, from: this.from, error: (err as Error).message })
    }
  }
}

const ONE = Buffer.from([1])
