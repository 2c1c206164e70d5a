import { ConnectionClosed } from './socket-reader.js'

/**
 * Bounds what one connection has in flight: a count of requests and the bytes of their
 * payloads. A request is in flight from its header until its reply has been handed to the
 * socket. The request that finds the connection idle always goes, so a single request larger
 * than the byte bound cannot stall a connection.
 */
export class RequestBudget {
  private count = 0
  private bytes = 0
  private wakeUp: (() => void) | undefined
  private idleWaiters: Array<() => void> = []
  private closed = false

  constructor (private readonly maxCount: number, private readonly maxBytes: number) {}

  /** Requests in flight. */
  get inFlight (): number { return this.count }

  /** Waits until a request of `bytes` payload bytes fits, then counts it. */
  async acquire (bytes: number): Promise<void> {
    while (!this.fits(bytes)) {
      if (this.closed) throw new ConnectionClosed()
      await new Promise<void>(resolve => { this.wakeUp = resolve })
    }
    this.count++
    this.bytes += bytes
  }

  /** Ends a request counted by {@link RequestBudget.acquire} with the same `bytes`. */
  release (bytes: number): void {
    this.count--
    this.bytes -= bytes
    this.wake()
  }

  /** Resolves once nothing is in flight. */
  async idle (): Promise<void> {
    if (this.count === 0 || this.closed) return
    await new Promise<void>(resolve => { this.idleWaiters.push(resolve) })
  }

  /** The connection is gone: wake every waiter (acquire throws {@link ConnectionClosed}). */
  close (): void {
    this.closed = true
    this.wake()
    for (const w of this.idleWaiters.splice(0)) w()
  }

  private fits (bytes: number): boolean {
    if (this.closed) return false
    if (this.count === 0) return true
    return this.count < this.maxCount && this.bytes + bytes <= this.maxBytes
  }

  private wake (): void {
    const w = this.wakeUp
    this.wakeUp = undefined
    w?.()
    if (this.count === 0) for (const i of this.idleWaiters.splice(0)) i()
  }
}
