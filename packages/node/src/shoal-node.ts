import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { join } from 'node:path'
import {
  createWorkerPool, DestinationSession, InvalidImageError, readLaneHello, runSourceSession, UnknownImageError, WorkloadError,
  DEFAULT_PAGE_SIZE, DEFAULT_BLOCK_SIZE, ShoalError, InvalidArgumentError, validateImageSpec, BlockClient, CacheMeta, CacheMetaError,
  UnknownVolumeError, InvalidDriverConfigError
} from '@shoal/core'
import type {
  BlockStore, CacheManifest, DirtySource, Driver, DriverImage, ImageSpec, Lane, LaneStats, MigrationProgress, MigrationReport, PreparedLaunch, RunningWorkload,
  WorkerPool, WorkloadController, SourceSessionOptions
} from '@shoal/core'
import { createShoalLibp2p, handleLanes, loadOrCreateIdentity, openLanes } from '@shoal/libp2p'
import type { ShoalLibp2p } from '@shoal/libp2p'
import { BLOCKS_PROTOCOL, CONTROL_SOCKET, DEFAULT_LANES, DEFAULT_SHM_DIR, LANE_PROTOCOL, MIGRATE_PROTOCOL } from './constants.js'
import { ImageStore } from './image-store.js'
import { laneReplenisher, lanePaths, openDataLanes } from './lane-paths.js'
import { startControlServer } from './control-server.js'
import type { Server } from 'node:http'
import type { ImageRecord, Staging } from './image-store.js'
import { silentLogger } from './logger.js'
import { checkMultiaddr, parsePeerId, resolvePeer } from './peer-address.js'
import { Volumes } from './volumes.js'
import type { PullReport, VolumeInfo } from './volumes.js'
import type { Logger } from './logger.js'

/** Options of {@link createShoalNode}. */
export interface ShoalNodeInit {
  /** Directory for the identity, images and control socket. */
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
  /** Serve the local control API on `<dataDir>/control.sock`; default true. */
  controlSocket?: boolean
  /** Bytes per second this node spends serving replica blocks to other peers; default unlimited. */
  serveRate?: number
  /**
   * The drivers this node runs workloads with (e.g. `createQemuDriver()` from
   * `@shoal/driver-qemu`, `createSyntheticDriver()` from `@shoal/driver-synthetic`). An image
   * whose driver is not here can be neither created, started nor migrated in.
   */
  drivers?: Driver[]
  logger?: Logger
}

/** Options of an image created on a node. */
export interface CreateImageOptions {
  name: string
  /** The driver that runs its workload (`synthetic`, `qemu`, ...); default `synthetic`. */
  driver?: string
  memorySize: number
  cacheSize: number
  /** Initial content: `zero` or `random` (real bytes). */
  fill?: 'zero' | 'random'
  pageSize?: number
  blockSize?: number
  /**
   * The cache caches this volume, which the node must hold in full: the cache starts as a copy
   * of it (every block clean) with per-block metadata beside it, so a migration can leave its
   * clean blocks to replicas. `cacheSize` and `blockSize` then come from the volume.
   */
  cacheVolume?: string
  /**
   * How migrations find changed memory pages: `scan` (compare on worker threads; any writer) or
   * `cooperative` (the workload marks what it writes; rounds cost what changed). Default: the
   * driver's choice. Stored as the config's `tracker` field.
   */
  tracker?: 'scan' | 'cooperative'
  /** Driver config (checked by the driver; it travels with the image). */
  config?: Record<string, unknown>
}

/** Options of {@link ShoalNode.migrate}. */
export interface MigrateOptions extends Omit<SourceSessionOptions, 'onProgress'> {
  /** Data lanes; default 4. */
  lanes?: number
  /** Data lanes per TCP connection; default 1 (one connection per lane). */
  streamsPerConnection?: number
  onProgress?: (p: MigrationProgress) => void
}

/** A node's view of itself, for `shoal status`. */
export interface NodeStatus {
  peerId: string
  addrs: string[]
  /** Peers this node knows (bootstrap, mDNS, identify) with their addresses. */
  peers: Array<{ peerId: string, addrs: string[], connected: boolean }>
  images: Array<ImageRecord & { pid?: number }>
  /** Replica volumes this node serves. */
  volumes: VolumeInfo[]
  incoming: number
}

