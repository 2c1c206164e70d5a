import { encodeFrameBytes, FrameType, PeerUnreachableError, UnauthorizedPeerError } from '@shoal/core'
import { DEFAULT_STREAMS_PER_CONNECTION, MAX_LANE_STREAMS_PER_CONNECTION, REFUSED_STREAM_LINGER_MS } from './constants.js'
import { localAddressFor } from './interfaces.js'
import { ipOf, listenIps, transportAddress } from './multiaddr-ip.js'
import { streamToLane } from './stream-lane.js'
import type { Connection, Libp2p, Peer, PeerId, Stream } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { Lane } from '@shoal/core'

/** The peer {@link openLanes} connects to. */
export interface LanePeer {
  /** Its peer ID (checked on every connection). */
  peerId: PeerId
  /** Its addresses; one connection is made per distinct IP. Empty: use the peer store. */
  addrs: Multiaddr[]
}

/** Options of {@link openLanes}. */
export interface OpenLanesOptions {
  /** Cancels dialling and stream negotiation. */
  signal?: AbortSignal
  /** Lanes per connection (default 1: one TCP connection per lane). */
  streamsPerConnection?: number
  /** Local address for lane ids; default: the node's listen IP when it has exactly one. */
  localAddress?: string
  /** Largest frame accepted on the lanes; default core's `MAX_FRAME_SIZE`. */
  maxFrameSize?: number
  /**
   * Dial new connections instead of reusing open ones. With one stream per connection each lane
   * then owns its connection, and aborting the lane closes it (used for data lanes, so a lane
   * on a dead link takes its stalled connection with it).
   */
  fresh?: boolean
}

/**
 * Opens `count` lanes to a peer, spread over several connections.
 *
 * Connections: first one per distinct remote IP of `peer.addrs` (an already open connection to
 * that IP is reused), then further connections forced one after another (libp2p merges forced
 * dials to one peer that run in parallel) until there are `ceil(count / streamsPerConnection)`.
 * Lane `i` is a new stream on connection `i mod connections`. Lane ids read
 * `<local ip>><remote ip>#c<connection>s<stream>`.
 *
 * On failure every lane opened so far is aborted and the error is rethrown.
 */
export async function openLanes (node: Libp2p, peer: LanePeer, protocol: string, count: number, opts: OpenLanesOptions = {}): Promise<Lane[]> {
  if (!Number.isInteger(count) || count < 1) throw new RangeError('lane count must be a positive integer')
  const perConnection = opts.streamsPerConnection ?? DEFAULT_STREAMS_PER_CONNECTION
  if (!Number.isInteger(perConnection) || perConnection < 1) throw new RangeError('streamsPerConnection must be a positive integer')
  const connections = await connect(node, peer, Math.ceil(count / perConnection), opts.signal, opts.fresh === true)
  const owned = opts.fresh === true && perConnection === 1
  const nodeIps = listenIps(node)

  const perConnCount = new Array<number>(connections.length).fill(0)
  const streams = await settleAll(Array.from({ length: count }, async (_, i) => {
    const ci = i % connections.length
    const si = perConnCount[ci]!++
    const conn = connections[ci]!
    const stream = await conn.newStream(protocol, {
      maxOutboundStreams: MAX_LANE_STREAMS_PER_CONNECTION,
      ...(opts.signal != null ? { signal: opts.signal } : {})
    })
    return { stream, conn, ci, si }
  }), ({ stream }) => { stream.abort(new Error('opening lanes failed')) })

  return streams.map(({ stream, conn, ci, si }) => {
    const remote = ipOf(conn.remoteAddr)
    const local = opts.localAddress ?? (remote != null ? localAddressFor(remote, nodeIps) : undefined) ?? '*'
    return streamToLane(stream, {
      id: `${local}>${remote ?? '?'}#c${ci}s${si}`,
      ...(local !== '*' ? { localAddress: local } : {}),
      ...(remote != null ? { remoteAddress: remote } : {}),
      ...(opts.maxFrameSize != null ? { maxFrameSize: opts.maxFrameSize } : {}),
      ...(owned ? { onAbort: (err: Error) => { conn.abort(err) } } : {}),
      ...(keepsPlaintext(conn) ? { copyOnSend: true } : {})
    })
  })
}

