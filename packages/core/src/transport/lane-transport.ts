import type { Lane } from './lane.js'

/** What a transport tells about an accepted lane. */
export interface AcceptedLaneInfo {
  /** The remote peer's ID (authenticated by the transport). */
  peerId: string
}

/** Options of {@link LaneTransport.handle}. */
export interface HandleLaneOptions {
  /**
   * Allow-list check. A refused peer's lane receives one ABORT frame with code
   * `ERR_UNAUTHORIZED_PEER` and is closed; nothing reaches the handler.
   */
  isAllowed: (peerId: string) => boolean
  /** Lanes of this protocol one connection may carry at once (where the transport has connections). */
  maxStreamsPerConnection?: number
  /** Largest frame accepted on these lanes; a larger one fails the lane. Default core's `MAX_FRAME_SIZE`. */
  maxFrameSize?: number
}

/** Options of {@link LaneTransport.openLanes}. */
export interface OpenLaneOptions {
  signal?: AbortSignal
  /** Largest frame accepted on these lanes; default core's `MAX_FRAME_SIZE`. */
  maxFrameSize?: number
}

/**
 * How a node opens and accepts lanes: the seam between Shoal's sessions and a network. libp2p
 * implements it (`createLibp2pLaneTransport` in `@shoal/libp2p`), the in-memory network of
 * `createMemoryNetwork` implements it for tests, and `test/transport/compliance.ts` is the suite
 * every implementation passes.
 *
 * The contract every implementation keeps (and the compliance suite checks):
 * - **Frames**: a lane carries whole frames, in order, byte-exact; a frame larger than the
 *   receiver's `maxFrameSize` fails that lane on the receiving side.
 * - **Buffer ownership**: `Lane.send(bytes)` owns `bytes` only until its promise resolves; after
 *   that the caller may reuse or change them and the peer still receives what was passed. Before
 *   it resolves the caller must not touch them. Frames a receiver gets are its own: the transport
 *   never writes into a frame after yielding it.
 * - **Back-pressure**: when the receiver does not read, `send` stops resolving after a bounded
 *   amount of buffered data (the transport's window), and resolves again as the receiver reads.
 * - **Close**: `close()` delivers every frame sent before it, then the peer's iterator ends.
 * - **Abort**: `abort()` fails the lane at once on both sides: pending and later sends reject
 *   with `LaneClosedError` (or the given error on this side), the peer's iterator throws.
 * - **Refusal**: a lane to a peer that refuses the opener reads one ABORT frame
 *   (`ERR_UNAUTHORIZED_PEER`) and then ends.
 */
export interface LaneTransport {
  /** This node's peer ID. */
  readonly peerId: string
  /**
   * Opens `count` lanes to `peer` (a peer ID, or an address the transport understands) on
   * `protocol`. Rejects (and opens nothing) when the peer cannot be reached or does not speak it.
   */
  openLanes: (peer: string, protocol: string, count: number, opts?: OpenLaneOptions) => Promise<Lane[]>
  /** Accepts lanes on `protocol`; `onLane` must not block. */
  handle: (protocol: string, onLane: (lane: Lane, info: AcceptedLaneInfo) => void, opts: HandleLaneOptions) => Promise<void>
}