/** A Shoal peer: hosts images and their workloads, sends and receives migrations. */
export interface ShoalNode {
  readonly peerId: string
  readonly libp2p: ShoalLibp2p
  addrs: () => string[]
  start: () => Promise<void>
  /** Stops migrations, workloads started here, workers and sockets. */
  stop: () => Promise<void>
  createImage: (opts: CreateImageOptions) => Promise<ImageRecord>
  startImage: (name: string) => Promise<ImageRecord>
  migrate: (name: string, to: string, opts?: MigrateOptions) => Promise<MigrationReport>
  status: () => Promise<NodeStatus>
  /** Allows one more peer to migrate into this node (and to pull blocks from it). */
  allowPeer: (peerId: string) => void
  /** Imports a volume file as a replica this node serves to allow-listed peers. */
  importVolume: (id: string, path: string, blockSize?: number) => Promise<VolumeInfo>
  /** Stops an image's workload (if running here) and deletes the image; refused while it migrates. */
  removeImage: (name: string) => Promise<void>
  /** Marks cache blocks [from, to) of an image hot: a migration sends them early, from the source. */
  markHot: (image: string, from: number, to: number) => void
  /** Drops a replica volume and deletes its files. */
  removeVolume: (id: string) => Promise<void>
  /**
   * Becomes a replica of a volume: pulls every block from the peers that hold it (all at once,
   * verified by hash). `from`: peers to ask (peer IDs or multiaddrs); default every known peer.
   */
  pullVolume: (id: string, opts?: { from?: string[], signal?: AbortSignal }) => Promise<PullReport>
  /** Opens a block lane to a replica peer (a peer ID or a multiaddr with /p2p/). */
  blockClient: (to: string, signal?: AbortSignal) => Promise<BlockClient>
}


