/**
 * A byte budget per second (token bucket), shared by whoever holds it: `take(n)` resolves once
 * `n` bytes fit. Caps what a node spends serving blocks, and a migration's total and per-lane
 * bandwidth; the rate can change on the fly (adaptive pacing). `Infinity` means no cap.
 */
export class TokenBucket {
  private tokens: number
  private burst: number
  private last = performance.now()
  private queue: Promise<void> = Promise.resolve()

  /**
   * `rate` bytes per second; bursts up to a tenth of a second's worth (at least 1 MiB), or up to
   * `fixedBurst` units when given (a bucket that counts requests rather than bytes).
   */
  constructor (private current: number, private readonly fixedBurst?: number) {
    if (!(current > 0)) throw new RangeError('rate must be a positive number of bytes per second')
    this.burst = fixedBurst ?? TokenBucket.burstOf(current)
    this.tokens = this.burst
  }

  /** Bytes per second now. */
  get rate (): number { return this.current }

  /** Changes the rate (bytes already owed keep their place in the queue). */
  setRate (rate: number): void {
    if (!(rate > 0)) throw new RangeError('rate must be a positive number of bytes per second')
    this.refill()
    this.current = rate
    this.burst = this.fixedBurst ?? TokenBucket.burstOf(rate)
    this.tokens = Math.min(this.tokens, this.burst)
  }

  /** Waits until `n` bytes may go; callers are served in order. */
  async take (n: number, signal?: AbortSignal): Promise<void> {
    const mine = this.queue.then(async () => {
      if (this.current === Infinity) return
      this.refill()
      this.tokens -= n
      while (this.tokens < 0 && this.current !== Infinity) {
        signal?.throwIfAborted()
        await new Promise<void>(resolve => setTimeout(resolve, Math.min(1000, (-this.tokens / this.current) * 1000)))
        this.refill()
      }
    })
    this.queue = mine.catch(() => {})
    await mine
  }

  private refill (): void {
    const now = performance.now()
    if (this.current !== Infinity) this.tokens = Math.min(this.burst, this.tokens + (now - this.last) / 1000 * this.current)
    this.last = now
  }

  private static burstOf (rate: number): number { return rate === Infinity ? Infinity : Math.max(rate / 10, 1024 * 1024) }
}
