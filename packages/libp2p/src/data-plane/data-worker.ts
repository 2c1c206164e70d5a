/**
 * A data worker: a thread that owns data lanes' TLS connections and moves their payload between
 * the sockets and the image files itself, so that encryption, framing and file I/O of the data
 * path run beside the node's main thread, one worker per core. See protocol.ts for what it and
 * the main thread say to each other.
 */
import { closeSync, openSync, writevSync } from 'node:fs'
import { connect, createServer } from 'node:tls'
import type { ConnectionOptions, Server, TLSSocket } from 'node:tls'
import { parentPort } from 'node:worker_threads'
import { peerIdFromString } from '@libp2p/peer-id'
import { verifyPeerCertificate } from '@libp2p/tls/utils'
import { BufferPool, encodeDataFrame, executeLoadPlan, FrameDecoder, InvalidFrameError, LaneClosedError, toErrorInfo } from '@shoal/core'
import type { Run } from '@shoal/core'
import { DATA_LANE_ALPN } from './protocol.js'
import type { FromWorker, ToWorker } from './protocol.js'

/** Received bytes a lane may hold (waiting for a decision) before it stops reading. */
const MAX_HELD_BYTES = 32 * 1024 * 1024
/** The same before the lane joined a session (its peer may not have one): a source's first chunks. */
const MAX_EARLY_BYTES = 4 * 1024 * 1024
/** Bytes forwarded to the session's thread and not read there yet before the lane stops reading. */
const MAX_FORWARDED_BYTES = 4 * 1024 * 1024
/** Unsent bytes a lane queues in its socket before a DATA send waits for the socket to drain. */
const SEND_HIGH_WATER = 4 * 1024 * 1024
/** Most buffers in one writev (Linux IOV_MAX is 1024). */
const MAX_IOV = 1024

const port = parentPort!
const post = (m: FromWorker): void => { port.postMessage(m) }

interface Sink { files: Array<{ fd: number, path: string, unitSize: number, units: number } | undefined> }
interface Held { id: number, header: Extract<FromWorker, { op: 'header' }>['header'], payloadBytes: number, pieces: Uint8Array[] }

interface LaneState {
  socket: TLSSocket
  stream: FrameDecoder
  /** Destination: where DATA frames go; until it is set they wait in `early`. */
  sink?: Sink
  early: Held[]
  /** Frames asked about, by id. */
  asked: Map<number, Held>
  held: number
  nextId: number
  /** Source: files read by load plans, by path (closed with the lane: a path may be replaced). */
  readFds: Map<string, number>
  /** Frames forwarded to the session's thread that it has not read yet (bytes). */
  forwarded: number
  /** Sends (DATA and others) run one after another. */
  sending: Promise<void>
  ended: boolean
}

const lanes = new Map<string, LaneState>()
const servers: Server[] = []
let identity: { cert: string, key: string } | undefined
let handshakeTimeoutMs = 10_000
let maxFrameSize: number | undefined
/** DATA frames wait for a sink (a session's data lane) instead of going to the session's thread. */
let holdData = true
let nextIncoming = 1
let pool: BufferPool | undefined

port.on('message', (m: ToWorker) => {
  try {
    handle(m)
  } catch (err) {
    if ('lane' in m) fail(m.lane, err)
  }
})

