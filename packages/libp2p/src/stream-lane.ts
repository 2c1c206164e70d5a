import { FrameDecoder, InvalidFrameError, LaneClosedError, MAX_FRAME_SIZE } from '@shoal/core'
import { LANE_CLOSE_LINGER_MS, LANE_READ_HIGH_WATER, STREAM_READ_BUFFER_LIMIT } from './constants.js'
import type { Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface'
import type { Lane } from '@shoal/core'

/** Options of {@link streamToLane}. */
export interface StreamLaneInit {
  /** Lane identifier for logs, e.g. `127.0.0.1>127.0.0.2#c0s1`. */
  id: string
  /** Local interface address, when known. */
  localAddress?: string
  /** Remote address, when known. */
  remoteAddress?: string
  /** Largest frame accepted (header included); default core's `MAX_FRAME_SIZE`. */
  maxFrameSize?: number
  /**
   * Received bytes (decoded frames not yet taken by the consumer plus a partial frame) above
   * which the stream is paused; it resumes once the consumer has taken half. Default 8 MiB.
   */
  readHighWaterMark?: number
  /** After a local `close()`, how long to wait for the peer's close before resetting; default 10 s. */
  closeLingerMs?: number
  /**
   * Called after `abort()` reset the stream: a lane that owns its connection (one stream, dialled
   * for it) tears the connection down too, so a stalled TCP connection on a dead link is not
   * reused for the next lane.
   */
  onAbort?: (err: Error) => void
  /**
   * Copy each frame before handing it to the stream. Needed where the connection keeps a
   * reference to the plaintext after `send` returned (TLS: node:tls buffers what it has not yet
   * encrypted), so that the caller owns its buffer again once `send` resolves, as the lane
   * transport's contract says. Noise encrypts (copies) as it goes and needs no copy.
   */
  copyOnSend?: boolean
}

/**
 * Adapts a libp2p v3 stream (event based: `send()`/`'drain'`, `'message'` events) to a Shoal
 * {@link Lane}.
 *
 * - Sending honours back-pressure: `send` resolves once the stream has no unsent bytes queued
 *   (libp2p's `onDrain()` promise is not re-armed after its first use in this version, so the
 *   lane waits for `'drain'` events itself). A frame given as parts (header, payload) leaves as
 *   one yamux frame without being concatenated.
 * - Receiving runs the bytes through core's `FrameDecoder`. When more than `readHighWaterMark`
 *   bytes wait for a slow consumer the stream is paused (yamux then stops granting window, so the
 *   peer stops after at most one window); an oversized or malformed length resets the stream and
 *   the iterator throws `InvalidFrameError`.
 * - The iterator ends when the peer closes, and throws `LaneClosedError` when the stream is reset
 *   or the connection drops without a close.
 * - `close()` mirrors core's in-memory lane: flush, close both directions (frames that arrive
 *   afterwards are dropped), and reset the stream if the peer does not close within the linger
 *   time. `abort()` resets the stream at once.
 */
export function streamToLane (stream: Stream, init: StreamLaneInit): Lane {
  return new StreamLane(stream, init)
}

class StreamLane implements Lane {
  readonly id: string
  readonly localAddress?: string
  readonly remoteAddress?: string
  private readonly stream: Stream
  private readonly decoder: FrameDecoder
  private readonly highWater: number
  private readonly lowWater: number
  private readonly lingerMs: number
  private readonly copyOnSend: boolean
  private onAbort?: (err: Error) => void
  /** Decoded frames not yet consumed; `head` indexes the next one (cheaper than `shift`). */
  private queue: Uint8Array[] = []
  private head = 0
  private queuedBytes = 0
  private paused = false
  /** Inside `stream.resume()` (which re-enters `onMessage`). */
  private resuming = false
  /** No more frames will be queued (peer closed, or we closed). */
  private readEnded = false
  /** Sends are refused (we closed, or the peer did). */
  private writeClosed = false
  private remoteFin = false
  /** `close()` was called. */
  private writeClosedLocally = false
  private error?: Error
  private readWaiter?: () => void
  private drainWaiters: Array<() => void> = []
  private lingerTimer?: ReturnType<typeof setTimeout>

  constructor (stream: Stream, init: StreamLaneInit) {
    this.stream = stream
    this.id = init.id
    if (init.localAddress != null) this.localAddress = init.localAddress
    if (init.remoteAddress != null) this.remoteAddress = init.remoteAddress
    this.decoder = new FrameDecoder({ maxFrameSize: init.maxFrameSize ?? MAX_FRAME_SIZE })
    this.highWater = init.readHighWaterMark ?? LANE_READ_HIGH_WATER
    this.lowWater = Math.floor(this.highWater / 2)
    this.lingerMs = init.closeLingerMs ?? LANE_CLOSE_LINGER_MS
    this.onAbort = init.onAbort
    this.copyOnSend = init.copyOnSend === true
    // A paused stream keeps receiving what the peer was already granted: never reset for that.
    stream.maxReadBufferLength = Math.max(stream.maxReadBufferLength, STREAM_READ_BUFFER_LIMIT)

    stream.addEventListener('message', (evt: StreamMessageEvent) => { this.onMessage(evt) })
    stream.addEventListener('remoteCloseWrite', () => { this.onRemoteCloseWrite() })
    // After a reset, 'end' comes just before the 'close' that carries the reason: let that go first.
    stream.addEventListener('end', () => { queueMicrotask(() => { this.checkReadEnd() }) })
    stream.addEventListener('close', (evt: StreamCloseEvent) => { this.onClose(evt) })
    stream.addEventListener('drain', () => { this.wakeWriters() })

    // The peer may have closed during protocol negotiation, before this lane listened. Adding the
    // 'message' listener above queued the delivery of what libp2p buffered meanwhile; judge the
    // end after that.
    if (stream.remoteWriteStatus === 'closed' && stream.status === 'open') this.onRemoteCloseWrite()
    else queueMicrotask(() => { this.checkReadEnd() })
  }

  // ---- sending ----

  async send (frame: Uint8Array | readonly Uint8Array[]): Promise<void> {
    this.assertWritable()
    let ok = true
    try {
      ok = this.stream.send(this.copyOnSend ? concat(frame) : frame instanceof Uint8Array ? frame : byteList(frame))
    } catch (err) {
      throw this.error ?? new LaneClosedError(`lane ${this.id}: ${(err as Error).message}`)
    }
    if (!ok || this.stream.writableNeedsDrain) await this.waitDrain()
  }

  private assertWritable (): void {
    if (this.error != null) throw this.error
    if (this.writeClosed || this.stream.writeStatus !== 'writable') {
      throw new LaneClosedError(`lane ${this.id} closed`)
    }
  }

  private async waitDrain (): Promise<void> {
    // libp2p clears `writableNeedsDrain` on 'drain' and then retries its queue in a microtask
    // that may set it again, so loop until it stays clear.
    while (this.stream.writableNeedsDrain) {
      if (this.error != null) throw this.error
      if (this.stream.status !== 'open') throw new LaneClosedError(`lane ${this.id} closed while sending`)
      await new Promise<void>(resolve => { this.drainWaiters.push(resolve) })
    }
    if (this.error != null) throw this.error
  }

  private wakeWriters (): void {
    const waiters = this.drainWaiters
    this.drainWaiters = []
    for (const w of waiters) w()
  }

  // ---- receiving ----

  private onMessage (evt: StreamMessageEvent): void {
    if (this.readEnded || this.error != null) return
    const data = evt.data
    if (data instanceof Uint8Array) {
      this.decoder.push(data)
    } else {
      for (const chunk of data) this.decoder.push(chunk)
    }
    try {
      for (let frame = this.decoder.next(); frame != null; frame = this.decoder.next()) {
        this.queue.push(frame)
        this.queuedBytes += frame.byteLength
      }
    } catch (err) {
      // Bad length prefix: nothing after it can be trusted.
      this.fail(err as Error)
      this.stream.abort(err as Error)
      return
    }
    this.updateFlow()
    this.checkReadEnd()
    this.wakeReader()
  }

  /**
   * Pauses the stream above the high-water mark, resumes it at the low-water mark.
   *
   * `resume()` first hands everything buffered meanwhile to our 'message' listener and only then
   * tells yamux to grant window again; pausing from inside that listener would be undone by the
   * grant, so the decision is taken again once `resume()` has returned. (This yamux grants window
   * on delivery, not on consumption: while paused the peer can still send one window, and a
   * resume re-grants a whole window, so a lane holds at most high-water + 2 windows.)
   */
  private updateFlow (): void {
    if (this.resuming) return
    if (this.paused) {
      if (this.queuedBytes > this.lowWater) return
      this.paused = false
      if (this.stream.readStatus !== 'paused') return
      this.resuming = true
      try {
        this.stream.resume()
      } finally {
        this.resuming = false
      }
    }
    if (this.queuedBytes + this.decoder.pending > this.highWater && this.stream.readStatus === 'readable') {
      this.paused = true
      this.stream.pause()
    }
  }

  private onRemoteCloseWrite (): void {
    this.remoteFin = true
    // The peer closed its lane (lanes have no half-close): refuse further sends and finish our
    // side so the stream is released once what we queued is flushed.
    this.writeClosed = true
    this.wakeWriters()
    this.stream.close().catch(() => {})
    // Data carried by the same yamux frame is delivered right after this event.
    queueMicrotask(() => { this.checkReadEnd() })
  }

  private onClose (evt: StreamCloseEvent): void {
    if (this.lingerTimer != null) clearTimeout(this.lingerTimer)
    this.writeClosed = true
    if (evt.error != null && this.error == null && !(this.readEnded && this.writeClosedLocally)) {
      const why = evt.local === true ? evt.error.message : 'reset by peer'
      this.fail(new LaneClosedError(`lane ${this.id} ${why}`))
    }
    this.checkReadEnd()
    this.wakeWriters()
    this.wakeReader()
  }

  /**
   * Ends the iterator once the peer can send nothing more and everything it sent was decoded.
   * Works from the stream's state rather than from events alone, because a stream handed over
   * after protocol negotiation may have seen the peer's close (and 'end') before the lane existed.
   */
  private checkReadEnd (): void {
    if (this.readEnded || this.error != null) return
    const s = this.stream
    if (s.status === 'reset' || s.status === 'aborted') {
      this.fail(new LaneClosedError(`lane ${this.id} ${s.status === 'reset' ? 'reset by peer' : 'aborted'}`))
      return
    }
    if (s.remoteWriteStatus !== 'closed' || s.readBufferLength > 0) return
    if (!this.remoteFin) {
      this.fail(new LaneClosedError(`lane ${this.id}: connection to the peer was lost`))
      return
    }
    if (this.decoder.pending > 0) {
      this.fail(new InvalidFrameError(`lane ${this.id}: peer closed in the middle of a frame (${this.decoder.pending} bytes pending)`))
      return
    }
    this.readEnded = true
    this.wakeReader()
  }

  private fail (err: Error): void {
    if (this.error != null) return
    this.error = err
    this.writeClosed = true
    this.queue = []
    this.head = 0
    this.queuedBytes = 0
    this.wakeReader()
    this.wakeWriters()
  }

  private wakeReader (): void {
    const w = this.readWaiter
    this.readWaiter = undefined
    w?.()
  }

  private take (): Uint8Array | undefined {
    if (this.head >= this.queue.length) return undefined
    const frame = this.queue[this.head]!
    this.queue[this.head++] = EMPTY
    if (this.head === this.queue.length) {
      this.queue = []
      this.head = 0
    } else if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head)
      this.head = 0
    }
    this.queuedBytes -= frame.byteLength
    if (this.paused && this.queuedBytes <= this.lowWater) this.updateFlow()
    return frame
  }

  async * [Symbol.asyncIterator] (): AsyncGenerator<Uint8Array> {
    while (true) {
      if (this.error != null) throw this.error
      const frame = this.take()
      if (frame != null) {
        yield frame
        continue
      }
      if (this.readEnded) return
      await new Promise<void>(resolve => { this.readWaiter = resolve })
    }
  }

  // ---- closing ----

  async close (): Promise<void> {
    if (this.error != null || this.writeClosedLocally) return
    this.writeClosedLocally = true
    this.writeClosed = true
    this.readEnded = true
    this.wakeReader()
    try {
      // Keep granting window (a paused peer could otherwise never finish its own close), but
      // drop whatever still arrives: the lane is closed in both directions.
      if (this.stream.readStatus === 'paused') this.stream.resume()
      await this.stream.closeRead()
      await this.stream.close()
    } catch (err) {
      if (this.error == null) this.stream.abort(err as Error)
      return
    }
    if (this.stream.status === 'open' && this.lingerMs > 0) {
      this.lingerTimer = setTimeout(() => {
        this.stream.abort(new LaneClosedError(`lane ${this.id}: peer did not close within ${this.lingerMs} ms`))
      }, this.lingerMs)
      this.lingerTimer.unref?.()
    }
  }

  abort (err?: Error): void {
    const e = err ?? new LaneClosedError(`lane ${this.id} aborted`)
    this.fail(e)
    if (this.lingerTimer != null) clearTimeout(this.lingerTimer)
    this.stream.abort(e)
    const hook = this.onAbort
    this.onAbort = undefined
    hook?.(e)
  }
}

const EMPTY = new Uint8Array(0)

/**
 * uint8arraylist's cross-version marker: libp2p's buffers append any object carrying it by
 * taking its `bufs` (see `isUint8ArrayList`), which lets a frame's header and payload go out as
 * one yamux frame without copying and without a dependency on that package. Sending the parts
 * one by one instead doubles the yamux frames, Noise messages and window updates per lane frame.
 */
const UINT8ARRAYLIST = Symbol.for('@achingbrain/uint8arraylist')

type SendData = Parameters<Stream['send']>[0]

function byteList (parts: readonly Uint8Array[]): SendData {
  if (parts.length === 1) return parts[0]!
  const bufs = parts.filter(p => p.byteLength > 0)
  const byteLength = bufs.reduce((n, p) => n + p.byteLength, 0)
  return { [UINT8ARRAYLIST]: true, bufs, byteLength, length: byteLength } as unknown as SendData
}

/** One new buffer holding the frame's bytes. */
function concat (frame: Uint8Array | readonly Uint8Array[]): Uint8Array {
  const parts = frame instanceof Uint8Array ? [frame] : frame
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0))
  let off = 0
  for (const p of parts) { out.set(p, off); off += p.byteLength }
  return out
}
