import type { Multiaddr } from '@multiformats/multiaddr'

/** The IPv4/IPv6 address of a multiaddr (`/ip4/127.0.0.2/tcp/1` → `127.0.0.2`), if it has one. */
export function ipOf (ma: Multiaddr): string | undefined {
  return ma.getComponents().find(c => c.name === 'ip4' || c.name === 'ip6')?.value
}

/** The multiaddr without its `/p2p/<id>` part, as a string (to compare transport addresses). */
export function transportAddress (ma: Multiaddr): string {
  return ma.getComponents().filter(c => c.name !== 'p2p').map(c => c.value == null ? `/${c.name}` : `/${c.name}/${c.value}`).join('')
}

/** The IPs this node listens on (a wildcard listener is expanded to every interface address). */
export function listenIps (node: { getMultiaddrs: () => Multiaddr[] }): string[] {
  return node.getMultiaddrs().map(ipOf).filter((ip): ip is string => ip != null)
}
