import { connect } from 'node:net'
import type { Socket } from 'node:net'
import { AbortedError, TimeoutError } from '@shoal/core'
import { QMP_COMMAND_TIMEOUT_MS, QMP_CONNECT_TIMEOUT_MS } from './constants.js'
import { QmpError } from './errors.js'

/** An asynchronous event QEMU sent (`STOP`, `RESUME`, `MIGRATION`, `SHUTDOWN`, ...). */
export interface QmpEvent { event: string, data?: Record<string, unknown>, timestamp?: { seconds: number, microseconds: number } }

/** Options of {@link QmpClient.connect}. */
export interface QmpConnectOptions {
  /** How long to keep trying while QEMU has not opened the socket yet (default 15 s). */
  timeoutMs?: number
  /** How long one command may take (default 30 s). */
  commandTimeoutMs?: number
  signal?: AbortSignal
}

interface Pending { resolve: (v: unknown) => void, reject: (e: Error) => void, timer: NodeJS.Timeout, command: string }

/**
 * A small typed client of the QEMU Machine Protocol over a unix socket: JSON objects, one per
 * line; the greeting, `qmp_capabilities`, then commands answered in order, tagged with an `id`,
 * interleaved with events. (The npm `qemu-qmp` package is untyped and unmaintained since 2013.)
 */
export class QmpClient {
  private buf = ''
  private nextId = 1
  private readonly pending = new Map<number, Pending>()
  private readonly listeners = new Set<(e: QmpEvent) => void>()
  private closedError: Error | undefined
  /** Resolves when the connection closes (QEMU exited or the client was closed). */
  readonly closed: Promise<void>
  /** QEMU's version from the greeting, e.g. `7.2.22`. */
  version = ''

  private constructor (private readonly socket: Socket, private readonly commandTimeoutMs: number) {
    this.closed = new Promise(resolve => {
      socket.once('close', () => {
        this.closedError ??= new QmpError('QMP connection closed (QEMU exited?)')
        for (const p of this.pending.values()) { clearTimeout(p.timer); p.reject(this.closedError) }
        this.pending.clear()
        resolve()
      })
    })
    socket.on('error', (err) => { this.closedError = new QmpError(`QMP socket: ${err.message}`) })
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => { this.onData(chunk) })
  }

  /** Connects to QEMU's QMP socket (retrying while it does not exist yet) and negotiates capabilities. */
  static async connect (path: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const deadline = Date.now() + (opts.timeoutMs ?? QMP_CONNECT_TIMEOUT_MS)
    for (;;) {
      if (opts.signal?.aborted === true) throw new AbortedError()
      try {
        return await QmpClient.tryConnect(path, opts)
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        const retriable = code === 'ENOENT' || code === 'ECONNREFUSED'
        if (!retriable || Date.now() > deadline) {
          throw retriable ? new TimeoutError(`QMP socket ${path} did not open in time`) : err
        }
        await new Promise(resolve => setTimeout(resolve, 20))
      }
    }
  }

  private static async tryConnect (path: string, opts: QmpConnectOptions): Promise<QmpClient> {
    const socket = connect(path)
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve)
      socket.once('error', reject)
    })
    const client = new QmpClient(socket, opts.commandTimeoutMs ?? QMP_COMMAND_TIMEOUT_MS)
    try {
      const greeting = await client.waitGreeting(opts.timeoutMs ?? QMP_CONNECT_TIMEOUT_MS)
      const v = greeting.version?.qemu
      if (v != null) client.version = `${v.major}.${v.minor}.${v.micro}`
      await client.execute('qmp_capabilities')
      return client
    } catch (err) {
      client.close()
      throw err
    }
  }

  private greeting: ((g: { version?: { qemu?: { major: number, minor: number, micro: number } } }) => void) | undefined

  private async waitGreeting (timeoutMs: number): Promise<{ version?: { qemu?: { major: number, minor: number, micro: number } } }> {
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => { reject(new TimeoutError('no QMP greeting')) }, timeoutMs)
      this.greeting = (g) => { clearTimeout(timer); resolve(g) }
      void this.closed.then(() => { clearTimeout(timer); reject(this.closedError) })
    })
  }

  private onData (chunk: string): void {
    this.buf += chunk
    let nl: number
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim()
      this.buf = this.buf.slice(nl + 1)
      if (line === '') continue
      let msg: Record<string, unknown>
      try { msg = JSON.parse(line) as Record<string, unknown> } catch {
        this.fail(new QmpError(`QMP sent a line that is not JSON: ${line.slice(0, 80)}`))
        return
      }
      this.dispatch(msg)
    }
    if (this.buf.length > 16 * 1024 * 1024) this.fail(new QmpError('QMP line longer than 16 MiB'))
  }

  private dispatch (msg: Record<string, unknown>): void {
    if ('QMP' in msg) { this.greeting?.(msg.QMP as never); this.greeting = undefined; return }
    if (typeof msg.event === 'string') { for (const l of this.listeners) l(msg as unknown as QmpEvent); return }
    const id = msg.id
    const p = typeof id === 'number' ? this.pending.get(id) : undefined
    if (p == null) return
    this.pending.delete(id as number)
    clearTimeout(p.timer)
    if ('error' in msg) {
      const e = msg.error as { class?: string, desc?: string }
      p.reject(new QmpError(`${p.command}: ${e.desc ?? 'error'}`, e.class))
    } else {
      p.resolve(msg.return)
    }
  }

  private fail (err: Error): void {
    this.closedError = err
    this.socket.destroy()
  }

  /** Runs a command; resolves with its `return` value, rejects with {@link QmpError}. */
  async execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedError != null || this.socket.destroyed) throw this.closedError ?? new QmpError('QMP connection closed')
    const id = this.nextId++
    return await new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new TimeoutError(`QMP ${command} not answered in ${this.commandTimeoutMs} ms`))
      }, this.commandTimeoutMs)
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer, command })
      this.socket.write(JSON.stringify(args == null ? { execute: command, id } : { execute: command, arguments: args, id }) + '\n')
    })
  }

  /** Calls `listener` for every event until the returned function is called. */
  onEvent (listener: (e: QmpEvent) => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  /** Closes the connection (QEMU keeps running). */
  close (): void {
    this.closedError ??= new QmpError('QMP client closed')
    this.socket.destroy()
  }
}
