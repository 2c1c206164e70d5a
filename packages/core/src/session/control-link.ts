import { NoLanesError, RemoteAbortError, TimeoutError } from '../errors.js'

/** How often a request checks whether any lane to the destination is left. */
const GONE_POLL_MS = 100
import type { Lane } from '../transport/lane.js'
import { encodeFrame } from '../wire/codec.js'
import { FrameType } from '../wire/frames.js'
import type { Frame } from '../wire/frames.js'

/** Options of {@link ControlLink.request}. */
export interface RequestOptions {
  /** Wait this long for the answer on one lane before re-sending on another. */
  attemptMs: number
  /** Give up after this long in total. */
  totalMs: number
  signal?: AbortSignal
}

/**
 * The source's side of the control conversation after the handshake. Requests go out on the
 * control lane; when it breaks or stays silent, they are re-sent on a data lane (each reaching the
 * destination over another path), preceded by the state frames sent so far (device state). The
 * destination answers on the lane a request came in on and treats repeats idempotently, so a
 * NIC that dies under the control lane does not end the migration. Answers from any lane are
 * delivered here through {@link ControlLink.deliver}.
 */
export class ControlLink {
  private current: Lane
  private readonly dead = new Set<Lane>()
  private readonly replay: Frame[] = []
  private pending?: { type: FrameType, resolve: (f: Frame) => void, reject: (e: Error) => void }
  private aborted?: RemoteAbortError
  /** Lanes the link moved to, for the report. */
  readonly switches: string[] = []

  /** `onAbort`: the peer's ABORT arrived (on any lane), also while no request waits for an answer. */
  constructor (private readonly control: Lane, private readonly dataLanes: () => Lane[], private readonly onAbort?: (err: RemoteAbortError) => void) {
    this.current = control
  }

  /** An answer (or ABORT) that arrived on any lane. Strays and repeats are ignored. */
  deliver (frame: Frame): void {
    if (frame.type === FrameType.Abort) {
      const first = this.aborted == null
      this.aborted ??= new RemoteAbortError(frame.code, frame.message)
      this.pending?.reject(this.aborted)
      this.pending = undefined
      if (first) this.onAbort?.(this.aborted)
      return
    }
    if (this.pending != null && frame.type === this.pending.type) {
      this.pending.resolve(frame)
      this.pending = undefined
    }
  }

  /** The control lane broke: move on at once instead of waiting for a timeout. */
  controlLost (): void {
    this.dead.add(this.control)
  }

  /** Sends a frame; with `keep`, it is re-sent first whenever the link moves to another lane. */
  async send (frame: Frame, keep = false): Promise<void> {
    if (keep) this.replay.push(frame)
    await this.sendHere(frame)
  }

  /** Sends a request and waits for the answer of `type`, moving lanes as needed. */
  async request<T extends FrameType>(frame: Frame, type: T, opts: RequestOptions): Promise<Extract<Frame, { type: T }>> {
    if (this.aborted != null) throw this.aborted
    const deadline = performance.now() + opts.totalMs
    const answer = new Promise<Frame>((resolve, reject) => { this.pending = { type, resolve, reject } })
    answer.catch(() => {})
    let abortListener: (() => void) | undefined
    const aborted = new Promise<never>((_resolve, reject) => {
      abortListener = () => { reject(opts.signal?.reason instanceof Error ? opts.signal.reason : new Error('aborted')) }
      if (opts.signal?.aborted === true) abortListener()
      else opts.signal?.addEventListener('abort', abortListener, { once: true })
    })
    aborted.catch(() => {})
    try {
      await this.sendHere(frame)
      while (true) {
        const left = deadline - performance.now()
        if (left <= 0) throw new TimeoutError(`no ${FrameType[type]} from the destination within ${opts.totalMs} ms`)
        let timer: NodeJS.Timeout | undefined
        let watch: NodeJS.Timeout | undefined
        const tick = new Promise<undefined>(resolve => { timer = setTimeout(() => { resolve(undefined) }, Math.min(opts.attemptMs, left)) })
        // Every lane gone (the destination died): no answer can come, say so now instead of at the
        // end of the attempt.
        const gone = new Promise<never>((_resolve, reject) => {
          watch = setInterval(() => { if (this.allGone()) reject(new NoLanesError(`every lane to the destination is gone while waiting for ${FrameType[type]}`)) }, GONE_POLL_MS)
        })
        gone.catch(() => {})
        const got = await Promise.race([answer, tick, aborted, gone]).finally(() => { clearTimeout(timer); clearInterval(watch) })
        if (got != null) return got as Extract<Frame, { type: T }>
        // Silent: the path under this lane may be dead. Try the request on another lane.
        this.dead.add(this.current)
        await this.moveAndResend(frame)
      }
    } finally {
      this.pending = undefined
      if (abortListener != null) opts.signal?.removeEventListener('abort', abortListener)
    }
  }

  private async sendHere (frame: Frame): Promise<void> {
    for (let attempt = 0; attempt < 8; attempt++) {
      try {
        await this.current.send(encodeFrame(frame))
        return
      } catch {
        this.dead.add(this.current)
        if (!this.move()) break
        for (const f of this.replay) await this.current.send(encodeFrame(f)).catch(() => {})
      }
    }
    throw new TimeoutError('no lane left to reach the destination')
  }

  private async moveAndResend (frame: Frame): Promise<void> {
    if (!this.move()) {
      // Every lane looked dead once: maybe the peer is only slow. Start over from the live ones.
      this.dead.clear()
      this.move()
    }
    for (const f of this.replay) await this.current.send(encodeFrame(f)).catch(() => {})
    await this.sendHere(frame)
  }

  /** True when the control lane broke and no data lane is left. */
  private allGone (): boolean {
    return this.dead.has(this.control) && this.dataLanes().length === 0
  }

  /** Picks the next lane not known dead: the control lane first, then the data lanes. */
  private move (): boolean {
    const next = [this.control, ...this.dataLanes()].find(l => !this.dead.has(l) && l !== this.current) ??
      [this.control, ...this.dataLanes()].find(l => !this.dead.has(l))
    if (next == null) return false
    if (next !== this.current) this.switches.push(next.id)
    this.current = next
    return true
  }
}
