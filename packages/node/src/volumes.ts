import { mkdirSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import {
  BlockClient, BlockStore, checkBlockSize, DEFAULT_BLOCK_SIZE, fetchFromSources, InvalidArgumentError, serveBlocks, TokenBucket, UnknownVolumeError, zeroHash
} from '@shoal/core'
import type { BlockSource, CacheSources, CacheSourcesRequest, FetchItem, Lane, LocalBlocks, VolumeSummary } from '@shoal/core'
import { openLanes } from '@shoal/libp2p'
import { lanePaths, workerLanes } from './lane-paths.js'
import type { DataPlane, LanePeer, ShoalLibp2p } from '@shoal/libp2p'
import { BLOCKS_PROTOCOL, DEFAULT_BLOCK_REQUESTS_PER_SEC, DEFAULT_REPLICA_STREAMS, DISCOVERY_CONCURRENCY, DISCOVERY_TIMEOUT_MS } from './constants.js'
import type { Logger } from './logger.js'
import { resolvePeer } from './peer-address.js'
import { KeptCaches } from './kept-caches.js'
import { KeyedQueue } from './keyed-queue.js'

/** A volume this node holds blocks of. */
export interface VolumeInfo { id: string, blockSize: number, blockCount: number, held: number }

/** A peer found to hold (part of) a volume, with open block lanes to it. */
export interface Replica {
  peerId: string
  summary: VolumeSummary
  /** The lane the summary came on (hash lists go there too). */
  control: BlockClient
  /** The lanes blocks are fetched on: on both sides' data workers when both have them. */
  clients: BlockClient[]
  /** Which: `data-workers` (TLS lanes of both nodes' data workers) or `libp2p` (streams on the main thread). */
  via: 'data-workers' | 'libp2p'
}

/** What {@link Volumes} needs of the node's data workers. */
export interface VolumesDataPlane {
  /** The node's data plane, once started (block lanes fall back to libp2p streams without it). */
  plane: () => DataPlane | undefined
  /** Where this node serves block lanes on its data workers (`host:port`). */
  endpoints: () => string[]
}

/** What {@link Volumes.pull} did. */
export interface PullReport {
  id: string
  blockSize: number
  blockCount: number
  /** Bytes fetched from replicas. */
  bytes: number
  ms: number
  /** Per replica: bytes and blocks served, corrupt blocks discarded. */
  sources: Record<string, { bytes: number, blocks: number, corrupt: number, via: Replica['via'] }>
  /** Bytes not fetched: zero blocks, repeated blocks, blocks copied from this node's other volumes. */
  dedupBytes: number
  /** Blocks no replica could serve (the new replica does not hold them). */
  leftover: number
  /** Replicas dropped, with the reason. */
  dropped: Record<string, string>
}

/** Options of {@link Volumes.findReplicas}. */
export interface FindReplicasOptions {
  /** Peers to ask (peer IDs or multiaddrs with /p2p/); default: every known peer serving blocks. */
  peers?: string[]
  /** Peers never to ask (e.g. the migrating source). */
  exclude?: string[]
  /** Only replicas of exactly this content (SHA-256 of the hash list). */
  hashesDigest?: Uint8Array
  blockSize?: number
  blockCount?: number
  signal?: AbortSignal
}

/**
 * The replica volumes of a node: content-addressed block stores it serves over
 * `/shoal/blocks/1.0.0` to allow-listed peers, and the client side that finds replicas of a
 * volume among known peers and pulls blocks from all of them at once.
 *
 * Finding replicas: a node announces that it serves blocks at all through identify (the protocol
 * is in its protocol list); which volumes it holds, and which blocks of them, is asked on demand
 * with one VOLUME_QUERY per candidate peer, answered by a summary that costs a few bytes for a
 * full (or empty) replica and one bit per block otherwise. See docs/ARCHITECTURE.md for the cost.
 */
export class Volumes {
  private readonly stores = new Map<string, BlockStore>()
  private readonly budget?: TokenBucket
  /** Caches kept for post-copy destinations (served to their destination only). */
  readonly kept: KeptCaches
  /** Import, pull and remove: one at a time per volume id. */
  private readonly ops = new KeyedQueue()

  /** `serveRate`: bytes per second this node spends serving blocks to others (all peers together); default unlimited. */
  /** Per peer: block requests per second it may make (see `blockRequestRate`). */
  private readonly requestBudgets = new Map<string, TokenBucket>()
  /** Told of every block served (metrics). */
  onServed?: (volume: string, bytes: number) => void

  /** `blockRequestRate`: blocks per second one peer may ask this node for; default DEFAULT_BLOCK_REQUESTS_PER_SEC. */
  constructor (private readonly libp2p: ShoalLibp2p, private readonly dir: string, private readonly log: Logger, serveRate?: number, private readonly blockRequestRate = DEFAULT_BLOCK_REQUESTS_PER_SEC, private readonly data?: VolumesDataPlane) {
    if (serveRate != null) this.budget = new TokenBucket(serveRate)
    this.kept = new KeptCaches(join(dir, 'kept'), log)
  }

  /** Opens the volumes kept in the directory. */
  async load (): Promise<void> {
    mkdirSync(this.dir, { recursive: true })
    for (const f of readdirSync(this.dir)) {
      if (!f.endsWith('.meta')) continue
      const v = await BlockStore.open(this.dir, f.slice(0, -5))
      this.stores.set(v.id, v)
    }
    await this.kept.load()
  }

  /** Serves one block lane (the transport checked the allow-list). */
  serve (lane: Lane, peer: string): void {
    let requests = this.requestBudgets.get(peer)
    if (requests == null) {
      requests = new TokenBucket(this.blockRequestRate, Math.max(1, Math.ceil(this.blockRequestRate / 10)))
      this.requestBudgets.set(peer, requests)
    }
    void serveBlocks(lane, id => this.stores.get(id) ?? this.kept.lookup(id, peer), {
      budget: this.budget,
      requests,
      release: async (volume, sessionId) => { await this.kept.release(volume, sessionId, peer) },
      onServed: (volume, bytes) => { this.onServed?.(volume, bytes) },
      ...(this.data != null ? { dataEndpoints: this.data.endpoints } : {})
    })
  }

  get (id: string): BlockStore | undefined { return this.stores.get(id) }

  list (): VolumeInfo[] { return [...this.stores.values()].map(info) }

  /** Imports a volume file as a replica (every block hashed). */
  async import (id: string, path: string, blockSize = DEFAULT_BLOCK_SIZE): Promise<VolumeInfo> {
    return await this.ops.run(id, async () => await this.importNow(id, path, blockSize))
  }

  private async importNow (id: string, path: string, blockSize: number): Promise<VolumeInfo> {
    if (this.stores.has(id)) throw new InvalidArgumentError(`volume ${id} already exists on this node`)
    checkBlockSize(blockSize)
    mkdirSync(this.dir, { recursive: true })
    const v = await BlockStore.import(this.dir, id, path, blockSize)
    this.stores.set(id, v)
    return info(v)
  }

  /** Drops a volume and deletes its files. */
  async remove (id: string): Promise<void> {
    await this.ops.run(id, async () => { await this.removeNow(id) })
  }

  private async removeNow (id: string): Promise<void> {
    const v = this.stores.get(id)
    if (v == null) throw new UnknownVolumeError(`no volume ${id} on this node`)
    this.stores.delete(id)
    await v.close()
    BlockStore.remove(this.dir, id)
  }

  /** Blocks of every volume held here, by content hash (dedup for migrations and pulls). */
  local (): LocalBlocks {
    const find = (hash: Uint8Array): { store: BlockStore, index: number } | undefined => {
      for (const store of this.stores.values()) {
        const index = store.indexOf(hash)
        if (index != null && store.has(index)) return { store, index }
      }
      return undefined
    }
    return {
      has: hash => find(hash) != null,
      read: async (hash) => {
        const f = find(hash)
        return f == null ? undefined : await f.store.read(f.index)
      }
    }
  }

  /**
   * Asks candidate peers (bounded concurrency, a timeout each) whether they hold a volume, and
   * keeps those that do, with {@link DEFAULT_REPLICA_STREAMS} block lanes open to each. Peers that
   * refuse (not allow-listed), do not answer or hold other content are skipped.
   */
  async findReplicas (volume: string, opts: FindReplicasOptions = {}): Promise<Replica[]> {
    const exclude = new Set(opts.exclude ?? [])
    const candidates = opts.peers != null ? opts.peers.map(p => resolvePeer(p)) : await this.knownBlockPeers()
    const found: Replica[] = []
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < candidates.length) {
        const peer = candidates[next++]!
        if (exclude.has(peer.peerId.toString()) || peer.peerId.equals(this.libp2p.peerId)) continue
        const r = await this.ask(peer, volume, opts).catch((err: Error) => {
          this.log.info('no replica', { peer: peer.peerId.toString(), volume, why: err.message })
          return undefined
        })
        if (r != null) found.push(r)
      }
    }
    await Promise.all(Array.from({ length: DISCOVERY_CONCURRENCY }, worker))
    return found
  }

  /** Where a migration's clean cache blocks can come from: replicas of the volume and local stores. */
  async cacheSources (req: CacheSourcesRequest, exclude: string[]): Promise<CacheSources> {
    const replicas = await this.findReplicas(req.volume, { ...req, exclude })
    return { sources: replicas.map(r => blockSource(r, req.volume)), local: this.local(), close: async () => { closeAll(replicas) } }
  }

  /**
   * Makes this node a replica of a volume: finds peers holding it (or asks `from`), takes the
   * hash list the most of them agree on, and fetches every block from all of them at once,
   * verified by hash. Blocks this node already holds in other volumes are copied, not fetched.
   */
  async pull (id: string, opts: { from?: string[], signal?: AbortSignal } = {}): Promise<PullReport> {
    return await this.ops.run(id, async () => await this.pullNow(id, opts))
  }

  private async pullNow (id: string, opts: { from?: string[], signal?: AbortSignal }): Promise<PullReport> {
    if (this.stores.has(id)) throw new InvalidArgumentError(`volume ${id} already exists on this node`)
    const t0 = performance.now()
    const all = await this.findReplicas(id, { peers: opts.from, signal: opts.signal })
    try {
      // Replicas of different content under one id: the largest group wins.
      const groups = new Map<string, Replica[]>()
      for (const r of all) {
        const key = `${Buffer.from(r.summary.hashesDigest).toString('hex')}/${r.summary.blockSize}/${r.summary.blockCount}`
        groups.set(key, [...(groups.get(key) ?? []), r])
      }
      const replicas = [...groups.values()].sort((a, b) => b.length - a.length)[0]
      if (replicas == null) throw new UnknownVolumeError(`no reachable peer holds volume ${id}`)
      const { blockSize, blockCount, hashesDigest } = replicas[0]!.summary
      const hashes = await replicas[0]!.control.hashes(id, blockCount, hashesDigest)
      mkdirSync(this.dir, { recursive: true })
      const store = await BlockStore.create(this.dir, id, blockSize, hashes)
      this.stores.set(id, store)
      const report: PullReport = { id, blockSize, blockCount, bytes: 0, ms: 0, sources: {}, dedupBytes: 0, leftover: 0, dropped: {} }
      // One fetch per distinct hash; zero blocks and blocks held locally are not fetched.
      const byHash = new Map<string, number[]>()
      const zero = zeroHash(blockSize)
      const local = this.local()
      const items: FetchItem[] = []
      for (let i = 0; i < blockCount; i++) {
        const key = Buffer.from(store.hashOf(i)).toString('hex')
        const same = byHash.get(key)
        if (same != null) { same.push(i); continue }
        byHash.set(key, [i])
      }
      for (const indices of byHash.values()) {
        const hash = store.hashOf(indices[0]!)
        const data = zero.equals(hash) ? Buffer.alloc(blockSize) : local.has(hash) ? await local.read(hash) : undefined
        if (data != null) {
          for (const i of indices) await store.write(i, data)
          report.dedupBytes += blockSize * indices.length
        } else {
          items.push({ index: indices[0]!, hash })
        }
      }
      const sources = replicas.map(r => blockSource(r, id))
      const groupsOf = (i: number): number[] => byHash.get(Buffer.from(store.hashOf(i)).toString('hex'))!
      const result = await fetchFromSources(items, sources.map(s => ({ ...s, has: (i: number) => groupsOf(i).some(j => s.has(j)) })), async (item, data) => {
        const indices = groupsOf(item.index)
        // The block client verified the bytes against item.hash (= the store's hash for them).
        for (const i of indices) await store.write(i, data, item.hash)
        report.dedupBytes += blockSize * (indices.length - 1)
      }, { signal: opts.signal })
      await store.flush()
      for (const s of sources) report.sources[s.id] = { bytes: result.bytes[s.id]!, blocks: result.blocks[s.id]!, corrupt: result.corrupt[s.id]!, via: replicas.find(r => r.peerId === s.id)!.via }
      report.bytes = Object.values(result.bytes).reduce((a, b) => a + b, 0)
      report.leftover = result.leftover.reduce((a, item) => a + groupsOf(item.index).length, 0)
      report.dropped = result.dropped
      report.ms = performance.now() - t0
      return report
    } finally {
      closeAll(all)
    }
  }

  /**
   * Post-copy: the migrating source's node as one more source of a volume's blocks (it serves the
   * cache it kept for this node); undefined when it cannot be reached or holds none.
   */
  async sourceNode (peer: string, req: CacheSourcesRequest): Promise<{ source: BlockSource, close: () => void } | undefined> {
    const [r] = await this.findReplicas(req.volume, { peers: [peer], hashesDigest: req.hashesDigest, blockSize: req.blockSize, blockCount: req.blockCount, signal: req.signal })
    if (r == null) return undefined
    return { source: blockSource(r, req.volume), close: () => { closeAll([r]) } }
  }

  /** Post-copy: tells the source's node that its kept cache of `sessionId` may go. */
  async releaseKept (peer: string, volume: string, sessionId: Uint8Array, signal?: AbortSignal): Promise<void> {
    const [lane] = await openLanes(this.libp2p, resolvePeer(peer), BLOCKS_PROTOCOL, 1, { signal })
    const client = new BlockClient(lane!)
    try { await client.release(volume, sessionId) } finally { await lane!.close().catch(() => { lane!.abort() }) }
  }

  async close (): Promise<void> {
    for (const v of this.stores.values()) await v.close().catch(() => {})
    this.stores.clear()
    await this.kept.close()
  }

  /** Peers in the peer store that announce the block protocol (identify), or whose protocols are not known yet. */
  private async knownBlockPeers (): Promise<LanePeer[]> {
    const peers = await this.libp2p.peerStore.all()
    return peers
      .filter(p => !p.id.equals(this.libp2p.peerId) && p.addresses.length > 0 && (p.protocols.length === 0 || p.protocols.includes(BLOCKS_PROTOCOL)))
      .map(p => ({ peerId: p.id, addrs: [] }))
  }

  private async ask (peer: LanePeer, volume: string, opts: FindReplicasOptions): Promise<Replica | undefined> {
    const signal = AbortSignal.any([AbortSignal.timeout(DISCOVERY_TIMEOUT_MS), ...(opts.signal != null ? [opts.signal] : [])])
    const lanes = await openLanes(this.libp2p, peer, BLOCKS_PROTOCOL, DEFAULT_REPLICA_STREAMS, { signal })
    const clients = lanes.map(l => new BlockClient(l))
    let keep = false
    try {
      const summary = await Promise.race([
        clients[0]!.summary(volume),
        new Promise<never>((_resolve, reject) => { signal.addEventListener('abort', () => { reject(new Error('no summary in time')) }, { once: true }) })
      ])
      if (summary.held === 0) return undefined
      if (opts.hashesDigest != null && !Buffer.from(summary.hashesDigest).equals(opts.hashesDigest)) return undefined
      if ((opts.blockSize != null && summary.blockSize !== opts.blockSize) || (opts.blockCount != null && summary.blockCount !== opts.blockCount)) return undefined
      keep = true
      // A replica with several NICs on our networks serves over all of them: one more block lane
      // per path, each on a connection of its own (bound to our NIC on that network).
      const paths = await lanePaths(this.libp2p, { peerId: peer.peerId, addrs: [] }, this.libp2p.getConnections(peer.peerId)[0]).catch((err: Error) => {
        this.log.warn('replica paths unknown', { peer: peer.peerId.toString(), error: err.message })
        return []
      })
      // Both have data workers: blocks travel on them (TLS, framing and socket work off this thread).
      const plane = this.data?.plane()
      const via = paths.length > 0 ? paths : this.libp2p.getConnections(peer.peerId).map(c => c.remoteAddr).slice(0, 1)
      if (plane != null && summary.dataEndpoints != null && via.length > 0) {
        const open = workerLanes(plane, this.libp2p, { peerId: peer.peerId, addrs: [] }, summary.dataEndpoints)
        const lanes = await open(via, Math.max(DEFAULT_REPLICA_STREAMS, via.length), AbortSignal.timeout(DISCOVERY_TIMEOUT_MS)).catch((err: Error) => {
          this.log.warn('could not open block lanes on data workers; using libp2p streams', { peer: peer.peerId.toString(), error: err.message })
          return []
        })
        if (lanes.length > 0) {
          // The first libp2p lane stays for the hash list; the others are not needed.
          for (const c of clients.slice(1)) c.lane.abort()
          this.log.info('replica found', { peer: peer.peerId.toString(), volume, lanes: lanes.map(l => l.id) })
          return { peerId: peer.peerId.toString(), summary, control: clients[0]!, clients: lanes.map(l => new BlockClient(l)), via: 'data-workers' }
        }
      }
      if (paths.length > 1) {
        const more = await openLanes(this.libp2p, { peerId: peer.peerId, addrs: paths }, BLOCKS_PROTOCOL, paths.length, { signal: AbortSignal.timeout(DISCOVERY_TIMEOUT_MS), fresh: true }).catch((err: Error) => {
          this.log.warn('could not open block lanes over every path to a replica', { peer: peer.peerId.toString(), error: err.message })
          return []
        })
        clients.push(...more.map(l => new BlockClient(l)))
      }
      this.log.info('replica found', { peer: peer.peerId.toString(), volume, paths: paths.map(p => p.toString()), lanes: clients.length })
      return { peerId: peer.peerId.toString(), summary, control: clients[0]!, clients, via: 'libp2p' }
    } finally {
      if (!keep) for (const c of clients) c.lane.abort()
    }
  }
}

