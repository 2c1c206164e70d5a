import { NoLanesError } from '../errors.js'

/** The unit of work the scheduler hands to lanes. */
export interface Chunk {
  /** Unique per session. */
  readonly id: number
  /** Payload bytes, used for the per-lane window. */
  readonly bytes: number
}

/**
 * Pull-based chunk scheduler over N lanes. A free lane takes the next chunk, so a faster lane
 * takes more; a failed lane's in-flight chunks go back to the front of the queue for the others.
 */
export class ChunkScheduler<C extends Chunk> {
  private queue: C[] = []
  private readonly inFlight = new Map<string, Map<number, C>>()
  private takers: Array<() => void> = []
  private idleWaiters: Array<{ resolve: () => void, reject: (e: Error) => void }> = []
  private closed = false
  private failure?: Error
  private queuedBytesNow = 0
  private belowWaiters: Array<{ limit: number, resolve: () => void }> = []

  /** Adds chunks at the back of the queue. */
  push (chunks: Iterable<C>): void {
    for (const c of chunks) {
      this.queue.push(c)
      this.queuedBytesNow += c.bytes
    }
    this.wakeTakers()
  }

  /** Bytes of the chunks waiting for a lane. */
  get queuedBytes (): number { return this.queuedBytesNow }

  /**
   * Resolves once fewer than `limit` bytes wait for a lane (at once if they already do, or once
   * the scheduler is closed or failed): a producer uses it not to run far ahead of the lanes.
   */
  async below (limit: number): Promise<void> {
    if (this.queuedBytesNow < limit || this.closed || this.failure != null) return
    await new Promise<void>(resolve => { this.belowWaiters.push({ limit, resolve }) })
  }

  /** Chunks waiting for a lane. */
  get queued (): number { return this.queue.length }

  /** Chunks sent but not acknowledged, over all lanes. */
  get pending (): number {
    let n = 0
    for (const m of this.inFlight.values()) n += m.size
    return n
  }

  /** Registers a lane; must be called before it takes chunks. */
  addLane (lane: string): void {
    if (!this.inFlight.has(lane)) this.inFlight.set(lane, new Map())
  }

  /** Lanes that are still registered. */
  get lanes (): string[] { return [...this.inFlight.keys()] }

  /**
   * Waits for the next chunk for `lane`; undefined once the scheduler is closed or the lane was
   * failed. The chunk counts as in flight on that lane until {@link complete} or {@link failLane}.
   */
  async take (lane: string, signal?: AbortSignal): Promise<C | undefined> {
    while (true) {
      const mine = this.inFlight.get(lane)
      if (this.closed || mine == null) return undefined
      signal?.throwIfAborted()
      const c = this.queue.shift()
      if (c != null) {
        mine.set(c.id, c)
        this.queuedBytesNow -= c.bytes
        this.wakeBelow()
        return c
      }
      await new Promise<void>(resolve => {
        this.takers.push(resolve)
        signal?.addEventListener('abort', () => { resolve() }, { once: true })
      })
    }
  }

  /** Marks a chunk acknowledged. Returns it, or undefined for an unknown or duplicate ack. */
  complete (lane: string, id: number): C | undefined {
    const c = this.inFlight.get(lane)?.get(id)
    if (c == null) return undefined
    this.inFlight.get(lane)!.delete(id)
    this.checkIdle()
    return c
  }

  /** In-flight bytes of one lane. */
  inFlightBytes (lane: string): number {
    let n = 0
    for (const c of this.inFlight.get(lane)?.values() ?? []) n += c.bytes
    return n
  }

  /**
   * Removes a lane and puts its unacknowledged chunks back at the front of the queue.
   * Returns how many chunks were re-queued.
   */
  failLane (lane: string): number {
    const mine = this.inFlight.get(lane)
    if (mine == null) return 0
    this.inFlight.delete(lane)
    const back = [...mine.values()].sort((a, b) => a.id - b.id)
    this.queue.unshift(...back)
    for (const c of back) this.queuedBytesNow += c.bytes
    if (this.inFlight.size === 0 && this.queue.length > 0) {
      this.fail(new NoLanesError())
    }
    this.wakeTakers()
    return back.length
  }

  /** Resolves when nothing is queued or in flight; rejects if the scheduler fails. */
  async idle (): Promise<void> {
    if (this.failure != null) throw this.failure
    if (this.queue.length === 0 && this.pending === 0) return
    await new Promise<void>((resolve, reject) => { this.idleWaiters.push({ resolve, reject }) })
  }

  /** Fails every waiter of {@link idle} with `err`. */
  fail (err: Error): void {
    this.failure ??= err
    for (const w of this.idleWaiters.splice(0)) w.reject(err)
    for (const w of this.belowWaiters.splice(0)) w.resolve()
  }

  /** Stops handing out chunks; waiting takers get undefined. */
  close (): void {
    this.closed = true
    this.wakeTakers()
    for (const w of this.belowWaiters.splice(0)) w.resolve()
  }

  private wakeBelow (): void {
    if (this.belowWaiters.length === 0) return
    const still: typeof this.belowWaiters = []
    for (const w of this.belowWaiters) {
      if (this.queuedBytesNow < w.limit) w.resolve()
      else still.push(w)
    }
    this.belowWaiters = still
  }

  private wakeTakers (): void {
    for (const t of this.takers.splice(0)) t()
  }

  private checkIdle (): void {
    if (this.queue.length === 0 && this.pending === 0) {
      for (const w of this.idleWaiters.splice(0)) w.resolve()
    }
  }
}
