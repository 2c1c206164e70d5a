import { InvalidArgumentError } from '@shoal/core'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { LanePeer } from '@shoal/libp2p'

/** A peer ID, or a multiaddr ending in /p2p/<peer id>, as a peer to open lanes to. */
export function resolvePeer (to: string, what = 'peer'): LanePeer {
  try {
    if (to.startsWith('/')) {
      const ma = multiaddr(to)
      const id = ma.getComponents().findLast(c => c.name === 'p2p')?.value
      if (id == null) throw new Error('no /p2p/<peer id> in it')
      return { peerId: peerIdFromString(id), addrs: [ma] }
    }
    return { peerId: peerIdFromString(to), addrs: [] }
  } catch (err) {
    throw new InvalidArgumentError(`bad ${what} ${JSON.stringify(to)}: expected a peer ID or a multiaddr ending in /p2p/<peer id> (${(err as Error).message})`)
  }
}

/** Throws {@link InvalidArgumentError} unless `p` is a peer ID. */
export function parsePeerId (p: string): void {
  try { peerIdFromString(p) } catch { throw new InvalidArgumentError(`not a peer ID: ${JSON.stringify(p)}`) }
}

/** Parses a listen or bootstrap address, or throws an error that names it and says what is wrong. */
export function checkMultiaddr (addr: string, what: 'listen' | 'bootstrap', needPeer: boolean): void {
  let components: Array<{ name: string, value?: string }>
  try {
    components = multiaddr(addr).getComponents()
  } catch (err) {
    throw new InvalidArgumentError(`bad ${what} address ${JSON.stringify(addr)}: ${(err as Error).message}`)
  }
  const names = components.map(c => c.name)
  if (!['ip4', 'ip6', 'dns', 'dns4', 'dns6'].includes(names[0] ?? '') || names[1] !== 'tcp') {
    throw new InvalidArgumentError(`bad ${what} address ${JSON.stringify(addr)}: expected /ip4/<address>/tcp/<port>${needPeer ? '/p2p/<peer id>' : ''}`)
  }
  if (needPeer && !names.includes('p2p')) throw new InvalidArgumentError(`bad ${what} address ${JSON.stringify(addr)}: it must end in /p2p/<peer id>`)
}
