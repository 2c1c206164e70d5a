/** Peer arguments (IDs, multiaddrs) are parsed where libp2p lives; re-exported for the node's users. */
export { checkMultiaddr, parsePeerId, PEER_ADDRESS_RULE, resolvePeer } from '@shoal/libp2p'
