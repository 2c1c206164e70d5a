import type { Connection, PeerId } from '@libp2p/interface'
import { ipOf, isLoopback, listenIps, localAddressFor, openLanes, parseEndpoint } from '@shoal/libp2p'
import type { DataPlane, ShoalLibp2p } from '@shoal/libp2p'
import { PeerUnreachableError } from '@shoal/core'
import type { Lane, LaneStats } from '@shoal/core'
import type { Multiaddr } from '@multiformats/multiaddr'
import { LANE_PROTOCOL } from './constants.js'

/** A peer to migrate to: its ID and the addresses we know for it. */
export interface TargetPeer { peerId: PeerId, addrs: Multiaddr[] }

const IDENTIFY_TIMEOUT_MS = 5000
const REOPEN_TIMEOUT_MS = 3000

/**
 * The peer's addresses that make a lane: one per remote IP that shares a network with one of our
 * addresses (so each lane leaves through its own NIC), learned from identify over `connection`.
 * Loopback addresses are used only when the target itself was given as a loopback address.
 */
export async function lanePaths (libp2p: ShoalLibp2p, target: TargetPeer, connection: Connection | undefined): Promise<Multiaddr[]> {
  let announced: Multiaddr[] = []
  if (connection != null) {
    try {
      announced = (await libp2p.services.identify.identify(connection, { signal: AbortSignal.timeout(IDENTIFY_TIMEOUT_MS) })).listenAddrs
    } catch {
      announced = (await libp2p.peerStore.get(target.peerId).catch(() => undefined))?.addresses.map(a => a.multiaddr) ?? []
    }
  }
  // A peer given by its ID alone: the address its connection reached stands for the one given.
  const given = target.addrs.length > 0 ? target.addrs : connection != null ? [connection.remoteAddr] : []
  const wantLoopback = given.some(a => { const ip = ipOf(a); return ip != null && isLoopback(ip) })
  const ours = listenIps(libp2p)
  const byIp = new Map<string, Multiaddr>()
  for (const a of [...given, ...announced]) {
    const ip = ipOf(a)
    if (ip == null || byIp.has(ip)) continue
    if (isLoopback(ip) !== wantLoopback) continue
    if (!wantLoopback && localAddressFor(ip, ours) == null) continue
    byIp.set(ip, a)
  }
  // Fall back to what we were given: a routed peer shares no subnet with us, but one path works.
  if (byIp.size > 0) return [...byIp.values()]
  if (given.length === 0) throw new PeerUnreachableError(`no address of peer ${target.peerId.toString()} is known to open data lanes to`)
  return given
}

/** Opens `count` data lanes spread over `paths` (or throws when none could be opened). */
export type DataLaneOpener = (paths: Multiaddr[], count: number, signal?: AbortSignal) => Promise<Lane[]>

/** Data lanes as libp2p streams, each on a connection of its own. */
export function libp2pDataLanes (libp2p: ShoalLibp2p, target: TargetPeer): DataLaneOpener {
  return async (paths, count, signal) => await openLanes(libp2p, { peerId: target.peerId, addrs: paths }, LANE_PROTOCOL, count, { signal, fresh: true })
}

/**
 * Lanes on this node's data workers to a peer's data workers at `endpoints` (a destination's
 * ACCEPT, a replica's VOLUME_SUMMARY): lane i takes path i mod paths (its NIC pair), an endpoint
 * of the peer on that path's address (spread over its workers), and worker i mod workers here.
 */
export function workerLanes (plane: DataPlane, libp2p: ShoalLibp2p, target: TargetPeer, endpoints: readonly string[]): DataLaneOpener {
  const parsed = endpoints.map(parseEndpoint)
  const peer = target.peerId.toString()
  return async (paths, count, signal) => {
    const ours = listenIps(libp2p)
    const dials = Array.from({ length: count }, async (_, i) => {
      const ip = ipOf(paths[i % paths.length]!)
      const onPath = parsed.filter(e => e.host === ip)
      const candidates = onPath.length > 0 ? onPath : parsed
      const e = candidates[Math.floor(i / paths.length) % candidates.length]!
      const localAddress = isLoopback(e.host) ? undefined : localAddressFor(e.host, ours)
      return await plane.dial({ peer, host: e.host, port: e.port, localAddress, worker: i % plane.size, signal })
    })
    const settled = await Promise.allSettled(dials)
    const lanes = settled.flatMap(r => r.status === 'fulfilled' ? [r.value] : [])
    if (lanes.length === 0) throw (settled.find(r => r.status === 'rejected') as PromiseRejectedResult).reason
    return lanes
  }
}

/**
 * Replacement lanes for paths that lost theirs (a NIC went down and came back): one new lane per
 * path with fewer active lanes than it started with. A path still down fails fast or times out.
 */
export function laneReplenisher (open: DataLaneOpener, paths: Multiaddr[], initial: Lane[]): (active: LaneStats[]) => Promise<Lane[]> {
  const wanted = new Map<string, number>()
  for (const l of initial) if (l.remoteAddress != null) wanted.set(l.remoteAddress, (wanted.get(l.remoteAddress) ?? 0) + 1)
  return async (active) => {
    const fresh: Lane[] = []
    for (const path of paths) {
      const ip = ipOf(path)
      if (ip == null) continue
      const have = active.filter(l => l.remoteAddress === ip).length
      const missing = (wanted.get(ip) ?? 0) - have
      if (missing <= 0) continue
      try {
        fresh.push(...await open([path], missing, AbortSignal.timeout(REOPEN_TIMEOUT_MS)))
      } catch {
        // Still down: the next retry tries again.
      }
    }
    return fresh
  }
}
