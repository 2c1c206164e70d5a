import type { Socket } from 'node:net'
import { nbdErrnoOf } from './errno.js'
import { NbdBackendError, NbdProtocolError } from './errors.js'
import type { ExportView, NbdRequestOptions } from './export.js'
import {
  CMD_DISC, CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, CMD_FLUSH, CMD_READ, CMD_TRIM, CMD_WRITE, CMD_WRITE_ZEROES, NBD_EINVAL,
  NBD_EIO, NBD_ENOSPC, NBD_EPERM, REQUEST_HEADER_BYTES, REQUEST_MAGIC, SIMPLE_REPLY_BYTES, SIMPLE_REPLY_MAGIC, commandName
} from './protocol.js'
import { RequestBudget } from './request-budget.js'
import type { SocketReader } from './socket-reader.js'

/** Limits and hooks of one connection's transmission phase. */
export interface TransmissionOptions {
  maxPayload: number
  maxInFlight: number
  maxInFlightBytes: number
  /** Aborted when the connection closes. */
  signal: AbortSignal
  /** Receives backend failures (the client got an error reply). */
  report: (err: Error) => void
}

interface Request {
  flags: number
  type: number
  /** The client's opaque 8 bytes, echoed in the reply. */
  cookie: Buffer
  offset: number
  length: number
  /** Payload bytes counted in the budget. */
  cost: number
}

/**
 * The transmission phase of one connection: reads requests in order, runs them concurrently
 * against the export and answers each with a simple reply as soon as it is done, so replies go
 * out of order (matched by cookie) and a read waiting for a fetch never holds up the others.
 */
export class Transmission {
  private readonly budget: RequestBudget
  private readonly backendOptions: NbdRequestOptions

  constructor (
    private readonly socket: Socket,
    private readonly reader: SocketReader,
    private readonly view: ExportView,
    private readonly options: TransmissionOptions
  ) {
    this.budget = new RequestBudget(options.maxInFlight, options.maxInFlightBytes)
    this.backendOptions = { signal: options.signal }
    options.signal.addEventListener('abort', () => { this.budget.close() }, { once: true })
  }

  /** Requests in flight. */
  get inFlight (): number { return this.budget.inFlight }

  /** Resolves once every request read so far has been answered (or the connection closed). */
  async drain (): Promise<void> {
    await this.budget.idle()
  }

  /**
   * Serves requests until the client sends `NBD_CMD_DISC` (then waits for the requests in flight
   * to be answered) or closes. Throws {@link NbdProtocolError} on a violation that leaves the
   * stream unreadable; the caller then drops the connection.
   */
  async run (): Promise<void> {
    for (;;) {
      const req = this.parse(await this.reader.read(REQUEST_HEADER_BYTES))
      if (req.type === CMD_DISC) {
        await this.budget.idle()
        return
      }
      if (req.type === CMD_WRITE && req.length > this.options.maxPayload) {
        // The payload cannot be skipped safely without trusting the length: the spec lets the
        // server treat an oversized payload as a denial of service and hang up.
        throw new NbdProtocolError(`WRITE of ${req.length} bytes is larger than the maximum payload of ${this.options.maxPayload}`)
      }
      await this.budget.acquire(req.cost)
      const errno = this.check(req)
      if (req.type === CMD_WRITE) {
        if (errno !== 0) {
          await this.reader.skip(req.length)
          this.reply(req, errno)
          continue
        }
        const data = await this.reader.read(req.length)
        void this.execute(req, data)
        continue
      }
      if (errno !== 0) this.reply(req, errno)
      else void this.execute(req)
    }
  }

  private parse (h: Buffer): Request {
    const magic = h.readUInt32BE(0)
    if (magic !== REQUEST_MAGIC) throw new NbdProtocolError(`bad request magic 0x${magic.toString(16)}`)
    const flags = h.readUInt16BE(4)
    const type = h.readUInt16BE(6)
    const cookie = Buffer.from(h.subarray(8, 16))
    const offset64 = h.readBigUInt64BE(16)
    const length = h.readUInt32BE(24)
    // An offset past the largest safe integer is past every export: clamp it so checks see it out of range.
    const offset = offset64 > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(offset64)
    const cost = (type === CMD_READ || type === CMD_WRITE) && length <= this.options.maxPayload ? length : 0
    return { flags, type, cookie, offset, length, cost }
  }

