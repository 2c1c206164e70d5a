import { LaneClosedError } from '../errors.js'
import type { Lane } from './lane.js'

/** Options of {@link createMemoryLanePair}. */
export interface MemoryLaneInit {
  /** Identifier prefix. */
  id?: string
  /** Frames buffered before `send` waits (back-pressure); default 64. */
  highWaterMark?: number
}

class MemoryLane implements Lane {
  readonly id: string
  peer!: MemoryLane
  private readonly queue: Uint8Array[] = []
  private readonly highWaterMark: number
  private waiter?: () => void
  private drainWaiters: Array<() => void> = []
  private ended = false
  private error?: Error

  constructor (id: string, highWaterMark: number) {
    this.id = id
    this.highWaterMark = highWaterMark
  }

  async send (frame: Uint8Array | readonly Uint8Array[]): Promise<void> {
    if (this.error != null || this.ended) throw this.error ?? new LaneClosedError(`lane ${this.id} closed`)
    const parts = frame instanceof Uint8Array ? [frame] : frame
    // Copy: the sender may reuse its buffers, as it may with a socket.
    const total = parts.reduce((n, p) => n + p.byteLength, 0)
    const copy = new Uint8Array(total)
    let off = 0
    for (const p of parts) { copy.set(p, off); off += p.byteLength }
    this.peer.push(copy)
    while (this.peer.queue.length > this.highWaterMark && this.error == null && this.peer.error == null) {
      await new Promise<void>(resolve => this.peer.drainWaiters.push(resolve))
    }
    // Re-read: the lane may have failed while we waited (TypeScript's narrowing does not know).
    const failed = this.error as Error | undefined
    if (failed != null) throw failed
  }

  private push (frame: Uint8Array): void {
    if (this.ended || this.error != null) return
    this.queue.push(frame)
    this.wake()
  }

  private wake (): void {
    const w = this.waiter
    this.waiter = undefined
    w?.()
  }

  private drained (): void {
    const ws = this.drainWaiters
    this.drainWaiters = []
    for (const w of ws) w()
  }

  async * [Symbol.asyncIterator] (): AsyncGenerator<Uint8Array> {
    while (true) {
      if (this.error != null) throw this.error
      const next = this.queue.shift()
      if (next != null) {
        if (this.queue.length <= this.highWaterMark) this.drained()
        yield next
        continue
      }
      if (this.ended) return
      await new Promise<void>(resolve => { this.waiter = resolve })
    }
  }

  private endRead (): void {
    this.ended = true
    this.wake()
    this.drained()
  }

  async close (): Promise<void> {
    if (this.ended) return
    this.ended = true
    this.peer.endRead()
    this.wake()
  }

  abort (err?: Error): void {
    const e = err ?? new LaneClosedError(`lane ${this.id} aborted`)
    this.fail(e)
    this.peer.fail(new LaneClosedError(`lane ${this.peer.id} reset by peer`))
  }

  private fail (err: Error): void {
    if (this.error != null) return
    this.error = err
    this.wake()
    this.drained()
  }
}

/**
 * Creates two connected in-memory lanes (for unit tests and same-process transfers).
 * Frames are copied on send, like a socket would.
 */
export function createMemoryLanePair (init: MemoryLaneInit = {}): [Lane, Lane] {
  const id = init.id ?? 'mem'
  const hwm = init.highWaterMark ?? 64
  const a = new MemoryLane(`${id}:a`, hwm)
  const b = new MemoryLane(`${id}:b`, hwm)
  a.peer = b
  b.peer = a
  return [a, b]
}
