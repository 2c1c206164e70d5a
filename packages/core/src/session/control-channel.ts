import { ProtocolError, RemoteAbortError, TimeoutError, LaneClosedError } from '../errors.js'
import { decodeFrame, encodeFrame } from '../wire/codec.js'
import { FrameType } from '../wire/frames.js'
import type { Frame } from '../wire/frames.js'
import type { Lane } from '../transport/lane.js'

/**
 * After a send failed: a peer that refuses says why in an ABORT frame and then closes, so the
 * reason may be waiting to be read. Returns it (within `timeoutMs`), so callers report the peer's
 * reason rather than a bare "lane closed".
 */
export async function readAbortReason (it: AsyncIterator<Uint8Array>, timeoutMs = 1000): Promise<RemoteAbortError | undefined> {
  let timer: NodeJS.Timeout | undefined
  const next = await Promise.race([
    it.next().catch(() => undefined),
    new Promise<undefined>(resolve => { timer = setTimeout(() => { resolve(undefined) }, timeoutMs) })
  ]).finally(() => { clearTimeout(timer) })
  if (next == null || next.done === true) return undefined
  try {
    const f = decodeFrame(next.value)
    return f.type === FrameType.Abort ? new RemoteAbortError(f.code, f.message) : undefined
  } catch {
    return undefined
  }
}

/**
 * Request/response helper over the control lane: decodes and validates every frame, turns an
 * ABORT from the peer into {@link RemoteAbortError}, and bounds every wait.
 */
export class ControlChannel {
  private readonly it: AsyncIterator<Uint8Array>

  constructor (readonly lane: Lane) {
    this.it = lane[Symbol.asyncIterator]()
  }

  /** Sends one frame. */
  async send (frame: Frame): Promise<void> {
    try {
      await this.lane.send(encodeFrame(frame))
    } catch (err) {
      throw (await readAbortReason(this.it)) ?? err
    }
  }

  /** Next frame, or undefined when the peer closed the lane. ABORT frames are returned as they are. */
  async nextRaw (timeoutMs?: number, signal?: AbortSignal): Promise<Frame | undefined> {
    let timer: NodeJS.Timeout | undefined
    let onAbort: (() => void) | undefined
    const guards: Array<Promise<never>> = []
    if (timeoutMs != null) {
      guards.push(new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => { reject(new TimeoutError(`peer silent for ${timeoutMs} ms`)) }, timeoutMs)
      }))
    }
    if (signal != null) {
      guards.push(new Promise<never>((_resolve, reject) => {
        onAbort = () => { reject(signal.reason instanceof Error ? signal.reason : new Error('aborted')) }
        if (signal.aborted) onAbort()
        else signal.addEventListener('abort', onAbort, { once: true })
      }))
    }
    try {
      const r = await Promise.race([this.it.next(), ...guards])
      if (r.done === true) return undefined
      return decodeFrame(r.value)
    } finally {
      if (timer != null) clearTimeout(timer)
      if (onAbort != null) signal?.removeEventListener('abort', onAbort)
    }
  }

  /** Next frame; throws when the lane closed, on ABORT, or on timeout. */
  async next (timeoutMs?: number, signal?: AbortSignal): Promise<Frame> {
    const f = await this.nextRaw(timeoutMs, signal)
    if (f == null) throw new LaneClosedError('control lane closed by peer')
    if (f.type === FrameType.Abort) throw new RemoteAbortError(f.code, f.message)
    return f
  }

  /** Next frame, which must be of `type`. */
  async expect<T extends FrameType>(type: T, timeoutMs?: number, signal?: AbortSignal): Promise<Extract<Frame, { type: T }>> {
    const f = await this.next(timeoutMs, signal)
    if (f.type !== type) throw new ProtocolError(`expected ${FrameType[type]}, got ${FrameType[f.type]}`)
    return f as Extract<Frame, { type: T }>
  }
}
