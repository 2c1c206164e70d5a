import type { LaneTransport } from '@shoal/core'
import type { Libp2p } from '@libp2p/interface'
import { handleLanes, openLanes } from './lanes.js'
import { resolvePeer } from './peer-address.js'

/**
 * Core's {@link LaneTransport} on a libp2p node: a peer is a peer ID or a multiaddr ending in
 * `/p2p/<peer id>`; each lane is a stream (one connection per lane unless told otherwise), framed
 * by core's `FrameDecoder`; refusal, frame limits and back-pressure (yamux windows) as the
 * contract says. Multi-NIC lane placement (one lane per interface pair, replacements on failure)
 * stays with the node's lane paths, which use libp2p's identify directly.
 */
export function createLibp2pLaneTransport (node: Libp2p): LaneTransport {
  return {
    peerId: node.peerId.toString(),
    async openLanes (peer, protocol, count, opts = {}) {
      return await openLanes(node, resolvePeer(peer), protocol, count, {
        ...(opts.signal != null ? { signal: opts.signal } : {}),
        ...(opts.maxFrameSize != null ? { maxFrameSize: opts.maxFrameSize } : {})
      })
    },
    async handle (protocol, onLane, opts) {
      await handleLanes(node, protocol, (lane, info) => { onLane(lane, { peerId: info.peerId }) }, opts)
    }
  }
}
