/**
 * A free list of equally sized buffers. Chunk payloads are allocated here and given back when
 * acknowledged: fresh 1 MiB buffers per chunk cost page faults and garbage collection that were
 * measured to dominate the sender's CPU.
 */
export class BufferPool {
  private readonly free: Buffer[] = []

  constructor (readonly size: number, private readonly maxFree = 64) {}

  /** A buffer of `n` bytes (from the pool when `n` is the pool's size). Contents are undefined. */
  acquire (n: number): Buffer {
    if (n === this.size) return this.free.pop() ?? Buffer.allocUnsafeSlow(n)
    return Buffer.allocUnsafeSlow(n)
  }

  /** Gives a buffer back; buffers of another size are left to the garbage collector. */
  release (buf: Uint8Array): void {
    if (buf.byteLength === this.size && buf.byteOffset === 0 && buf.buffer.byteLength === this.size &&
      this.free.length < this.maxFree && Buffer.isBuffer(buf)) this.free.push(buf)
  }
}
