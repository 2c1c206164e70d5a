import { isIP } from 'node:net'
import { networkInterfaces } from 'node:os'

/** One local IPv4 address with its prefix length. */
export interface LocalAddress {
  address: string
  prefix: number
  /** Interface name (`eth1`, `lo`). */
  iface: string
  internal: boolean
}

function v4ToInt (ip: string): number {
  return ip.split('.').reduce((n, o) => (n * 256) + Number(o), 0) >>> 0
}

/** True when `ip` lies in `base/prefix` (IPv4 only; IPv6 compares whole addresses). */
export function inSubnet (ip: string, base: string, prefix: number): boolean {
  if (isIP(ip) !== 4 || isIP(base) !== 4) return ip === base
  if (prefix === 0) return true
  const mask = prefix >= 32 ? 0xffffffff : (~((1 << (32 - prefix)) - 1)) >>> 0
  return ((v4ToInt(ip) & mask) >>> 0) === ((v4ToInt(base) & mask) >>> 0)
}

/** The IPv4 addresses of this host's (or network namespace's) interfaces that are up. */
export function localAddresses (): LocalAddress[] {
  const out: LocalAddress[] = []
  for (const [iface, addrs] of Object.entries(networkInterfaces())) {
    for (const a of addrs ?? []) {
      if (a.family !== 'IPv4' || a.cidr == null) continue
      out.push({ address: a.address, prefix: Number(a.cidr.split('/')[1]), iface, internal: a.internal })
    }
  }
  return out
}

/**
 * The local address to bind an outgoing connection to `target` to: the address on the same
 * network (same subnet) as the target, among the addresses this node listens on (all interface
 * addresses when it listens on a wildcard). Undefined when none shares the target's network.
 *
 * An address the node listens on that is not an interface address itself (127.0.0.3 on `lo`,
 * whose interface address is 127.0.0.1/8) takes the prefix of the interface whose subnet holds it.
 */
export function localAddressFor (target: string, listenIps: readonly string[], locals: readonly LocalAddress[] = localAddresses()): string | undefined {
  const wildcard = listenIps.length === 0 || listenIps.some(ip => ip === '0.0.0.0' || ip === '::')
  const candidates: Array<{ address: string, prefix: number }> = wildcard
    ? locals.filter(l => !l.internal || isLoopback(target))
    : listenIps.flatMap(ip => {
      const home = locals.find(l => inSubnet(ip, l.address, l.prefix))
      return home != null ? [{ address: ip, prefix: home.prefix }] : []
    })
  return candidates.find(c => inSubnet(target, c.address, c.prefix))?.address
}

/** True for 127.0.0.0/8 and ::1. */
export function isLoopback (ip: string): boolean {
  return ip === '::1' || (isIP(ip) === 4 && ip.startsWith('127.'))
}