/** Creates a node (not started). */
export async function createShoalNode (init: ShoalNodeInit): Promise<ShoalNode> {
  const log = init.logger ?? silentLogger
  for (const a of init.listen ?? []) checkMultiaddr(a, 'listen', false)
  for (const a of init.bootstrap ?? []) checkMultiaddr(a, 'bootstrap', true)
  for (const p of init.allow ?? []) parsePeerId(p)
  if (init.serveRate != null && !(init.serveRate > 0)) throw new InvalidArgumentError('serveRate must be a positive number of bytes per second')
  const privateKey = await loadOrCreateIdentity(init.dataDir)
  const libp2p = await createShoalLibp2p({
    privateKey, listen: init.listen ?? ['/ip4/127.0.0.1/tcp/0'], bootstrap: init.bootstrap, mdns: init.mdns
  })
  const peerId = libp2p.peerId.toString()
  const allow = new Set(init.allow ?? [])
  const shmDir = init.shmDir ?? join(DEFAULT_SHM_DIR, `shoal-${createHash('sha256').update(init.dataDir).digest('hex').slice(0, 12)}`)
  const store = new ImageStore(init.dataDir, shmDir)
  const drivers = new Map<string, Driver>()
  for (const d of init.drivers ?? []) drivers.set(d.name, d)
  const runRoot = join(init.dataDir, 'run')
  const running = new Map<string, RunningWorkload>()
  const volumes = new Volumes(libp2p, join(init.dataDir, 'volumes'), log, init.serveRate)
  const incoming = new Map<string, { session: DestinationSession, peer: string }>()
  const controllers = new AbortController()
  let pool: WorkerPool | undefined
  let server: Server | undefined

  const driverOf = (name: string): Driver => {
    const d = drivers.get(name)
    if (d == null) throw new InvalidDriverConfigError(`no driver named ${JSON.stringify(name)} on this node (drivers here: ${[...drivers.keys()].join(', ') || 'none'})`)
    return d
  }

  /** The run directory of a hosted image's workload (sockets, logs), created on demand. */
  const runDirOf = (name: string): string => {
    const dir = join(runRoot, name)
    mkdirSync(dir, { recursive: true })
    return dir
  }
  const driverImage = (rec: ImageRecord): DriverImage => ({
    spec: rec.spec, runDir: typeof rec.runtime?.runDir === 'string' ? rec.runtime.runDir : runDirOf(rec.spec.name), runtime: rec.runtime
  })

  const track = (rec: ImageRecord, w: RunningWorkload): void => {
    running.set(rec.spec.name, w)
    void w.exited.then((code) => {
      if (running.get(rec.spec.name) === w) {
        running.delete(rec.spec.name)
        if (store.has(rec.spec.name)) store.put({ ...store.get(rec.spec.name), state: 'stopped', runtime: undefined })
        log.warn('workload exited', { image: rec.spec.name, code })
      }
    })
    store.put({ ...rec, state: 'running', runtime: w.runtime })
  }

  const launch = async (rec: ImageRecord, deviceState?: Uint8Array, prepared?: PreparedLaunch, runDir?: string): Promise<void> => {
    const image = runDir != null ? { spec: rec.spec, runDir } : driverImage({ ...rec, runtime: undefined })
    track(rec, await driverOf(rec.spec.driver).launch(image, deviceState, prepared))
  }

  /**
   * After a restart: workloads that kept running while the node was down are adopted by their
   * driver (a VM keeps running across a node crash; the driver decides whether a workload the
   * crash left paused may run again); the others are marked stopped. An image left `migrating`
   * by a crash is no longer migrating.
   */
  const adoptRunning = async (): Promise<void> => {
    for (const rec of store.list()) {
      if (rec.state === 'stopped') continue
      const driver = drivers.get(rec.spec.driver)
      let w: RunningWorkload | undefined
      try {
        w = rec.runtime != null ? await driver?.adopt?.(driverImage(rec)) : undefined
      } catch (err) {
        log.warn('cannot adopt workload', { image: rec.spec.name, error: (err as Error).message })
      }
      if (w != null) {
        track(rec, w)
        log.info('adopted running workload', { image: rec.spec.name, pid: w.pid })
      } else {
        store.put({ ...rec, state: 'stopped', runtime: undefined })
        log.warn('workload not running after restart: marked stopped', { image: rec.spec.name, was: rec.state })
      }
    }
    // Run directories no image owns: left by incoming migrations a crash interrupted.
    const owned = new Set(store.list().flatMap(r => typeof r.runtime?.runDir === 'string' ? [r.runtime.runDir] : []))
    for (const d of existsSync(runRoot) ? readdirSync(runRoot) : []) {
      const dir = join(runRoot, d)
      if (owned.has(dir) || (!d.startsWith('in-') && store.has(d))) continue
      for (const driver of drivers.values()) await driver.reap?.(dir).catch(() => {})
      rmSync(dir, { recursive: true, force: true })
      log.info('removed a stale run directory', { dir })
    }
  }

  const onControlLane = (lane: Lane, info: { peerId: string }): void => {
    let staging: Staging | undefined
    let sessionKey: string | undefined
    let prepared: PreparedLaunch | undefined
    let runDir: string | undefined
    // The incoming image as the driver validated it when the HELLO arrived (paths: staging files).
    let incomingSpec: ImageSpec | undefined
    const session = new DestinationSession(lane, {
      pool: pool!,
      hooks: {
        async prepare (hello) {
          // The driver checks the image's config before anything is staged.
          const driver = driverOf(hello.driver)
          let raw: unknown
          try { raw = JSON.parse(hello.driverConfig) } catch { throw new InvalidDriverConfigError('driver config is not JSON') }
          const driverConfig = driver.validateConfig(raw as Record<string, unknown>, {
            memorySize: hello.memorySize, pageSize: hello.pageSize, cacheSize: hello.cacheSize, blockSize: hello.blockSize
          })
          const key = Buffer.from(hello.sessionId).toString('hex')
          staging = store.stage(hello, key)
          runDir = join(runRoot, `in-${key.slice(0, 16)}`)
          mkdirSync(runDir, { recursive: true })
          const spec: ImageSpec = incomingSpec = {
            name: hello.image, driver: hello.driver, driverConfig,
            memory: { path: staging.memoryPath, size: hello.memorySize, pageSize: hello.pageSize },
            cache: { path: staging.cachePath, size: hello.cacheSize, blockSize: hello.blockSize }
          }
          // Start the workload now (a VM waiting for its device state), so the pause does not include it.
          prepared = await driver.prepareLaunch?.({ spec, runDir }).catch((err: Error) => {
            log.warn('could not prepare the workload ahead of the switchover', { image: hello.image, error: err.message })
            return undefined
          })
          return staging
        },
        register (key) { sessionKey = key; incoming.set(key, { session, peer: info.peerId }) },
        async cacheSources (req) { return await volumes.cacheSources(req, [info.peerId]) },
        async commit (deviceState, cacheMeta) {
          const spec = incomingSpec!
          const driver = driverOf(spec.driver)
          const check = await driver.check({ spec, runDir: runDir! }, deviceState, prepared)
          log.info('arrival check', { image: spec.name, ...check })
          if (!check.ok) throw new WorkloadError(`arrival check failed: ${check.detail}`)
          store.adopt(staging!, { spec, state: 'stopped', arrivalCheck: check, from: info.peerId })
          staging = undefined
          try {
            if (cacheMeta != null) CacheMeta.create(store.get(spec.name).spec.cache.path, cacheMeta)
            await launch(store.get(spec.name), deviceState, prepared, runDir)
          } catch (err) {
            // The workload did not come up here: the source resumes, so this copy must go.
            await prepared?.cancel().catch(() => {})
            running.delete(spec.name)
            store.remove(spec.name)
            throw err
          } finally {
            prepared = undefined
          }
        },
        async discard () {
          await prepared?.cancel()
          if (staging != null) store.discard(staging)
          if (runDir != null && !store.list().some(r => r.runtime?.runDir === runDir)) rmSync(runDir, { recursive: true, force: true })
        }
      }
    }, { signal: controllers.signal })
    log.info('incoming migration', { from: info.peerId })
    void session.run().then((r) => {
      if (sessionKey != null) incoming.delete(sessionKey)
      if (r.committed) log.info('migration in committed', { image: r.image, bytes: r.bytes })
      else log.warn('migration in failed', { image: r.image, error: r.error })
    })
  }

  const onDataLane = (lane: Lane, info: { peerId: string }): void => {
    readLaneHello(lane).then(({ hello, frames }) => {
      const entry = incoming.get(Buffer.from(hello.sessionId).toString('hex'))
      if (entry == null || entry.peer !== info.peerId) { lane.abort(new UnknownImageError('lane for an unknown session')); return }
      entry.session.addLane(lane, frames)
    }, (err: Error) => { lane.abort(err) })
  }

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
        await handleLanes(libp2p, MIGRATE_PROTOCOL, onControlLane, { isAllowed })
        await handleLanes(libp2p, LANE_PROTOCOL, onDataLane, { isAllowed: p => allow.has(p) })
        await volumes.load()
        await adoptRunning()
        await handleLanes(libp2p, BLOCKS_PROTOCOL, (lane) => { volumes.serve(lane) }, { isAllowed })
        await libp2p.start()
        if (init.controlSocket !== false) server = await startControlServer(node, join(init.dataDir, CONTROL_SOCKET))
      } catch (err) {
        // Leave nothing running: a node that cannot start must let its process exit.
        await node.stop().catch(() => {})
        const listenFailed = /failed to be listened on/.test((err as Error).message)
        throw listenFailed
          ? new InvalidArgumentError(`cannot listen on ${(init.listen ?? []).join(', ')}: ${/(E[A-Z]+: [^\n]*)/.exec((err as Error).message)?.[1] ?? (err as Error).message}`)
          : err
      }
      log.info('node started', { peerId, addrs: node.addrs() })
    },
    async stop () {
      controllers.abort(new ShoalError('node stopping'))
      if (server != null) {
        server.closeAllConnections()
        await new Promise(resolve => server!.close(resolve))
      }
      await Promise.all([...running.values()].map(async w => { await w.terminate() }))
      running.clear()
      await libp2p.stop()
      await volumes.close()
      await pool?.stop()
    },
    async createImage (opts) {
      const paths = store.pathsFor(opts.name)
      if (store.has(opts.name)) throw new InvalidImageError(`image ${opts.name} already exists`)
      const driver = driverOf(opts.driver ?? 'synthetic')
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
      if (rec.state === 'migrating') throw new InvalidImageError(`image ${name} is migrating; cancel the migration first`)
      const w = running.get(name)
      running.delete(name)
      await w?.terminate()
      store.remove(name)
      rmSync(join(runRoot, name), { recursive: true, force: true })
    },
    markHot (image, from, to) {
      const rec = store.get(image)
      if (!CacheMeta.exists(rec.spec.cache.path)) throw new InvalidImageError(`the cache of ${image} caches no volume`)
      CacheMeta.open(rec.spec.cache.path).markHot(from, to)
    },
    async startImage (name) {
      const rec = store.get(name)
      if (running.has(name)) return rec
      await launch(rec)
      return store.get(name)
    },
    async migrate (name, to, opts = {}) {
      const rec = store.get(name)
      if (rec.state === 'migrating') throw new InvalidImageError(`image ${name} is already migrating`)
      const target = resolvePeer(to, 'target')
      if (target.peerId.equals(libp2p.peerId)) throw new InvalidArgumentError(`cannot migrate ${name} to this node itself (${peerId})`)
      const w = running.get(name)
      const driver = driverOf(rec.spec.driver)
      const controller: WorkloadController = w?.controller ?? { async pause () {}, async resume () {}, deviceState: async () => await driver.deviceState(driverImage(rec)), async stop () {} }
      store.put({ ...rec, state: 'migrating' })
      let cacheDirtySource: DirtySource | undefined
      try {
        const [control] = await openLanes(libp2p, target, MIGRATE_PROTOCOL, 1, { signal: opts.signal })
        const paths = await lanePaths(libp2p, target, libp2p.getConnections(target.peerId)[0])
        // One lane per usable (local NIC, remote NIC) pair, and at least DEFAULT_LANES.
        const count = opts.lanes ?? Math.max(paths.length, DEFAULT_LANES)
        let replenish: ((active: LaneStats[]) => Promise<Lane[]>) | undefined
        const open = async (): Promise<Lane[]> => {
          const lanes = await openDataLanes(libp2p, target, paths, count, opts.signal)
          replenish = laneReplenisher(libp2p, target, paths, lanes)
          log.info('migration out', { image: name, to: target.peerId.toString(), lanes: lanes.map(l => l.id) })
          return lanes
        }
        const cooperative = driver.tracker(rec.spec.driverConfig) === 'cooperative'
        // A workload that knows which cache blocks it wrote (a VM's dirty bitmaps) spares the scans.
        cacheDirtySource = cooperative || rec.spec.cache.size === 0 ? undefined : w?.cacheDirtySource?.(rec.spec.cache.size / rec.spec.cache.blockSize, rec.spec.cache.blockSize)
        const report = await runSourceSession({
          image: rec.spec, controller, control: control!, lanes: { count, open }, pool: pool!, cacheManifest: cacheManifestOf(rec.spec),
          ...(cooperative ? { memoryMarks: marksPathOf(rec.spec), cacheMarks: `${rec.spec.cache.path}.marks` } : {}),
          ...(cacheDirtySource != null ? { cacheDirtySource } : {}),
          replenish: async (active) => await (replenish?.(active) ?? Promise.resolve([]))
        }, { ...opts, fixedPauseMs: opts.fixedPauseMs ?? w?.fixedPauseMs })
        running.delete(name)
        store.remove(name)
        rmSync(join(runRoot, name), { recursive: true, force: true })
        return report
      } catch (err) {
        if (store.has(name)) store.put({ ...store.get(name), state: running.has(name) ? 'running' : 'stopped' })
        throw err
      } finally {
        await cacheDirtySource?.close()
      }
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
        images: store.list().map(r => ({ ...r, pid: running.get(r.spec.name)?.pid })),
        volumes: volumes.list(),
        incoming: incoming.size
      }
    },
    allowPeer (p) { parsePeerId(p); allow.add(p) },
    async importVolume (id, path, blockSize) { return await volumes.import(id, path, blockSize) },
    async removeVolume (id) { await volumes.remove(id) },
    async pullVolume (id, opts) { return await volumes.pull(id, opts) },
    async blockClient (to, signal) {
      const target = resolvePeer(to, 'replica')
      const [lane] = await openLanes(libp2p, target, BLOCKS_PROTOCOL, 1, { signal })
      return new BlockClient(lane!)
    }
  }

  return node
}

/** The memory's dirty-marks file of an image tracked cooperatively (beside its memory file; the cache's is `<cache>.marks`). */
export function marksPathOf (spec: ImageSpec): string { return `${spec.memory.path}.marks` }

/** The manifest a migration offers for an image whose cache caches a volume. */
function cacheManifestOf (spec: ImageSpec): CacheManifest | undefined {
  if (spec.cache.size === 0 || !CacheMeta.exists(spec.cache.path)) return undefined
  const meta = CacheMeta.open(spec.cache.path)
  if (meta.blockSize !== spec.cache.blockSize || meta.blockCount * meta.blockSize !== spec.cache.size) {
    throw new CacheMetaError(`cache metadata of ${spec.name} does not match its cache (${meta.blockCount} blocks of ${meta.blockSize})`)
  }
  return { volume: meta.volume, hashes: meta.hashes, dirty: meta.dirty(), hot: meta.hot() }
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
