import type { Socket } from 'node:net'
import { negotiate } from './handshake.js'
import type { HandshakeContext } from './handshake.js'
import { ConnectionClosed, SocketReader } from './socket-reader.js'
import { Transmission } from './transmission.js'

/** Limits of a connection, resolved from the server's options. */
export interface ConnectionOptions extends HandshakeContext {
  maxInFlight: number
  maxInFlightBytes: number
}

/**
 * One client: the handshake, then the transmission phase, then the close. Whatever happens
 * (a protocol violation, a reset, a failing backend) ends here: nothing escapes to the process.
 */
export class NbdConnection {
  private readonly abort = new AbortController()
  private readonly reader: SocketReader
  private transmission: Transmission | undefined
  /** Resolves once the socket closed. */
  readonly closed: Promise<void>

  constructor (private readonly socket: Socket, private readonly options: ConnectionOptions) {
    // Bytes waiting unread beyond one maximal request would only be the client running ahead.
    this.reader = new SocketReader(socket, options.maxPayload + 64 * 1024)
    socket.on('error', () => { /* reset or broken pipe: 'close' follows and ends the connection */ })
    this.closed = new Promise(resolve => {
      socket.once('close', () => {
        this.abort.abort()
        resolve()
      })
    })
  }

  /** Serves the client until it leaves or breaks the protocol. Never rejects. */
  async run (): Promise<void> {
    try {
      const view = await negotiate(this.socket, this.reader, this.options)
      if (view !== undefined) {
        this.transmission = new Transmission(this.socket, this.reader, view, {
          maxPayload: this.options.maxPayload,
          maxInFlight: this.options.maxInFlight,
          maxInFlightBytes: this.options.maxInFlightBytes,
          signal: this.abort.signal,
          report: this.options.report
        })
        await this.transmission.run()
      }
      this.socket.end()
    } catch (err) {
      if (err instanceof ConnectionClosed) {
        // The client half-closed (or vanished): finish what it asked for, then close our side.
        await this.transmission?.drain()
        this.socket.end()
        return
      }
      this.options.report(err instanceof Error ? err : new Error(String(err)))
      this.socket.destroy()
    }
  }

  /** Drops the client at once; requests in flight see their signal aborted. */
  destroy (): void {
    this.abort.abort()
    this.socket.destroy()
  }
}