/**
 * Returns `wanted` open connections to the peer, dialling what is missing one at a time.
 *
 * Addresses the caller gave are dialled, not assumed: an open connection is reused for one of
 * them only if it runs to that very address (so a wrong or dead `--to` address fails even while
 * the peer is connected some other way). A failed dial throws {@link PeerUnreachableError}
 * naming the peer and the addresses tried, and takes back from the peer store what the dial
 * added to it (a peer nobody reached is not a "known peer").
 */
async function connect (node: Libp2p, peer: LanePeer, wanted: number, signal: AbortSignal | undefined, fresh: boolean): Promise<Connection[]> {
  const suffix = `/p2p/${peer.peerId.toString()}`
  const targets = peer.addrs.map(a => a.toString().endsWith(suffix) ? a : a.encapsulate(suffix))
  const ips = [...new Set(targets.map(a => ipOf(a) ?? a.toString()))]
  const spare = fresh ? [] : node.getConnections(peer.peerId).filter(c => c.status === 'open' && c.limits == null)
  const chosen: Connection[] = []
  const dialOpts = { force: true, ...(signal != null ? { signal } : {}) }

  const take = (ip: string | undefined, exact?: Multiaddr): Connection | undefined => {
    const i = spare.findIndex(c => exact != null ? transportAddress(c.remoteAddr) === transportAddress(exact) : ip == null || ipOf(c.remoteAddr) === ip)
    return i === -1 ? undefined : spare.splice(i, 1)[0]
  }
  const targetOf = (ip: string | undefined): Multiaddr | undefined => ip == null ? undefined : targets.find(a => (ipOf(a) ?? a.toString()) === ip)
  const dial = async (ip: string | undefined): Promise<Connection> => {
    const target = targetOf(ip)
    const conn = await dialOrExplain(node, peer, target, dialOpts)
    if (!conn.remotePeer.equals(peer.peerId)) {
      conn.abort(new Error('unexpected peer'))
      throw new UnauthorizedPeerError(`dialled ${peer.peerId.toString()} but reached ${conn.remotePeer.toString()}`)
    }
    return conn
  }

  // One connection per remote interface first (to the address given), then round robin over them.
  for (let i = 0; chosen.length < wanted; i++) {
    const ip = ips.length > 0 ? ips[i % ips.length] : undefined
    chosen.push(i < ips.length ? take(ip, targetOf(ip)) ?? await dial(ip) : take(ip) ?? take(undefined) ?? await dial(ip))
  }
  return chosen
}

/**
 * Dials the peer (at `target`, or wherever the peer store says). A failure becomes
 * {@link PeerUnreachableError} with the peer, the addresses tried and libp2p's error as its
 * cause; the peer store is put back as it was before the dial.
 */
async function dialOrExplain (node: Libp2p, peer: LanePeer, target: Multiaddr | undefined, opts: { force: boolean, signal?: AbortSignal }): Promise<Connection> {
  const before = await node.peerStore.get(peer.peerId).catch(() => undefined)
  try {
    return await node.dial(target ?? peer.peerId, opts)
  } catch (err) {
    // A cancelled dial is the caller's abort, not an unreachable peer.
    if (opts.signal?.aborted === true) throw err
    const known = before?.addresses.map(a => a.multiaddr) ?? []
    const tried = target != null ? [target] : known
    await restorePeerStore(node, peer.peerId, before).catch(() => {})
    const id = peer.peerId.toString()
    throw new PeerUnreachableError(tried.length === 0
      ? `peer ${id} is unreachable: no address is known for it (give one: --to /ip4/<address>/tcp/<port>/p2p/${id}, or start the nodes with --bootstrap)`
      : `peer ${id} is unreachable at ${tried.map(a => transportAddress(a)).join(', ')} (is its node running and listening there?)`, { cause: err })
  }
}

