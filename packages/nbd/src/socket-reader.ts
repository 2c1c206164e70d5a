import type { Socket } from 'node:net'

/** Thrown by {@link SocketReader} once the peer closed: the connection's loop ends quietly. */
export class ConnectionClosed extends Error {
  constructor () { super('connection closed'); this.name = 'ConnectionClosed' }
}

interface Waiter { bytes: number, resolve: () => void, reject: (err: Error) => void }

/**
 * Reads exact byte counts from a socket with backpressure: the socket is paused while more than
 * `highWaterMark` bytes wait unread (and no read needs them), so a client that sends faster than
 * the backends answer cannot grow the server's memory.
 */
export class SocketReader {
  private chunks: Buffer[] = []
  private buffered = 0
  private waiter: Waiter | undefined
  private closed = false

  constructor (private readonly socket: Socket, private readonly highWaterMark: number) {
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk)
      this.buffered += chunk.length
      this.wake()
      this.flow()
    })
    const close = (): void => {
      this.closed = true
      const w = this.waiter
      this.waiter = undefined
      w?.reject(new ConnectionClosed())
    }
    socket.once('end', close)
    socket.once('close', close)
  }

  /** Resolves to the next `bytes` bytes (a view of a received chunk when one holds them all). */
  async read (bytes: number): Promise<Buffer> {
    await this.need(bytes)
    return this.take(bytes)
  }

  /** Drops the next `bytes` bytes without holding them all in memory at once. */
  async skip (bytes: number): Promise<void> {
    let left = bytes
    while (left > 0) {
      await this.need(1)
      left -= this.take(Math.min(left, this.buffered)).length
    }
  }

  private async need (bytes: number): Promise<void> {
    if (this.buffered >= bytes) return
    if (this.closed) throw new ConnectionClosed()
    await new Promise<void>((resolve, reject) => {
      this.waiter = { bytes, resolve, reject }
      this.flow()
    })
  }

  private wake (): void {
    const w = this.waiter
    if (w !== undefined && this.buffered >= w.bytes) {
      this.waiter = undefined
      w.resolve()
    }
  }

  /** Pauses the socket while enough is buffered, resumes it when a read needs more. */
  private flow (): void {
    const wanted = this.waiter?.bytes ?? 0
    if (this.buffered > this.highWaterMark && this.buffered >= wanted) this.socket.pause()
    else if (this.socket.isPaused()) this.socket.resume()
  }

  private take (bytes: number): Buffer {
    const first = this.chunks[0]
    let out: Buffer
    if (first !== undefined && first.length >= bytes) {
      out = first.subarray(0, bytes)
      if (first.length === bytes) this.chunks.shift()
      else this.chunks[0] = first.subarray(bytes)
    } else {
      out = Buffer.allocUnsafe(bytes)
      let at = 0
      while (at < bytes) {
        const c = this.chunks[0] as Buffer
        const n = Math.min(c.length, bytes - at)
        c.copy(out, at, 0, n)
        at += n
        if (n === c.length) this.chunks.shift()
        else this.chunks[0] = c.subarray(n)
      }
    }
    this.buffered -= bytes
    this.flow()
    return out
  }
}
