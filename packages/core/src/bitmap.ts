import type { Run } from './wire/frames.js'

/**
 * A fixed-size bitmap over units (pages or blocks). Backed by a plain or shared buffer so that
 * tracker workers can fill disjoint byte ranges of one bitmap in parallel.
 */
export class Bitmap {
  readonly size: number
  readonly bits: Uint8Array

  constructor (size: number, buffer?: ArrayBufferLike) {
    this.size = size
    const bytes = Math.ceil(size / 8)
    this.bits = buffer != null ? new Uint8Array(buffer, 0, bytes) : new Uint8Array(bytes)
  }

  /** A bitmap over `size` units in shared memory. */
  static shared (size: number): Bitmap {
    return new Bitmap(size, new SharedArrayBuffer(Math.max(1, Math.ceil(size / 8))))
  }

  get (i: number): boolean { return (this.bits[i >>> 3]! & (1 << (i & 7))) !== 0 }
  set (i: number): void { this.bits[i >>> 3]! |= 1 << (i & 7) }
  clear (i: number): void { this.bits[i >>> 3]! &= ~(1 << (i & 7)) }
  /** Sets every unit. */
  fill (): void {
    this.bits.fill(0xff)
    const tail = this.size & 7
    if (tail !== 0) this.bits[this.bits.length - 1] = (1 << tail) - 1
  }

  /** Clears every unit. */
  reset (): void { this.bits.fill(0) }

  /** Number of set units. */
  count (): number {
    let n = 0
    for (let i = 0; i < this.bits.length; i++) {
      let b = this.bits[i]!
      while (b !== 0) { b &= b - 1; n++ }
    }
    return n
  }

  /** ORs another bitmap of the same size into this one. */
  or (other: Bitmap): void {
    if (other.size !== this.size) throw new RangeError('bitmap sizes differ')
    for (let i = 0; i < this.bits.length; i++) this.bits[i]! |= other.bits[i]!
  }

  /**
   * Yields runs of consecutive set units in [from, to), in order, each at most `maxRun` long.
   * `from` and `to` must be multiples of 8 (or `to` = size).
   */
  * runs (maxRun = Number.MAX_SAFE_INTEGER, from = 0, to = this.size): Generator<Run> {
    if (from % 8 !== 0 || (to % 8 !== 0 && to !== this.size)) throw new RangeError('runs() range must be byte aligned')
    let start = -1
    const lastByte = Math.ceil(to / 8)
    for (let byte = from / 8; byte < lastByte; byte++) {
      const b = this.bits[byte]!
      if (b === 0 && start < 0) continue
      if (b === 0xff && start >= 0 && (byte * 8 + 8 - start) <= maxRun) continue
      for (let k = 0; k < 8; k++) {
        const i = byte * 8 + k
        if (i >= to) break
        if ((b & (1 << k)) !== 0) {
          if (start < 0) start = i
          else if (i - start >= maxRun) { yield { start, count: i - start }; start = i }
        } else if (start >= 0) {
          yield { start, count: i - start }
          start = -1
        }
      }
    }
    if (start >= 0) yield { start, count: to - start }
  }
}
