import { InvalidArgumentError } from '@shoal/core'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { LanePeer } from './lanes.js'

/** What a valid peer argument looks like, for error messages. */
export const PEER_ADDRESS_RULE = 'a peer ID (12D3KooW…) or a multiaddr ending in /p2p/<peer id>, e.g. /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW…'

/**
 * A peer ID, or a multiaddr ending in /p2p/<peer id>, as a peer to open lanes to. Throws
 * {@link InvalidArgumentError} naming `what` and {@link PEER_ADDRESS_RULE}; the parser's own
 * text (multibase, varint) is kept as the cause, not shown: it does not tell a user what to type.
 */
export function resolvePeer (to: string, what = 'peer'): LanePeer {
  const bad = (why: string, cause?: unknown): InvalidArgumentError =>
    new InvalidArgumentError(`bad ${what} ${JSON.stringify(to)}: ${why}; expected ${PEER_ADDRESS_RULE}`, cause != null ? { cause } : undefined)
  if (to.startsWith('/')) {
    let ma
    try { ma = multiaddr(to) } catch (err) { throw bad('not a valid multiaddr', err) }
    const id = ma.getComponents().findLast(c => c.name === 'p2p')?.value
    if (id == null) throw bad('the address does not end in /p2p/<peer id>')
    try { return { peerId: peerIdFromString(id), addrs: [ma] } } catch (err) { throw bad(`${JSON.stringify(id)} is not a peer ID`, err) }
  }
  try { return { peerId: peerIdFromString(to), addrs: [] } } catch (err) { throw bad('not a peer ID', err) }
}

/** Throws {@link InvalidArgumentError} unless `p` is a peer ID. */
export function parsePeerId (p: string): void {
  try { peerIdFromString(p) } catch (err) { throw new InvalidArgumentError(`not a peer ID: ${JSON.stringify(p)} (a peer ID looks like 12D3KooW…)`, { cause: err }) }
}

/** Parses a listen or bootstrap address, or throws an error that names it and says what is wrong. */
export function checkMultiaddr (addr: string, what: 'listen' | 'bootstrap', needPeer: boolean): void {
  let components: Array<{ name: string, value?: string }>
  try {
    components = multiaddr(addr).getComponents()
  } catch (err) {
    throw new InvalidArgumentError(`bad ${what} address ${JSON.stringify(addr)}: expected /ip4/<address>/tcp/<port>${needPeer ? '/p2p/<peer id>' : ''}`, { cause: err })
  }
  const names = components.map(c => c.name)
  if (!['ip4', 'ip6', 'dns', 'dns4', 'dns6'].includes(names[0] ?? '') || names[1] !== 'tcp') {
    throw new InvalidArgumentError(`bad ${what} address ${JSON.stringify(addr)}: expected /ip4/<address>/tcp/<port>${needPeer ? '/p2p/<peer id>' : ''}`)
  }
  if (needPeer && !names.includes('p2p')) throw new InvalidArgumentError(`bad ${what} address ${JSON.stringify(addr)}: it must end in /p2p/<peer id>`)
}