/**
 * A replica as a fetch source: each request takes an idle block lane, so requests run in parallel.
 * Urgent requests (a workload waiting for the block) go on the replica's first lane, which bulk
 * requests leave alone when there is another, so they never queue behind a bulk batch there.
 */
function blockSource (r: Replica, volume: string): BlockSource {
  const bulk = r.clients.length > 1 ? r.clients.filter(c => c !== r.control) : r.clients
  const idle = [...bulk]
  const waiting: Array<(c: BlockClient) => void> = []
  const acquire = async (): Promise<BlockClient> => idle.pop() ?? await new Promise(resolve => { waiting.push(resolve) })
  const release = (c: BlockClient): void => { const w = waiting.shift(); if (w != null) w(c); else idle.push(c) }
  return {
    id: r.peerId,
    slots: bulk.length,
    has: i => r.summary.have.get(i),
    fetch: async (hashes) => {
      const c = await acquire()
      try { return await c.fetch(volume, hashes) } finally { release(c) }
    },
    fetchUrgent: async (hashes) => await r.control.fetch(volume, hashes)
  }
}

function closeAll (replicas: Replica[]): void {
  for (const r of replicas) for (const c of new Set([r.control, ...r.clients])) void c.lane.close().catch(() => { c.lane.abort() })
}

function info (v: BlockStore): VolumeInfo {
  return { id: v.id, blockSize: v.blockSize, blockCount: v.blockCount, held: v.held() }
}