function handle (m: ToWorker): void {
  switch (m.op) {
    case 'init':
      identity = { cert: m.cert, key: m.key }
      handshakeTimeoutMs = m.handshakeTimeoutMs
      maxFrameSize = m.maxFrameSize
      holdData = m.holdData
      void listen(m.listen).then(listening => { post({ op: 'ready', listening }) }, (err: Error) => { post({ op: 'failed', error: toErrorInfo(err) }) })
      return
    case 'dial': dial(m); return
    case 'send': {
      const l = lanes.get(m.lane)
      if (l == null || l.ended) return
      l.sending = l.sending.then(async () => {
        if (m.frame instanceof Uint8Array) l.socket.write(m.frame)
        else {
          l.socket.cork()
          for (const part of m.frame) l.socket.write(part)
          l.socket.uncork()
        }
        await roomIn(l)
        post({ op: 'taken', lane: m.lane, seq: m.seq })
      })
      return
    }
    case 'consumed': {
      const l = lanes.get(m.lane)
      if (l == null) return
      l.forwarded -= m.bytes
      flow(l)
      return
    }
    case 'data': {
      const l = lanes.get(m.lane)
      if (l == null || l.ended) return
      l.sending = l.sending.then(async () => { await sendData(m.lane, l, m) })
      return
    }
    case 'sink': {
      const l = lanes.get(m.lane)
      if (l == null || l.ended) return
      l.sink = { files: m.files.map(f => f == null ? undefined : { ...f, fd: openSync(f.path, 'r+') }) }
      for (const h of l.early.splice(0)) ask(m.lane, l, h)
      return
    }
    case 'admit': {
      const l = lanes.get(m.lane)
      const h = l?.asked.get(m.id)
      if (l == null || h == null) return
      l.asked.delete(m.id)
      release(l, h)
      if (m.ticket == null || l.sink == null) return
      let error: { code?: string, message: string } | undefined
      try {
        writePieces(l.sink, h)
      } catch (err) {
        error = { code: (err as NodeJS.ErrnoException).code, message: (err as Error).message }
      }
      post({ op: 'written', lane: m.lane, ticket: m.ticket, ...(error != null ? { error } : {}) })
      return
    }
    case 'refuse':
      lanes.get(m.lane)?.socket.destroy()
      return
    case 'close': {
      const l = lanes.get(m.lane)
      // Flushes what was sent, then closes.
      if (l != null) void l.sending.finally(() => { l.socket.end() })
      return
    }
    case 'abort':
      // A reset, not a FIN: the peer must see the lane fail, not end.
      if (lanes.get(m.lane) != null) reset(lanes.get(m.lane)!.socket)
  }
}

async function listen (hosts: string[]): Promise<Array<{ host: string, port: number }>> {
  const out: Array<{ host: string, port: number }> = []
  for (const host of hosts) {
    const server = createServer({
      cert: identity!.cert, key: identity!.key, requestCert: true, rejectUnauthorized: false,
      minVersion: 'TLSv1.3', ALPNProtocols: [DATA_LANE_ALPN], handshakeTimeout: handshakeTimeoutMs
    })
    // Bounds what unauthenticated peers can hold open here; lanes per session are bounded by the node.
    server.maxConnections = 256
    server.on('secureConnection', (socket) => { accepted(socket) })
    // A failed handshake (no certificate, wrong protocol) concerns that connection only.
    server.on('tlsClientError', () => {})
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(0, host, () => { server.off('error', reject); resolve() })
    })
    servers.push(server)
    const a = server.address()
    if (a != null && typeof a === 'object') out.push({ host, port: a.port })
  }
  return out
}

function accepted (socket: TLSSocket): void {
  socket.pause()
  const lane = `in${nextIncoming++}`
  verifyPeerCertificate(new Uint8Array(socket.getPeerCertificate().raw ?? []))
    .then(peer => {
      if (socket.destroyed) return
      track(lane, socket)
      post({ op: 'incoming', lane, peer: peer.toString(), local: socket.localAddress, remote: socket.remoteAddress })
    }, () => { socket.destroy() })
}

