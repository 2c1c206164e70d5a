/**
 * One switchover at a time among the migrations that share a gate (the migrations of a host
 * evacuation, which leave through the same links and CPUs). The migration holding it is in its
 * pause (final round, device state, verification, commit); the others keep copying rounds until
 * it is free, and their lanes wait while another holds it, so a pause has the links and the CPU
 * to itself and pauses never overlap.
 */
export class SwitchoverGate {
  private holder: symbol | undefined
  private waiting: Array<() => void> = []

  /** Takes the gate if it is free (or already ours). */
  tryAcquire (who: symbol): boolean {
    if (this.holder != null && this.holder !== who) return false
    this.holder = who
    return true
  }

  /** Waits until the gate is ours. */
  async acquire (who: symbol, signal?: AbortSignal): Promise<void> {
    while (!this.tryAcquire(who)) await this.changed(signal)
  }

  /** Frees the gate if `who` holds it. */
  release (who: symbol): void {
    if (this.holder !== who) return
    this.holder = undefined
    const w = this.waiting
    this.waiting = []
    for (const wake of w) wake()
  }

  /** True while another migration holds the gate. */
  heldByOther (who: symbol): boolean { return this.holder != null && this.holder !== who }

  /** Waits while another migration holds the gate. */
  async whileHeldByOther (who: symbol, signal?: AbortSignal): Promise<void> {
    while (this.heldByOther(who)) await this.changed(signal)
  }

  /** Resolves at the next release, after `ms` if given, or rejects when `signal` aborts. */
  async changed (signal?: AbortSignal, ms?: number): Promise<void> {
    signal?.throwIfAborted()
    await new Promise<void>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined
      const done = (): void => {
        if (timer != null) clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        resolve()
      }
      const onAbort = (): void => {
        if (timer != null) clearTimeout(timer)
        this.waiting = this.waiting.filter(w => w !== done)
        reject(signal!.reason)
      }
      this.waiting.push(done)
      if (ms != null) timer = setTimeout(() => { this.waiting = this.waiting.filter(w => w !== done); done() }, ms)
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }
}
