/**
 * @packageDocumentation
 * Shoal's libp2p transport: a node factory (TCP + Noise + Yamux, identify, optional bootstrap and
 * mDNS), a persistent Ed25519 identity, and lanes — core's ordered frame channels — carried by
 * libp2p streams spread over several connections per peer.
 *
 * @example
 * ```ts
 * import { createShoalLibp2p, loadOrCreateIdentity, handleLanes, openLanes } from '@shoal/libp2p'
 *
 * const a = await createShoalLibp2p({ privateKey: await loadOrCreateIdentity('/tmp/a'), listen: ['/ip4/127.0.0.1/tcp/0'] })
 * const b = await createShoalLibp2p({ privateKey: await loadOrCreateIdentity('/tmp/b'), listen: ['/ip4/127.0.0.2/tcp/0'] })
 * await handleLanes(b, '/shoal/lane/1', (lane) => {
 *   void (async () => { for await (const frame of lane) await lane.send(frame) })() // echo
 * }, { isAllowed: (peer) => peer === a.peerId.toString() })
 * await Promise.all([a.start(), b.start()])
 *
 * const lanes = await openLanes(a, { peerId: b.peerId, addrs: b.getMultiaddrs() }, '/shoal/lane/1', 4)
 * await lanes[0].send(frameBytes)
 * await Promise.all(lanes.map(async l => l.close()))
 * await Promise.all([a.stop(), b.stop()])
 * ```
 */
import './polyfill.js'

export { loadOrCreateIdentity, peerIdOf } from './identity.js'
export { createShoalLibp2p, generateSwarmKey } from './node-factory.js'
export type { ShoalLibp2p, ShoalLibp2pInit } from './node-factory.js'
export { streamToLane } from './stream-lane.js'
export type { StreamLaneInit } from './stream-lane.js'
export { openLanes, handleLanes } from './lanes.js'
export type { LanePeer, OpenLanesOptions, HandleLanesOptions, LaneInfo } from './lanes.js'
export { InvalidIdentityError } from './errors.js'
export * from './constants.js'
export { localAddresses, localAddressFor, inSubnet, isLoopback } from './interfaces.js'
export type { LocalAddress } from './interfaces.js'
export { ipOf, listenIps } from './multiaddr-ip.js'
export { checkMultiaddr, parsePeerId, PEER_ADDRESS_RULE, resolvePeer } from './peer-address.js'
export { createLibp2pLaneTransport } from './lane-transport.js'
export { createDataPlane } from './data-plane/data-plane.js'
export type { DataPlane, DataPlaneInit, DataListener, DataDialOptions } from './data-plane/data-plane.js'
export { DATA_LANE_ALPN } from './data-plane/protocol.js'
export { formatEndpoint, parseEndpoint } from './data-plane/endpoint.js'
