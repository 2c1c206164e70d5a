import { DATA_HEADER_PREFIX, dataHeaderSize, decodeDataHeader, FRAME_HEADER_SIZE, InvalidFrameError, MAX_FRAME_SIZE } from '@shoal/core'
import type { DataHeader } from '@shoal/core'

/** One frame cut from a byte stream: a DATA frame keeps its payload as the received pieces. */
export type StreamItem =
  | { kind: 'frame', bytes: Uint8Array }
  | { kind: 'data', header: DataHeader, payloadBytes: number, pieces: Uint8Array[] }

/**
 * Cuts a lane's byte stream into frames. A DATA frame's payload is returned as views of the
 * buffers it arrived in (no copy): the worker writes them to the staging file where they lie.
 * The length is checked before any body byte is kept, so an oversized frame costs nothing.
 */
export class FrameStream {
  private chunks: Uint8Array[] = []
  private buffered = 0

  constructor (private readonly maxFrameSize = MAX_FRAME_SIZE) {}

  /** Bytes received but not yet returned. */
  get pending (): number { return this.buffered }

  push (chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return
    this.chunks.push(chunk)
    this.buffered += chunk.byteLength
  }

  /** The next whole frame, or undefined until more bytes arrive. Throws on a malformed frame. */
  next (): StreamItem | undefined {
    if (this.buffered < FRAME_HEADER_SIZE) return undefined
    const head = this.peek(FRAME_HEADER_SIZE)
    const total = (head[0]! | (head[1]! << 8) | (head[2]! << 16)) + head[3]! * 0x1000000 + 4
    if (total > this.maxFrameSize) throw new InvalidFrameError(`frame of ${total} bytes exceeds ${this.maxFrameSize}`)
    if (total < FRAME_HEADER_SIZE) throw new InvalidFrameError('frame shorter than its header')
    if (this.buffered < total) return undefined
    if (total < DATA_HEADER_PREFIX) return { kind: 'frame', bytes: this.take(total) }
    const size = dataHeaderSize(this.peek(DATA_HEADER_PREFIX))
    if (size == null) return { kind: 'frame', bytes: this.take(total) }
    if (size > total) throw new InvalidFrameError(`frame length field ${total - 4} shorter than its header`)
    const header = decodeDataHeader(this.take(size), { maxFrameSize: this.maxFrameSize })
    return { kind: 'data', header, payloadBytes: header.payloadBytes, pieces: this.pieces(header.payloadBytes) }
  }

  private peek (n: number): Uint8Array {
    const first = this.chunks[0]!
    if (first.byteLength >= n) return first
    const out = new Uint8Array(n)
    let off = 0
    for (const c of this.chunks) {
      const k = Math.min(c.byteLength, n - off)
      out.set(c.subarray(0, k), off)
      off += k
      if (off === n) break
    }
    return out
  }

  /** `n` bytes as one buffer (copied only when they span received buffers). */
  private take (n: number): Uint8Array {
    const first = this.chunks[0]!
    if (first.byteLength >= n) return this.pieces(n)[0] ?? new Uint8Array(0)
    const out = new Uint8Array(n)
    let off = 0
    for (const p of this.pieces(n)) { out.set(p, off); off += p.byteLength }
    return out
  }

  /** `n` bytes as views of the received buffers. */
  private pieces (n: number): Uint8Array[] {
    const out: Uint8Array[] = []
    this.buffered -= n
    while (n > 0) {
      const c = this.chunks[0]!
      if (c.byteLength <= n) {
        out.push(c)
        this.chunks.shift()
        n -= c.byteLength
      } else {
        out.push(c.subarray(0, n))
        this.chunks[0] = c.subarray(n)
        n = 0
      }
    }
    return out
  }
}
