import { prometheusMetrics } from '@libp2p/prometheus-metrics'
import type { Registry } from 'prom-client'
import { InvalidArgumentError } from '@shoal/core'
import { randomBytes } from 'node:crypto'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { bootstrap } from '@libp2p/bootstrap'
import { identify } from '@libp2p/identify'
import { mdns } from '@libp2p/mdns'
import { preSharedKey } from '@libp2p/pnet'
import { tls } from '@libp2p/tls'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import { isIP } from 'node:net'
import {
  INBOUND_CONNECTION_THRESHOLD, MAX_CONNECTIONS, STREAM_READ_BUFFER_LIMIT, YAMUX_STREAM_WINDOW
} from './constants.js'
import { withGatheredWrites } from './gathered-writes.js'
import { localAddressFor } from './interfaces.js'
import { ipOf } from './multiaddr-ip.js'
import type { Identify } from '@libp2p/identify'
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'

/** The libp2p node type Shoal runs (identify is the only service). */
export type ShoalLibp2p = Libp2p<{ identify: Identify }>

/** Options of {@link createShoalLibp2p}. */
export interface ShoalLibp2pInit {
  /** libp2p's own metrics (connections, streams, protocol traffic) go to this prom-client registry. */
  metricsRegistry?: Registry
  /** The node identity (see `loadOrCreateIdentity`). */
  privateKey: PrivateKey
  /** Multiaddrs to listen on, e.g. `/ip4/127.0.0.1/tcp/0`. */
  listen: string[]
  /** Peers (multiaddrs ending in `/p2p/<id>`) to connect to at start; bootstrap is off when empty. */
  bootstrap?: string[]
  /** Find peers on the LAN by mDNS. Off by default: it multicasts. */
  mdns?: boolean
  /**
   * A private network: the swarm key file's bytes (`/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex
   * digits; see {@link generateSwarmKey}). Every connection is then encrypted with it below Noise,
   * and peers without the same key cannot connect at all. Costs an XSalsa20 pass per byte.
   */
  privateNetworkKey?: Uint8Array
  /**
   * Source address for outgoing TCP connections (binds the socket to one interface). Applied
   * only to targets of the same address family.
   */
  localAddress?: string
  /** Yamux stream window in bytes (initial = maximum); default 16 MiB, at most 4 MiB on a node that may speak TLS. */
  streamWindow?: number
  /** Hand each batch of encrypted bytes to the socket as one gathered write; default true. */
  gatherWrites?: boolean
  /**
   * Connection encryption, in order of preference (peers negotiate the first they share):
   * `noise` (ChaCha20-Poly1305) and `tls` (TLS 1.3 on node:tls, OpenSSL's AES-GCM). Default
   * `['tls', 'noise']`, chosen by measurement: a 1 GiB migration over 4 lanes on loopback ran at
   * 85.8 MB/s and 23.2 CPU-s/GiB (both sides) with TLS against 63.3 MB/s and 30.4 with Noise
   * (`pnpm bench transfer` with `SHOAL_BENCH_ENCRYPTERS`); Noise stays offered for peers without TLS.
   */
  encrypters?: Array<'noise' | 'tls'>
}

/**
 * Creates (but does not start) a libp2p node for Shoal: TCP + TLS 1.3 (or Noise) + Yamux, identify, bootstrap
 * and mDNS when asked for.
 *
 * The node is not started so that protocol handlers (`handleLanes`) are registered before it
 * listens: a peer cannot reach a protocol that is not there yet. Call `await node.start()`
 * afterwards and `await node.stop()` to release every socket.
 *
 * Tuning (see the package README for the measurements):
 * - yamux stream window 16 MiB from the first byte (no slow start), so 1–4 MiB frames travel in
 *   one yamux frame and a paused reader's buffer stays bounded by the window;
 * - streams may buffer 32 MiB unread before libp2p resets them (the default 4 MiB is smaller than
 *   the window and would reset a lane whose consumer is briefly slow);
 * - inbound connections per IP and second raised to 100 so lanes can open several connections
 *   to one peer; discovered peers are never dialled automatically (libp2p 3 does not auto-dial,
 *   bootstrap dials its listed peers once);
 * - the connection monitor measures RTT but never aborts a connection on a late ping: a lane
 *   moving gigabytes delays pings behind its data.
 */