function dial (m: Extract<ToWorker, { op: 'dial' }>): void {
  let settled = false
  // tls.connect passes socket.connect() options such as localAddress on (the lane's NIC).
  const options: ConnectionOptions & { localAddress?: string } = {
    host: m.host, port: m.port, localAddress: m.localAddress, cert: identity!.cert, key: identity!.key,
    // The peer's certificate is self-signed; its libp2p identity is checked below instead.
    rejectUnauthorized: false, checkServerIdentity: () => undefined, minVersion: 'TLSv1.3', ALPNProtocols: [DATA_LANE_ALPN]
  }
  const socket = connect(options)
  const timer = setTimeout(() => { socket.destroy(new LaneClosedError(`no TLS handshake with ${m.host}:${m.port} within ${m.timeoutMs} ms`)) }, m.timeoutMs)
  const early = (err: Error): void => {
    clearTimeout(timer)
    if (settled) return
    settled = true
    post({ op: 'closed', lane: m.lane, error: toErrorInfo(new LaneClosedError(`cannot open a data lane to ${m.host}:${m.port}: ${err.message}`)) })
  }
  socket.once('error', early)
  socket.once('secureConnect', () => {
    socket.pause()
    verifyPeerCertificate(new Uint8Array(socket.getPeerCertificate().raw ?? []), peerIdFromString(m.peer))
      .then(() => {
        clearTimeout(timer)
        if (settled || socket.destroyed) return
        settled = true
        socket.off('error', early)
        track(m.lane, socket)
        post({ op: 'opened', lane: m.lane, local: socket.localAddress, remote: socket.remoteAddress })
      }, (err: Error) => { socket.destroy(); early(new Error(`the peer is not ${m.peer} (${err.message})`)) })
  })
}

/** Starts reading a verified lane and reports its end. */
function track (lane: string, socket: TLSSocket): void {
  socket.setNoDelay(true)
  const l: LaneState = { socket, stream: new FrameDecoder(maxFrameSize != null ? { maxFrameSize } : {}), early: [], asked: new Map(), held: 0, nextId: 1, readFds: new Map(), forwarded: 0, sending: Promise.resolve(), ended: false }
  lanes.set(lane, l)
  socket.on('data', (chunk: Buffer) => {
    try {
      l.stream.push(chunk)
      for (let item = l.stream.nextItem(); item != null; item = l.stream.nextItem()) {
        if (item.kind === 'frame' || (!holdData && l.sink == null)) {
          // Not a payload this worker writes: the session's thread reads it (bounded, see flow()).
          // A view of a larger read buffer would be cloned whole into the message: copy it to size.
          const frame = item.kind === 'frame'
            ? (item.bytes.byteLength === item.bytes.buffer.byteLength ? item.bytes : item.bytes.slice())
            : Buffer.concat([encodeDataFrame(item.header, item.pieces)].flat())
          l.forwarded += frame.byteLength
          post({ op: 'frame', lane, frame })
          continue
        }
        const h: Held = { id: l.nextId++, header: item.header, payloadBytes: item.payloadBytes, pieces: item.pieces }
        l.held += h.payloadBytes
        if (l.sink == null) l.early.push(h)
        else ask(lane, l, h)
      }
      flow(l)
    } catch (err) {
      fail(lane, err)
    }
  })
  let error: Error | undefined
  socket.on('error', (err) => { error = err })
  socket.on('close', () => {
    l.ended = true
    lanes.delete(lane)
    for (const fd of l.readFds.values()) closeSync(fd)
    for (const f of l.sink?.files ?? []) if (f != null) closeSync(f.fd)
    post({ op: 'closed', lane, ...(error != null ? { error: toErrorInfo(error instanceof InvalidFrameError ? error : new LaneClosedError(error.message)) } : {}) })
  })
  socket.resume()
}

function ask (lane: string, l: LaneState, h: Held): void {
  l.asked.set(h.id, h)
  post({ op: 'header', lane, id: h.id, header: h.header, payloadBytes: h.payloadBytes })
}

function release (l: LaneState, h: Held): void {
  l.held -= h.payloadBytes
  flow(l)
}

/**
 * Stops reading a lane while it holds too much — frames waiting for a decision or a sink, or
 * frames forwarded to the session's thread and not read there — and reads again below half.
 */
function flow (l: LaneState): void {
  const holding = l.held + l.stream.pending
  const limit = l.sink == null ? MAX_EARLY_BYTES : MAX_HELD_BYTES
  if (holding > limit || l.forwarded > MAX_FORWARDED_BYTES) l.socket.pause()
  else if (holding <= limit / 2 && l.forwarded <= MAX_FORWARDED_BYTES / 2 && l.socket.isPaused()) l.socket.resume()
}

