/**
 * The NBD server of a Shoal node.
 *
 * Decision (build, not wrap): no maintained NBD *server* library exists on npm. `nbd-server`
 * (moul/node-nbd-server, 0.0.1, 2014) and `network-block-device` (holepunchto/tiny-nbd-server)
 * are not served by the registry (`npm view` answers 404); the latter's stored source is
 * block-index based (`read(blockIndex)`), has no named exports nor `NBD_OPT_GO`, and `nbd` on npm
 * is an unrelated MVC library. The subset QEMU needs (fixed newstyle handshake, `NBD_OPT_GO`/
 * `INFO`/`EXPORT_NAME`/`LIST`/`ABORT`, simple replies, six commands) is a few hundred lines
 * written from the protocol document (doc/proto.md of NetworkBlockDevice/nbd), so Shoal owns it:
 * out-of-order replies, per-connection bounds and AbortSignals for reads that wait on the
 * network are ours to get right.
 *
 * Structured replies are refused (`NBD_REP_ERR_UNSUP`): QEMU 7.2 falls back to simple replies,
 * and loses only sparse reads and block-status queries, which a staging file cannot answer
 * cheaply anyway.
 */
import { createServer, connect } from 'node:net'
import type { Server, Socket } from 'node:net'
import { lstat, unlink } from 'node:fs/promises'
import { InvalidArgumentError } from '@shoal/core/errors'
import { NbdConnection } from './connection.js'
import { DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_IN_FLIGHT_BYTES, DEFAULT_MAX_PAYLOAD, MAX_SOCKET_PATH } from './constants.js'
import { NbdListenError } from './errors.js'
import type { NbdBackendError, NbdProtocolError } from './errors.js'
import type { NbdExport } from './export.js'

/** Options of {@link createNbdServer}. */
export interface NbdServerInit {
  /** Unix socket path to listen on (at most 107 bytes). A stale socket file left by a dead server is replaced. */
  path: string
  /** Looks an export up by the name a client asks for; undefined refuses the client. May be async. */
  exports: (name: string) => NbdExport | undefined | Promise<NbdExport | undefined>
  /** Names shown to `NBD_OPT_LIST` (`qemu-nbd --list`); without it listing is refused by policy. */
  listExports?: () => Iterable<string> | Promise<Iterable<string>>
  /** Requests one connection may have in flight (default 64). */
  maxInFlight?: number
  /** READ and WRITE payload bytes one connection may have in flight (default 128 MiB). */
  maxInFlightBytes?: number
  /** Largest READ or WRITE payload (default and maximum 32 MiB, at least 512). */
  maxPayload?: number
  /**
   * Told about what went wrong without stopping the server: a backend failure
   * ({@link NbdBackendError}), a client that broke the protocol ({@link NbdProtocolError}), an
   * unknown or invalid export, a listener error. An exception thrown here is ignored.
   */
  onError?: (err: Error) => void
}

/** A running NBD server; see {@link createNbdServer}. */
export interface NbdServer {
  /** Listens on the socket path; resolves once clients can connect. Throws {@link NbdListenError}. */
  start: () => Promise<void>
  /**
   * Closes the listener and every connection (their backend calls see their signal aborted and
   * are not awaited) and removes the socket file. The process can exit afterwards.
   */
  stop: () => Promise<void>
  /** The unix socket path clients connect to. */
  readonly address: string
  /** Clients connected now. */
  readonly connections: number
}

function positiveInteger (name: string, value: number | undefined, fallback: number, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  const v = value ?? fallback
  if (!Number.isSafeInteger(v) || v < min || v > max) throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}, got ${String(value)}`)
  return v
}

/**
 * Creates an NBD server on a unix socket that serves named exports to QEMU (or any NBD client):
 * fixed newstyle handshake, simple replies, READ/WRITE/FLUSH/TRIM/WRITE_ZEROES/DISC, replies out
 * of order as the backends finish. Throws {@link InvalidArgumentError} for a bad option.
 */
export function createNbdServer (init: NbdServerInit): NbdServer {
  if (typeof init.path !== 'string' || init.path === '' || Buffer.byteLength(init.path) > MAX_SOCKET_PATH) {
    throw new InvalidArgumentError(`NBD socket path must be 1 to ${MAX_SOCKET_PATH} bytes, got ${JSON.stringify(init.path)}`)
  }
  if (typeof init.exports !== 'function') throw new InvalidArgumentError('NBD server needs an exports lookup function')
  const maxPayload = positiveInteger('maxPayload', init.maxPayload, DEFAULT_MAX_PAYLOAD, 512, DEFAULT_MAX_PAYLOAD)
  const maxInFlight = positiveInteger('maxInFlight', init.maxInFlight, DEFAULT_MAX_IN_FLIGHT)
  const maxInFlightBytes = positiveInteger('maxInFlightBytes', init.maxInFlightBytes, DEFAULT_MAX_IN_FLIGHT_BYTES)
  const path = init.path
  const report = (err: Error): void => {
    try { init.onError?.(err) } catch { /* a failing observer must not take the server down */ }
  }
  const connections = new Set<NbdConnection>()
  let server: Server | undefined

  const accept = (socket: Socket): void => {
    const conn = new NbdConnection(socket, {
      lookup: init.exports, list: init.listExports, maxPayload, maxInFlight, maxInFlightBytes, report
    })
    connections.add(conn)
    void conn.closed.then(() => { connections.delete(conn) })
    void conn.run()
  }

  return {
    address: path,
    get connections (): number { return connections.size },

    async start (): Promise<void> {
      if (server !== undefined) return
      const s = createServer({ allowHalfOpen: true }, accept)
      s.on('error', report)
      try {
        await listen(s, path)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || !(await removeStaleSocket(path))) {
          throw new NbdListenError(`NBD server could not listen on ${path}: ${(err as Error).message}`, { cause: err })
        }
        try {
          await listen(s, path)
        } catch (again) {
          throw new NbdListenError(`NBD server could not listen on ${path}: ${(again as Error).message}`, { cause: again })
        }
      }
      server = s
    },

    async stop (): Promise<void> {
      const s = server
      if (s === undefined) return
      server = undefined
      const closed = new Promise<void>(resolve => { s.close(() => { resolve() }) })
      for (const c of connections) c.destroy()
      await Promise.all([closed, ...[...connections].map(async c => { await c.closed })])
    }
  }
}

async function listen (server: Server, path: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => { reject(err) }
    server.once('error', onError)
    server.listen(path, () => {
      server.off('error', onError)
      resolve()
    })
  })
}

/** Removes `path` if it is a socket nobody listens on (a crashed server's leftover); true if removed. */
async function removeStaleSocket (path: string): Promise<boolean> {
  try {
    if (!(await lstat(path)).isSocket()) return false
  } catch {
    return false
  }
  const live = await new Promise<boolean>(resolve => {
    const probe = connect(path)
    probe.once('connect', () => { probe.destroy(); resolve(true) })
    probe.once('error', () => { resolve(false) })
  })
  if (live) return false
  await unlink(path).catch(() => undefined)
  return true
}