export async function createShoalLibp2p (init: ShoalLibp2pInit): Promise<ShoalLibp2p> {
  const encrypters = checkEncrypters(init.encrypters ?? DEFAULT_ENCRYPTERS)
  // Over TLS, yamux windows of 8 MiB and more stalled connections carrying large frames both ways
  // (measured: 16 MiB stalled, 4 MiB did not), so a node that may speak TLS keeps them at 4 MiB.
  const window = Math.min(init.streamWindow ?? YAMUX_STREAM_WINDOW, encrypters.includes('tls') ? TLS_STREAM_WINDOW : Infinity)
  const peerDiscovery: DiscoveryFactory[] = []
  if (init.bootstrap != null && init.bootstrap.length > 0) peerDiscovery.push(bootstrap({ list: init.bootstrap }))
  if (init.mdns === true) peerDiscovery.push(mdns())

  return createLibp2p({
    start: false,
    privateKey: init.privateKey,
    addresses: { listen: init.listen },
    transports: [bindLocalAddress(tcp(), init.localAddress, init.listen)],
    connectionEncrypters: encrypters.map(e => e === 'tls' ? tls() : init.gatherWrites === false ? noise() : withGatheredWrites(noise())),
    streamMuxers: [yamux({
      streamOptions: {
        initialStreamWindowSize: window,
        maxStreamWindowSize: window,
        maxReadBufferLength: Math.max(STREAM_READ_BUFFER_LIMIT, 2 * window)
      }
    })],
    peerDiscovery,
    ...(init.privateNetworkKey != null ? { connectionProtector: preSharedKey({ psk: checkSwarmKey(init.privateNetworkKey) }) } : {}),
    connectionManager: {
      maxConnections: MAX_CONNECTIONS,
      inboundConnectionThreshold: INBOUND_CONNECTION_THRESHOLD,
      maxIncomingPendingConnections: 64
    },
    connectionMonitor: { abortConnectionOnPingFailure: false },
    ...(init.metricsRegistry != null ? { metrics: prometheusMetrics({ registry: init.metricsRegistry, collectDefaultMetrics: false }) } : {}),
    services: { identify: identify() }
  })
}

/** Checks a swarm key file's format, so a bad key is refused at start, not at the first dial. */
function checkSwarmKey (key: Uint8Array): Uint8Array {
  const lines = new TextDecoder().decode(key).split(/\r?\n/).map(l => l.trim())
  if (lines[0] !== '/key/swarm/psk/1.0.0/' || lines[1] !== '/base16/' || !/^[0-9a-fA-F]{64}$/.test(lines[2] ?? '')) {
    throw new InvalidArgumentError('bad private network key: expected a swarm key file (/key/swarm/psk/1.0.0/, /base16/, 64 hex digits); make one with `shoal swarm-key`')
  }
  return key
}

/** A new random swarm key file's bytes for a private network (give every node of the cluster the same one). */
export function generateSwarmKey (): Uint8Array {
  return new TextEncoder().encode(`/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString('hex')}`)
}

/** Throws unless `list` names one or more known encrypters, each once. */
function checkEncrypters (list: readonly string[]): Array<'noise' | 'tls'> {
  if (list.length === 0 || new Set(list).size !== list.length || !list.every(e => e === 'noise' || e === 'tls')) {
    throw new InvalidArgumentError(`encrypters must list tls and/or noise, each once, in order of preference; got ${JSON.stringify(list)}`)
  }
  return list as Array<'noise' | 'tls'>
}

/** Largest yamux window on a node that may speak TLS (see createShoalLibp2p). */
const TLS_STREAM_WINDOW = 4 * 1024 * 1024

/** Encrypters offered when not told otherwise, in order of preference. */
const DEFAULT_ENCRYPTERS: Array<'noise' | 'tls'> = ['tls', 'noise']

type TransportFactory = ReturnType<typeof tcp>
type DiscoveryFactory = NonNullable<Parameters<typeof createLibp2p>[0]>['peerDiscovery'] extends Array<infer F> | undefined ? F : never

/**
 * Wraps a TCP transport so that each outgoing socket binds to a local address: `localAddress`
 * when given (same address family only), otherwise the address this node listens on that shares
 * the target's network, so a connection to a peer's NIC k leaves through our NIC k. libp2p's dial
 * queue drops per-dial options, so this is done here.
 */
function bindLocalAddress (factory: TransportFactory, localAddress: string | undefined, listen: readonly string[]): TransportFactory {
  const family = localAddress != null ? isIP(localAddress) : 0
  if (localAddress != null && family === 0) throw new TypeError(`localAddress ${localAddress} is not an IP address`)
  const listenIps = listen.map(a => /^\/ip[46]\/([^/]+)/.exec(a)?.[1]).filter((ip): ip is string => ip != null)
  return (components) => {
    const transport = factory(components)
    const dial = transport.dial.bind(transport)
    transport.dial = async (ma: Multiaddr, options) => {
      const host = ipOf(ma)
      if (host == null) return dial(ma, options)
      const bind = localAddress != null ? (isIP(host) === family ? localAddress : undefined) : localAddressFor(host, listenIps)
      return bind == null ? dial(ma, options) : dial(ma, { ...options, localAddress: bind } as typeof options)
    }
    return transport
  }
}
