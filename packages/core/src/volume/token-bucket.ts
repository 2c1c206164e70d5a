/**
 * A shared byte budget per second (token bucket): `take(n)` resolves once `n` bytes fit. Used to
 * cap what a node spends serving blocks to others, so a replica does not starve its own workload.
 */
export class TokenBucket {
  private tokens: number
  private last = performance.now()
  private queue: Promise<void> = Promise.resolve()

  /** `rate` bytes per second, bursts up to `burst` bytes (default: a tenth of a second's worth, at least 1 MiB). */
  constructor (readonly rate: number, private readonly burst = Math.max(rate / 10, 1024 * 1024)) {
    if (!(rate > 0) || !Number.isFinite(rate)) throw new RangeError('rate must be a positive number of bytes per second')
    this.tokens = this.burst
  }

  /** Waits until `n` bytes may go; callers are served in order. */
  async take (n: number, signal?: AbortSignal): Promise<void> {
    const mine = this.queue.then(async () => {
      this.refill()
      this.tokens -= n
      if (this.tokens < 0) {
        await new Promise<void>(resolve => setTimeout(resolve, (-this.tokens / this.rate) * 1000))
        signal?.throwIfAborted()
      }
    })
    this.queue = mine.catch(() => {})
    await mine
  }

  private refill (): void {
    const now = performance.now()
    this.tokens = Math.min(this.burst, this.tokens + (now - this.last) / 1000 * this.rate)
    this.last = now
  }
}