  /** The error a request gets before it reaches the backend, or 0 if it may go. */
  private check (req: Request): number {
    const v = this.view
    const allowed = CMD_FLAG_FUA | (req.type === CMD_WRITE_ZEROES ? CMD_FLAG_NO_HOLE : 0)
    if ((req.flags & ~allowed) !== 0) return NBD_EINVAL
    const beyond = req.offset > v.size || req.length > v.size - req.offset
    switch (req.type) {
      case CMD_READ:
        return req.length > this.options.maxPayload || beyond ? NBD_EINVAL : 0
      case CMD_WRITE:
        if (v.readOnly) return NBD_EPERM
        return beyond ? NBD_ENOSPC : 0
      case CMD_FLUSH:
        return req.offset !== 0 || req.length !== 0 ? NBD_EINVAL : 0
      case CMD_TRIM:
        if (v.backend.trim === undefined) return NBD_EINVAL
        if (v.readOnly) return NBD_EPERM
        return beyond ? NBD_EINVAL : 0
      case CMD_WRITE_ZEROES:
        if (v.backend.writeZeroes === undefined) return NBD_EINVAL
        if (v.readOnly) return NBD_EPERM
        return beyond ? NBD_ENOSPC : 0
      default:
        // Unknown commands (CACHE, BLOCK_STATUS, ...) were not advertised and carry no payload.
        return NBD_EINVAL
    }
  }

  private async execute (req: Request, payload?: Buffer): Promise<void> {
    const b = this.view.backend
    const o = this.backendOptions
    try {
      let data: Uint8Array | undefined
      switch (req.type) {
        case CMD_READ:
          if (req.length > 0) {
            data = await b.read(req.offset, req.length, o)
            if (data.length !== req.length) throw new Error(`the export's read returned ${data.length} bytes instead of ${req.length}`)
          } else data = new Uint8Array(0)
          break
        case CMD_WRITE:
          if (req.length > 0) await b.write(req.offset, payload as Buffer, o)
          break
        case CMD_FLUSH:
          await b.flush(o)
          break
        case CMD_TRIM:
          if (req.length > 0) await b.trim?.(req.offset, req.length, o)
          break
        case CMD_WRITE_ZEROES:
          if (req.length > 0) await b.writeZeroes?.(req.offset, req.length, o)
          break
      }
      if ((req.flags & CMD_FLAG_FUA) !== 0 && req.type !== CMD_READ && req.type !== CMD_FLUSH) await b.flush(o)
      this.reply(req, 0, data)
    } catch (err) {
      const aborted = this.options.signal.aborted
      const errno = nbdErrnoOf(err, aborted)
      if (!aborted) {
        const name = commandName(req.type)
        const message = `NBD ${name} of ${req.length} bytes at ${req.offset} on export ${JSON.stringify(this.view.name)} failed: ${err instanceof Error ? err.message : String(err)}`
        this.options.report(new NbdBackendError(name, errno === 0 ? NBD_EIO : errno, message, { cause: err }))
      }
      this.reply(req, errno)
    }
  }

  /** Sends a simple reply; the request leaves the budget once the socket took the bytes. */
  private reply (req: Request, errno: number, data?: Uint8Array): void {
    const s = this.socket
    if (s.destroyed || !s.writable) {
      this.budget.release(req.cost)
      return
    }
    const header = Buffer.allocUnsafe(SIMPLE_REPLY_BYTES)
    header.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0)
    header.writeUInt32BE(errno, 4)
    req.cookie.copy(header, 8)
    const done = (): void => { this.budget.release(req.cost) }
    if (errno === 0 && data !== undefined && data.length > 0) {
      // Two writes under cork: one packet train, and no copy of a large payload.
      s.cork()
      s.write(header)
      s.write(data, done)
      s.uncork()
    } else {
      s.write(header, done)
    }
  }
}
