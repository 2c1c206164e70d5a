// A deliberately small NBD client on a raw socket, for the tests that need to send what QEMU
// never would (bad magic, oversized lengths, requests past the end) or to see the wire order.
import { connect } from 'node:net'
import type { Socket } from 'node:net'

export const NBD = {
  IHAVEOPT: 0x49484156454f5054n,
  REQUEST_MAGIC: 0x25609513,
  REPLY_MAGIC: 0x67446698,
  OPT_GO: 7,
  OPT_ABORT: 2,
  OPT_STRUCTURED_REPLY: 8,
  REP_ACK: 1,
  REP_INFO: 3,
  REP_ERR_UNSUP: 0x80000001,
  REP_ERR_UNKNOWN: 0x80000006,
  CMD_READ: 0,
  CMD_WRITE: 1,
  CMD_DISC: 2,
  CMD_FLUSH: 3,
  CMD_TRIM: 4,
  CMD_WRITE_ZEROES: 6,
  EPERM: 1,
  EIO: 5,
  EINVAL: 22,
  ENOSPC: 28
} as const

export interface OptionReply { option: number, type: number, data: Buffer }
export interface SimpleReply { errno: number, cookie: bigint, data: Buffer }

export class RawNbdClient {
  private chunks: Buffer[] = []
  private buffered = 0
  private waiter: { bytes: number, resolve: () => void } | undefined
  private ended = false
  /** Resolves when the server closed the connection. */
  readonly closed: Promise<void>

  private constructor (readonly socket: Socket) {
    socket.on('data', (c: Buffer) => {
      this.chunks.push(c)
      this.buffered += c.length
      if (this.waiter !== undefined && this.buffered >= this.waiter.bytes) { const w = this.waiter; this.waiter = undefined; w.resolve() }
    })
    socket.on('error', () => {})
    this.closed = new Promise(resolve => {
      socket.once('close', () => {
        this.ended = true
        const w = this.waiter
        this.waiter = undefined
        w?.resolve()
        resolve()
      })
    })
  }

  static async connect (path: string): Promise<RawNbdClient> {
    const socket = connect(path)
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
    return new RawNbdClient(socket)
  }

  /** The next `bytes` bytes; rejects if the server closed first. */
  async read (bytes: number): Promise<Buffer> {
    if (this.buffered < bytes) {
      if (this.ended) throw new Error('closed by the server')
      await new Promise<void>(resolve => { this.waiter = { bytes, resolve } })
      if (this.buffered < bytes) throw new Error('closed by the server')
    }
    const all = Buffer.concat(this.chunks)
    this.chunks = [all.subarray(bytes)]
    this.buffered -= bytes
    return all.subarray(0, bytes)
  }

  write (data: Buffer): void { this.socket.write(data) }

  /** Reads the greeting and sends fixed-newstyle client flags (with NO_ZEROES). */
  async greet (clientFlags = 3): Promise<{ handshakeFlags: number }> {
    const g = await this.read(18)
    if (g.readBigUInt64BE(0) !== 0x4e42444d41474943n || g.readBigUInt64BE(8) !== NBD.IHAVEOPT) throw new Error('bad greeting')
    const f = Buffer.alloc(4)
    f.writeUInt32BE(clientFlags)
    this.write(f)
    return { handshakeFlags: g.readUInt16BE(16) }
  }

  sendOption (option: number, data = Buffer.alloc(0), magic: bigint = NBD.IHAVEOPT): void {
    const h = Buffer.alloc(16)
    h.writeBigUInt64BE(magic, 0)
    h.writeUInt32BE(option, 8)
    h.writeUInt32BE(data.length, 12)
    this.write(Buffer.concat([h, data]))
  }

  async optionReply (): Promise<OptionReply> {
    const h = await this.read(20)
    if (h.readBigUInt64BE(0) !== 0x3e889045565a9n) throw new Error('bad option reply magic')
    const length = h.readUInt32BE(16)
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: length > 0 ? await this.read(length) : Buffer.alloc(0) }
  }

  /** NBD_OPT_GO for `name`: the export's size and transmission flags, or the error reply type. */
  async go (name: string): Promise<{ size: bigint, flags: number } | { error: number }> {
    const n = Buffer.from(name)
    const data = Buffer.alloc(4 + n.length + 2)
    data.writeUInt32BE(n.length, 0)
    n.copy(data, 4)
    this.sendOption(NBD.OPT_GO, data)
    let info: { size: bigint, flags: number } | undefined
    for (;;) {
      const r = await this.optionReply()
      if (r.type === NBD.REP_INFO && r.data.readUInt16BE(0) === 0) info = { size: r.data.readBigUInt64BE(2), flags: r.data.readUInt16BE(10) }
      else if (r.type === NBD.REP_ACK) return info ?? { error: -1 }
      else if (r.type >= 0x80000000) return { error: r.type }
    }
  }

  /** Greets and enters transmission with `name` (throws if refused). */
  async open (name: string): Promise<{ size: bigint, flags: number }> {
    await this.greet()
    const r = await this.go(name)
    if ('error' in r) throw new Error(`GO refused: 0x${r.error.toString(16)}`)
    return r
  }

  request (type: number, offset: bigint | number, length: number, opts: { cookie?: bigint, flags?: number, data?: Buffer, magic?: number } = {}): void {
    const h = Buffer.alloc(28)
    h.writeUInt32BE(opts.magic ?? NBD.REQUEST_MAGIC, 0)
    h.writeUInt16BE(opts.flags ?? 0, 4)
    h.writeUInt16BE(type, 6)
    h.writeBigUInt64BE(opts.cookie ?? 1n, 8)
    h.writeBigUInt64BE(BigInt(offset), 16)
    h.writeUInt32BE(length, 24)
    this.write(opts.data !== undefined ? Buffer.concat([h, opts.data]) : h)
  }

  /** Reads one simple reply; `dataLength` bytes follow a successful read. */
  async reply (dataLength: (cookie: bigint) => number = () => 0): Promise<SimpleReply> {
    const h = await this.read(16)
    if (h.readUInt32BE(0) !== NBD.REPLY_MAGIC) throw new Error(`bad reply magic 0x${h.readUInt32BE(0).toString(16)}`)
    const errno = h.readUInt32BE(4)
    const cookie = h.readBigUInt64BE(8)
    const n = errno === 0 ? dataLength(cookie) : 0
    return { errno, cookie, data: n > 0 ? await this.read(n) : Buffer.alloc(0) }
  }

  close (): void { this.socket.destroy() }
}