/** Puts a peer's peer store entry back as it was (deleting it if it did not exist). */
async function restorePeerStore (node: Libp2p, peerId: PeerId, before: Peer | undefined): Promise<void> {
  if (before == null) {
    if (await node.peerStore.has(peerId)) await node.peerStore.delete(peerId)
    return
  }
  await node.peerStore.patch(peerId, { multiaddrs: before.addresses.map(a => a.multiaddr) })
}

/** Like `Promise.all`, but on failure waits for every task and undoes the successful ones. */
async function settleAll<T> (tasks: Array<Promise<T>>, undo: (value: T) => void): Promise<T[]> {
  const results = await Promise.allSettled(tasks)
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
  if (failed == null) return results.map(r => (r as PromiseFulfilledResult<T>).value)
  for (const r of results) if (r.status === 'fulfilled') undo(r.value)
  throw failed.reason
}


/** What {@link handleLanes} tells about an accepted lane. */
export interface LaneInfo {
  /** The remote peer ID. */
  peerId: string
  /** The connection the lane runs on. */
  connection: Connection
}

/** Options of {@link handleLanes}. */
export interface HandleLanesOptions {
  /** Allow-list check; a refused peer gets an ABORT frame (`ERR_UNAUTHORIZED_PEER`) and a close. */
  isAllowed: (peerId: string) => boolean
  /** Lanes of this protocol one connection may carry at once; default 256. */
  maxStreamsPerConnection?: number
  /** Local address for lane ids; default: the node's listen IP when it has exactly one. */
  localAddress?: string
  /** Largest frame accepted on the lanes; default core's `MAX_FRAME_SIZE`. */
  maxFrameSize?: number
}

/**
 * Accepts lanes on `protocol`: every stream from an allowed peer becomes a {@link Lane} passed
 * to `onLane` (which must not block). A peer that is not allowed receives one ABORT frame with
 * code `ERR_UNAUTHORIZED_PEER`, then the stream is closed; nothing reaches `onLane`.
 */
export async function handleLanes (node: Libp2p, protocol: string, onLane: (lane: Lane, info: LaneInfo) => void, opts: HandleLanesOptions): Promise<void> {
  const limit = opts.maxStreamsPerConnection ?? MAX_LANE_STREAMS_PER_CONNECTION
  await node.handle(protocol, (stream: Stream, connection: Connection) => {
    const peerId = connection.remotePeer.toString()
    let allowed = false
    try { allowed = opts.isAllowed(peerId) } catch { allowed = false }
    if (!allowed) {
      refuse(stream, peerId)
      return
    }
    const remote = ipOf(connection.remoteAddr)
    const nodeIps = listenIps(node)
    const local = opts.localAddress ?? (remote != null ? localAddressFor(remote, nodeIps) : undefined)
    const lane = streamToLane(stream, {
      id: `${local ?? '*'}<${remote ?? '?'}#${connection.id}s${stream.id}`,
      ...(local != null ? { localAddress: local } : {}),
      ...(remote != null ? { remoteAddress: remote } : {}),
      ...(opts.maxFrameSize != null ? { maxFrameSize: opts.maxFrameSize } : {}),
      ...(keepsPlaintext(connection) ? { copyOnSend: true } : {})
    })
    try {
      onLane(lane, { peerId, connection })
    } catch (err) {
      lane.abort(err as Error)
    }
  }, { maxInboundStreams: limit, maxOutboundStreams: limit })
}

/** Tells a refused peer why (one ABORT frame), then closes; resets if it lingers. */
function refuse (stream: Stream, peerId: string): void {
  const frame = encodeFrameBytes({
    type: FrameType.Abort,
    code: UnauthorizedPeerError.code,
    message: `peer ${peerId} is not allowed on this node`
  })
  const timer = setTimeout(() => { stream.abort(new UnauthorizedPeerError()) }, REFUSED_STREAM_LINGER_MS)
  timer.unref?.()
  stream.addEventListener('close', () => { clearTimeout(timer) })
  void (async () => {
    stream.send(frame)
    await stream.closeRead()
    await stream.close()
  })().catch(err => { stream.abort(err as Error) })
}

/** Whether the connection's encrypter holds on to plaintext after a write returned (TLS does). */
function keepsPlaintext (conn: Connection): boolean {
  return conn.encryption?.startsWith('/tls') === true
}