/** Resolves once the socket's send queue is below the high-water mark (or the socket is gone). */
async function roomIn (l: LaneState): Promise<void> {
  if (l.socket.writableLength <= SEND_HIGH_WATER || l.socket.destroyed) return
  await new Promise<void>(resolve => {
    const done = (): void => { l.socket.off('drain', done); l.socket.off('close', done); resolve() }
    l.socket.on('drain', done)
    l.socket.on('close', done)
  })
}

/** Ends a socket with a TCP reset, so that the peer sees an error rather than an orderly end. */
function reset (socket: TLSSocket): void {
  const s = socket as TLSSocket & { resetAndDestroy?: () => void }
  try {
    if (typeof s.resetAndDestroy === 'function') { s.resetAndDestroy(); return }
  } catch {}
  socket.destroy()
}

/** Writes a DATA frame's payload pieces at its runs' offsets, with as few system calls as it can. */
function writePieces (sink: Sink, h: Held): void {
  const file = sink.files[h.header.area]
  if (file == null) throw new InvalidFrameError('data for an area the session does not have')
  let pi = 0
  let po = 0
  for (const r of h.header.runs as Run[]) {
    let need = r.count * file.unitSize
    let pos = r.start * file.unitSize
    let iov: Uint8Array[] = []
    const flush = (): void => {
      let rest = iov
      while (rest.length > 0) {
        let n = writevSync(file.fd, rest, pos)
        pos += n
        // A short write: skip what was written and go on with the rest.
        while (n > 0 && rest.length > 0) {
          if (n >= rest[0]!.byteLength) { n -= rest[0]!.byteLength; rest = rest.slice(1) } else { rest = [rest[0]!.subarray(n), ...rest.slice(1)]; n = 0 }
        }
      }
      iov = []
    }
    while (need > 0) {
      const p = h.pieces[pi]!
      const k = Math.min(p.byteLength - po, need)
      iov.push(p.subarray(po, po + k))
      need -= k
      po += k
      if (po === p.byteLength) { pi++; po = 0 }
      if (iov.length === MAX_IOV) flush()
    }
    flush()
  }
}

/** Reads a chunk as its plan says and sends it; answers `taken` once the socket has room again. */
async function sendData (lane: string, l: LaneState, m: Extract<ToWorker, { op: 'data' }>): Promise<void> {
  try {
    const { plan, header } = m
    const unitSize = plan.unitSize
    l.socket.cork()
    if (plan.kind === 'shadow') {
      // Sent straight from the shadow (shared memory): it changes only in scans, which wait for
      // every chunk of the round to be acknowledged, so the bytes stay put until TLS took them.
      const parts = header.runs.map(r => Buffer.from(plan.shadow, r.start * unitSize, r.count * unitSize))
      for (const p of encodeDataFrame(header, parts)) l.socket.write(p)
    } else {
      const bytes = header.runs.reduce((n, r) => n + r.count * unitSize, 0)
      pool ??= new BufferPool(bytes)
      const buf = pool.acquire(bytes)
      executeLoadPlan(plan, header.runs, buf, (path) => {
        let fd = l.readFds.get(path)
        if (fd == null) { fd = openSync(path, 'r'); l.readFds.set(path, fd) }
        return fd
      })
      const [head] = encodeDataFrame(header, [buf])
      l.socket.write(head!)
      l.socket.write(buf, () => { pool!.release(buf) })
    }
    l.socket.uncork()
    await roomIn(l)
    post({ op: 'taken', lane, seq: m.seq })
  } catch (err) {
    fail(lane, err)
  }
}

/** Ends a lane because of `err` (a malformed frame, a failed read): the main thread learns why. */
function fail (lane: string, err: unknown): void {
  const l = lanes.get(lane)
  if (l == null) return
  l.socket.destroy(err instanceof Error ? err : new Error(String(err)))
}
