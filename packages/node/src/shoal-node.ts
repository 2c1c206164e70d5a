import { createHash } from 'node:crypto'
import { totalmem } from 'node:os'
import { mkdirSync, rmSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { join } from 'node:path'
import {
  createShadowPool, createWorkerPool, InvalidImageError, DEFAULT_PAGE_SIZE, DEFAULT_BLOCK_SIZE, ShoalError, InvalidArgumentError, validateImageSpec,
  BlockClient, CacheMeta, UnknownVolumeError, ImageExistsError, ImageStateError, PeerGoneError, isLiveProcess
} from '@shoal/core'
import type { BlockStore, Driver, ImageSpec, WorkerPool } from '@shoal/core'
import { createDataPlane, createLibp2pLaneTransport, createShoalLibp2p, listenIps, loadOrCreateIdentity } from '@shoal/libp2p'
import type { DataPlane } from '@shoal/libp2p'
import { routeWorkerLane } from './worker-lanes.js'
import { Admission } from './admission.js'
import type { AdmissionLimits } from './admission.js'
import {
  BLOCKS_PROTOCOL, CONTROL_SOCKET, DEFAULT_DATA_WORKERS, SHADOW_POOL_MAX_BYTES, DEFAULT_SHM_DIR, LANE_PROTOCOL, MAX_BLOCK_REQUEST_FRAME, MAX_BLOCK_STREAMS_PER_CONNECTION,
  MAX_CONTROL_STREAMS_PER_CONNECTION, MAX_LANES_PER_SESSION, MIGRATE_PROTOCOL, STOP_DRAIN_MS
} from './constants.js'
import { startControlServer } from './control-server.js'
import { lockDataDir } from './data-dir-lock.js'
import { ImageStore } from './image-store.js'
import type { ImageRecord } from './image-store.js'
import { IncomingMigrations } from './incoming.js'
import { silentLogger } from './logger.js'
import type { Logger } from './logger.js'
import type { ShoalNode } from './node-api.js'
import { migrateOut } from './outgoing.js'
import { checkMultiaddr, parsePeerId, resolvePeer } from './peer-address.js'
import { Volumes } from './volumes.js'
import { Workloads } from './workloads.js'
import { settleWithin } from './settle-within.js'
import type { Server } from 'node:http'

export type { CreateImageOptions, MigrateOptions, NodeStatus, ShoalNode } from './node-api.js'
export { marksPathOf } from './outgoing.js'

/** Options of {@link createShoalNode}. */
export interface ShoalNodeInit {
  /** Directory for the identity, images and control socket. One node per data dir (it is locked). */
  dataDir: string
  /** Listen multiaddrs; default `/ip4/127.0.0.1/tcp/0`. */
  listen?: string[]
  /** Peer IDs allowed to migrate into this node. Empty: nobody. */
  allow?: string[]
  /** Bootstrap peers (multiaddrs with `/p2p/<id>`). */
  bootstrap?: string[]
  /** mDNS discovery on the LAN (off by default: it multicasts). */
  mdns?: boolean
  /** Directory for memory files (tmpfs); default `/dev/shm/shoal-<peer id suffix>`. */
  shmDir?: string
  /** Tracker and digest worker threads; default = cores. */
  workers?: number
  /**
   * Data worker threads: each owns data lanes' connections (TLS, authenticated with this node's
   * identity) and reads and writes their payload itself. 0 keeps data lanes on the main thread
   * as libp2p streams. Default {@link DEFAULT_DATA_WORKERS}.
   */
  dataWorkers?: number
  /** Serve the local control API on `<dataDir>/control.sock`; default true. */
  controlSocket?: boolean
  /** Bytes per second this node spends serving replica blocks to other peers; default unlimited. */
  serveRate?: number
  /** Block requests per second this node answers to one peer; default 4000. */
  blockRequestRate?: number
  /**
   * When the node stops, leave the workloads it runs running (a restarted node takes them back)
   * instead of stopping them. For a daemon whose restart (an upgrade, a crash loop) must not take
   * its VMs down; default false, so a node run by hand or in a test cleans up after itself.
   * Migrations out are cancelled either way, and their workloads resumed first.
   */
  keepWorkloadsOnStop?: boolean
  /** Limits applied to incoming migrations before one is accepted (sizes, space, concurrency). */
  admission?: AdmissionLimits
  /**
   * A libp2p private network: the 32-byte pre-shared key (the `swarm.key` file format of
   * `@libp2p/pnet`). Nodes without the same key cannot even connect.
   */
  privateNetworkKey?: Uint8Array
  /**
   * Connection encryption in order of preference (peers negotiate the first both offer); default
   * `['tls', 'noise']`: TLS 1.3 (OpenSSL's AES-GCM) moved a migration faster with less CPU than
   * Noise here (see `createShoalLibp2p`), and Noise keeps peers without TLS reachable.
   */
  encrypters?: Array<'noise' | 'tls'>
  /**
   * The drivers this node runs workloads with (e.g. `createQemuDriver()` from
   * `@shoal/driver-qemu`, `createSyntheticDriver()` from `@shoal/driver-synthetic`). An image
   * whose driver is not here can be neither created, started nor migrated in.
   */
  drivers?: Driver[]
  logger?: Logger
}

/** Creates a node (not started). Takes the data dir's lock: {@link DataDirLockedError} if another node holds it. */
export async function createShoalNode (init: ShoalNodeInit): Promise<ShoalNode> {
  const log = init.logger ?? silentLogger
  for (const a of init.listen ?? []) checkMultiaddr(a, 'listen', false)
  for (const a of init.bootstrap ?? []) checkMultiaddr(a, 'bootstrap', true)
  for (const p of init.allow ?? []) parsePeerId(p)
  if (init.serveRate != null && !(init.serveRate > 0)) throw new InvalidArgumentError('serveRate must be a positive number of bytes per second')
  mkdirSync(init.dataDir, { recursive: true })
  // Before anything touches the data dir: a second node would wipe the first one's staging.
  const lock = await lockDataDir(init.dataDir)
  try {
    return await assemble(init, log, lock)
  } catch (err) {
    await lock.release()
    throw err
  }
}

async function assemble (init: ShoalNodeInit, log: Logger, lock: { release: () => Promise<void> }): Promise<ShoalNode> {
  const privateKey = await loadOrCreateIdentity(init.dataDir)
  const libp2p = await createShoalLibp2p({
    privateKey, listen: init.listen ?? ['/ip4/127.0.0.1/tcp/0'], bootstrap: init.bootstrap, mdns: init.mdns, privateNetworkKey: init.privateNetworkKey, encrypters: init.encrypters
  })
  const peerId = libp2p.peerId.toString()
  // Lanes are opened and accepted through core's transport seam; only the multi-NIC placement of
  // data lanes (lane-paths.ts) and replica discovery use libp2p directly.
  const transport = createLibp2pLaneTransport(libp2p)
  const allow = new Set(init.allow ?? [])
  const shmDir = init.shmDir ?? join(DEFAULT_SHM_DIR, `shoal-${createHash('sha256').update(init.dataDir).digest('hex').slice(0, 12)}`)
  const store = new ImageStore(init.dataDir, shmDir)
  const workloads = new Workloads(store, init.drivers ?? [], join(init.dataDir, 'run'), log)
  let dataPlane: DataPlane | undefined
  const dataEndpoints = (): string[] => dataPlane?.endpoints() ?? []
  const volumes = new Volumes(libp2p, join(init.dataDir, 'volumes'), log, init.serveRate, init.blockRequestRate, { plane: () => dataPlane, endpoints: dataEndpoints })
  const admission = new Admission(init.admission ?? {}, { shmDir, dataDir: init.dataDir }, name => store.has(name))
  const stopping = new AbortController()
  const outgoing = new Set<Promise<unknown>>()
  let pool: WorkerPool | undefined
  let server: Server | undefined
  // A long-lived node reuses shadow copies across migrations (no first-touch page faults).
  const shadows = createShadowPool({ maxBytes: Math.min(SHADOW_POOL_MAX_BYTES, Math.floor(totalmem() / 8)) })
  const poolOf = (): WorkerPool => {
    if (pool == null) throw new ShoalError('the node is not started')
    return pool
  }
  const incoming = new IncomingMigrations({
    store, workloads, admission, pool: poolOf, log, signal: stopping.signal,
    dataEndpoints,
    cacheSources: async (req, exclude) => await volumes.cacheSources(req, exclude)
  })

  const isAllowed = (p: string): boolean => {
    const ok = allow.has(p)
    if (!ok) log.warn('refused peer: not on the allow-list', { peer: p })
    return ok
  }

  const node: ShoalNode = {
    peerId,
    libp2p,
    addrs: () => libp2p.getMultiaddrs().map(a => a.toString()),
    async start () {
      pool = createWorkerPool({ workers: init.workers })
      try {
        // Streams per connection and frame sizes bounded per protocol: what a peer may make this
        // node buffer is what the protocol needs, not what the transport allows.
        await transport.handle(MIGRATE_PROTOCOL, (lane, info) => { incoming.onControlLane(lane, info) }, { isAllowed, maxStreamsPerConnection: MAX_CONTROL_STREAMS_PER_CONNECTION })
        await transport.handle(LANE_PROTOCOL, (lane, info) => { incoming.onDataLane(lane, info) }, { isAllowed: p => allow.has(p), maxStreamsPerConnection: 2 * MAX_LANES_PER_SESSION })
        await volumes.load()
        await workloads.adoptAfterRestart(isLiveProcess)
        await transport.handle(BLOCKS_PROTOCOL, (lane, info) => { volumes.serve(lane, info.peerId) }, { isAllowed, maxStreamsPerConnection: MAX_BLOCK_STREAMS_PER_CONNECTION, maxFrameSize: MAX_BLOCK_REQUEST_FRAME })
        await libp2p.start()
        const dataWorkers = init.dataWorkers ?? DEFAULT_DATA_WORKERS
        if (dataWorkers > 0) {
          dataPlane = await createDataPlane({
            workers: dataWorkers, privateKey, listen: [...new Set(listenIps(libp2p))],
            onLane: (lane, info) => {
              if (!isAllowed(info.peerId)) { lane.abort(); return }
              // Migrations' data lanes and block lanes (replica pulls, cache blocks) share the workers.
              routeWorkerLane(lane, { data: (l) => { incoming.onDataLane(l, info) }, blocks: (l) => { volumes.serve(l, info.peerId) } })
            },
            onWorkerExit: (index, err) => { log.error('data worker died; its lanes failed over, it is started again', { worker: index, error: err.message }) }
          })
        }
        if (init.controlSocket !== false) server = await startControlServer(node, join(init.dataDir, CONTROL_SOCKET))
      } catch (err) {
        // Leave nothing running: a node that cannot start must let its process exit.
        await node.stop().catch(() => {})
        // Decided by the error's class; its text only supplies the system's reason for the user.
        throw (err as Error).name === 'UnsupportedListenAddressesError'
          ? new InvalidArgumentError(`cannot listen on ${(init.listen ?? []).join(', ')}: ${/(E[A-Z]+: [^\n]*)/.exec((err as Error).message)?.[1] ?? 'the address is in use or not an address of this host'}`, { cause: err })
          : err
      }
      log.info('node started', { peerId, addrs: node.addrs() })
    },
    async stop () {
      stopping.abort(new PeerGoneError(`node ${peerId} is stopping`))
      if (server != null) {
        server.closeAllConnections()
        await new Promise(resolve => server!.close(resolve))
      }
      await incoming.drain(STOP_DRAIN_MS)
      // Migrations out were cancelled with the control connections: let them resume their workloads.
      await settleWithin([...outgoing], STOP_DRAIN_MS)
      if (init.keepWorkloadsOnStop === true) workloads.detachAll()
      else await workloads.stopAll()
      await dataPlane?.stop()
      await libp2p.stop()
      await volumes.close()
      await pool?.stop()
      await lock.release()
    },
    async createImage (opts) {
      const paths = store.pathsFor(opts.name)
      if (store.has(opts.name)) throw new ImageExistsError(`image ${opts.name} already exists`)
      if (admission.arriving(opts.name)) throw new ImageExistsError(`image ${opts.name} is arriving from another node right now`)
      const driver = workloads.driver(opts.driver ?? 'synthetic')
      const volume = opts.cacheVolume != null ? volumes.get(opts.cacheVolume) : undefined
      if (opts.cacheVolume != null) {
        if (volume == null) throw new UnknownVolumeError(`no volume ${opts.cacheVolume} on this node`)
        if (volume.held() !== volume.blockCount) throw new InvalidArgumentError(`volume ${volume.id} is not held in full (${volume.held()} of ${volume.blockCount} blocks)`)
      }
      const cacheSize = volume != null ? volume.blockCount * volume.blockSize : opts.cacheSize
      if (opts.tracker != null && opts.tracker !== 'scan' && opts.tracker !== 'cooperative') throw new InvalidArgumentError('tracker must be scan or cooperative')
      const geometry = { memorySize: opts.memorySize, pageSize: opts.pageSize ?? DEFAULT_PAGE_SIZE, cacheSize, blockSize: volume?.blockSize ?? opts.blockSize ?? DEFAULT_BLOCK_SIZE }
      const spec: ImageSpec = {
        name: opts.name, driver: driver.name, driverConfig: { ...opts.config, ...(opts.tracker != null ? { tracker: opts.tracker } : {}) },
        memory: { path: paths.memoryPath, size: geometry.memorySize, pageSize: geometry.pageSize },
        cache: { path: paths.cachePath, size: geometry.cacheSize, blockSize: geometry.blockSize }
      }
      validateImageSpec(spec)
      spec.driverConfig = driver.validateConfig(spec.driverConfig, geometry)
      mkdirSync(paths.dir, { recursive: true })
      try {
        await driver.initImage(spec, { fill: opts.fill ?? 'zero' })
        if (volume != null) await seedCache(spec.cache.path, volume)
      } catch (err) {
        store.remove(opts.name)
        throw err
      }
      const rec: ImageRecord = { spec, state: 'stopped' }
      store.put(rec)
      return rec
    },
    async removeImage (name) {
      const rec = store.get(name)
      if (rec.state === 'migrating') throw new ImageStateError(`image ${name} is migrating; cancel the migration first`)
      await workloads.stop(name)
      store.remove(name)
      rmSync(join(workloads.runRoot, name), { recursive: true, force: true })
    },
    markHot (image, from, to) {
      const rec = store.get(image)
      if (!CacheMeta.exists(rec.spec.cache.path)) throw new InvalidImageError(`the cache of ${image} caches no volume`)
      CacheMeta.open(rec.spec.cache.path).markHot(from, to)
    },
    async startImage (name, opts) { return await workloads.start(name, opts?.force === true) },
    async migrate (name, to, opts = {}) {
      const run = migrateOut({ libp2p, transport, dataPlane: () => dataPlane, shadows, store, workloads, pool: poolOf, log }, name, to, { ...opts, signal: opts.signal != null ? AbortSignal.any([opts.signal, stopping.signal]) : stopping.signal })
      outgoing.add(run)
      try { return await run } finally { outgoing.delete(run) }
    },
    async status () {
      const connected = new Set(libp2p.getConnections().map(c => c.remotePeer.toString()))
      const peers = (await libp2p.peerStore.all()).filter(p => !p.id.equals(libp2p.peerId)).map(p => ({
        peerId: p.id.toString(),
        addrs: p.addresses.map(a => a.multiaddr.toString()),
        connected: connected.has(p.id.toString())
      }))
      return {
        peerId,
        addrs: node.addrs(),
        peers,
        images: store.list().map(r => ({ ...r, pid: workloads.get(r.spec.name)?.pid })),
        volumes: volumes.list(),
        incoming: incoming.size
      }
    },
    allowPeer (p) { parsePeerId(p); allow.add(p) },
    async importVolume (id, path, blockSize) { return await volumes.import(id, path, blockSize) },
    async removeVolume (id) { await volumes.remove(id) },
    async pullVolume (id, opts) { return await volumes.pull(id, opts) },
    async blockClient (to, signal) {
      resolvePeer(to, 'replica')
      const [lane] = await transport.openLanes(to, BLOCKS_PROTOCOL, 1, { signal })
      return new BlockClient(lane!)
    }
  }

  return node
}

/** Copies a fully held volume into a cache file and writes its metadata (every block clean). */
async function seedCache (cachePath: string, volume: BlockStore): Promise<void> {
  const fh = await open(cachePath, 'r+')
  try {
    for (let i = 0; i < volume.blockCount; i++) await fh.write(await volume.read(i), 0, volume.blockSize, i * volume.blockSize)
  } finally {
    await fh.close()
  }
  CacheMeta.create(cachePath, { volume: volume.id, blockSize: volume.blockSize, hashes: volume.hashRange(0, volume.blockCount) })
}
