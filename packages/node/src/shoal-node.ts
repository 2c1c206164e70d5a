import { answerCapacity, askCapacity, CAPACITY_ANNOUNCE_PROTOCOL, CAPACITY_PROTOCOL, MAX_CAPACITY_FRAME } from './capacity.js'
import { CapacityAnnouncer, CapacityBoard } from './capacity-announcer.js'
import type { HeardCapacity } from './capacity-announcer.js'
import type { PeerId } from '@libp2p/interface'
import { evacuate } from './evacuation.js'
import type { EvacuateOptions, EvacuationReport } from './evacuation.js'
import { KeyedQueue } from './keyed-queue.js'
import { createHash } from 'node:crypto'
import { totalmem } from 'node:os'
import { mkdirSync, rmSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { join } from 'node:path'
import {
  createShadowPool, createWorkerPool, InvalidImageError, DEFAULT_PAGE_SIZE, DEFAULT_BLOCK_SIZE, ShoalError, InvalidArgumentError, validateImageSpec,
  BlockClient, CacheMeta, UnknownVolumeError, ImageExistsError, ImageStateError, PeerGoneError, isLiveProcess, BusyError, AbortedError
} from '@shoal/core'
import type { BlockStore, Driver, ImageSpec, KeptCache, WorkerPool } from '@shoal/core'
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
import { childLogger, silentLogger } from './logger.js'
import type { Logger } from './logger.js'
import type { ShoalNode } from './node-api.js'
import { migrateOut } from './outgoing.js'
import { Migrations } from './migrations.js'
import { NodeMetrics, parseHostPort, startMetricsServer } from './metrics.js'
import type { CreateImageOptions, ImageVerification, MigrateOptions } from './node-api.js'
import { renderReportHtml } from './report-html.js'
import { checkMultiaddr, parsePeerId, resolvePeer } from './peer-address.js'
import { Volumes } from './volumes.js'
import { PostCopies } from './postcopies.js'
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
  /**
   * On stop, migrations out that are running get this long to finish (no new ones are taken);
   * those still running then are cancelled and their workloads resume here. Default 0.
   */
  stopGraceMs?: number
  /** Serves Prometheus metrics on `http://HOST:PORT/metrics` (`HOST:PORT`; port 0 picks one). Off by default. */
  metrics?: string
  /** Defaults for migrations out of this node (what a request does not say; e.g. from the config file). */
  migrateDefaults?: MigrateOptions
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
  if (init.metrics != null) parseHostPort(init.metrics)
  if (init.stopGraceMs != null && !(init.stopGraceMs >= 0)) throw new InvalidArgumentError('stopGraceMs must be a number of milliseconds, 0 or more')
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
  const metrics = new NodeMetrics()
  let metricsServer: Server | undefined
  const libp2p = await createShoalLibp2p({
    metricsRegistry: metrics.registry,
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
  // Migrations out, running and past (their reports and pages under <dataDir>/migrations).
  const migrations = new Migrations(join(init.dataDir, 'migrations'), renderReportHtml)
  migrations.listen({
    started: (r) => { metrics.migrationStarted(); log.info('migration out started', { migration: r.id, image: r.image, to: r.peer }) },
    ended: (r) => {
      metrics.migrationEnded(r)
      const fields = { migration: r.id, image: r.image, to: r.peer, state: r.state, totalMs: r.totalMs, downtimeMs: r.downtimeMs, ...(r.error != null ? { error: r.error.code } : {}) }
      if (r.state === 'succeeded') log.info('migration out ended', fields)
      else log.warn('migration out ended', fields)
    }
  })
  volumes.onServed = (volume, bytes) => { metrics.blocksServed(volume, bytes) }
  let pool: WorkerPool | undefined
  let server: Server | undefined
  // A long-lived node reuses shadow copies across migrations (no first-touch page faults).
  const shadows = createShadowPool({ maxBytes: Math.min(SHADOW_POOL_MAX_BYTES, Math.floor(totalmem() / 8)) })
  const poolOf = (): WorkerPool => {
    if (pool == null) throw new ShoalError('the node is not started')
    return pool
  }
  // Post-copy caches still streaming in, by image.
  const postcopies = new PostCopies({ store, workloads, volumes, libp2p, log })
  workloads.postcopyAccess = name => postcopies.access(name)
  const incoming = new IncomingMigrations({
    store, workloads, admission, pool: poolOf, log, signal: stopping.signal,
    dataEndpoints,
    cacheSources: async (req, exclude) => await volumes.cacheSources(req, exclude),
    postcopy: async (image, pc, cachePath, runDir, from) => await postcopies.start(image, pc, cachePath, runDir, from),
    stopPostcopy: async (image) => { await postcopies.stop(image) },
    postcopyLaunched: (image) => { postcopies.workloadStarted(image) },
    onRefused: (code) => { metrics.admissionRefused(code) },
    onEnded: (committed) => { metrics.incomingEnded(committed) }
  })

  const isAllowed = (p: string): boolean => {
    const ok = allow.has(p)
    if (!ok) log.warn('refused peer: not on the allow-list', { peer: p })
    return ok
  }
  // What this node can take, told unasked to the connected peers it takes images from; what
  // its peers told this node of theirs (`shoal peers`).
  const connectedPeers = (): string[] => [...new Set(libp2p.getConnections().map(c => c.remotePeer.toString()))]
  const announcer = new CapacityAnnouncer({
    transport, connectedPeers, log,
    takesFrom: p => allow.has(p),
    capacityFor: p => admission.capacity(p, store.list().length)
  })
  const board = new CapacityBoard(log, p => connectedPeers().includes(p))
  const capacityOf = (p: string): { capacity?: HeardCapacity } => {
    const capacity = board.get(p)
    return capacity != null ? { capacity } : {}
  }
  const onConnect = (evt: CustomEvent<PeerId>): void => { announcer.connected(evt.detail.toString()) }
  const onDisconnect = (evt: CustomEvent<PeerId>): void => { announcer.disconnected(evt.detail.toString()); board.forget(evt.detail.toString()) }

  // The destination of a post-copy migration out of this node may pull the cache kept for it.
  const mayPullBlocks = (p: string): boolean => volumes.kept.keptFor(p) || isAllowed(p)

  // Create, start, remove and the start of a migration out: one at a time per image.
  const imageOps = new KeyedQueue()

  const createImage = async (opts: CreateImageOptions): Promise<ImageRecord> => {
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
  }

  const removeImage = async (name: string): Promise<void> => {
    const rec = store.get(name)
    if (rec.state === 'migrating') throw new ImageStateError(`image ${name} is migrating; cancel the migration first`)
    await postcopies.stop(name)
    await workloads.stop(name)
    store.remove(name)
    rmSync(join(workloads.runRoot, name), { recursive: true, force: true })
  }

  // Evacuations (one at a time: see evacuate below); `node` is the object this function returns.
  let evacuatingSince: string | undefined
  const runEvacuation = async (opts: EvacuateOptions): Promise<EvacuationReport> => await evacuate({
    images: () => store.list(),
    knownPeers: async () => (await node.peers()).map(p => p.peerId),
    peerIdOf: (to) => resolvePeer(to, 'to').peerId.toString(),
    capacity: async (to, signal) => await askCapacity(transport, to, AbortSignal.any([signal, stopping.signal])),
    migrate: async (image, to, o) => await node.migrate(image, to, o),
    dir: join(init.dataDir, 'evacuations'),
    log
  }, { ...opts, signal: AbortSignal.any([stopping.signal, ...(opts.signal != null ? [opts.signal] : [])]) })

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
        // What this node can still take, for an allow-listed peer placing images (an evacuation).
        await transport.handle(CAPACITY_PROTOCOL, (lane, info) => { void answerCapacity(lane, admission.capacity(info.peerId, store.list().length)) }, { isAllowed, maxStreamsPerConnection: 4, maxFrameSize: MAX_CAPACITY_FRAME })
        // Announcements grant nothing (they say what the sender would take from this node): any
        // connected peer may tell, one small frame per stream.
        await transport.handle(CAPACITY_ANNOUNCE_PROTOCOL, (lane, info) => { board.receive(lane, info.peerId) }, { isAllowed: () => true, maxStreamsPerConnection: 2, maxFrameSize: MAX_CAPACITY_FRAME })
        await transport.handle(BLOCKS_PROTOCOL, (lane, info) => { volumes.serve(lane, info.peerId) }, { isAllowed: mayPullBlocks, maxStreamsPerConnection: MAX_BLOCK_STREAMS_PER_CONNECTION, maxFrameSize: MAX_BLOCK_REQUEST_FRAME })
        libp2p.addEventListener('peer:connect', onConnect)
        libp2p.addEventListener('peer:disconnect', onDisconnect)
        await libp2p.start()
        announcer.start()
        const dataWorkers = init.dataWorkers ?? DEFAULT_DATA_WORKERS
        if (dataWorkers > 0) {
          dataPlane = await createDataPlane({
            workers: dataWorkers, privateKey, listen: [...new Set(listenIps(libp2p))],
            onLane: (lane, info) => {
              if (!mayPullBlocks(info.peerId)) { lane.abort(); return }
              // Migrations' data lanes and block lanes (replica pulls, cache blocks) share the workers.
              routeWorkerLane(lane, {
                data: (l) => { if (allow.has(info.peerId)) incoming.onDataLane(l, info); else l.abort() },
                blocks: (l) => { volumes.serve(l, info.peerId) }
              })
            },
            onWorkerExit: (index, err) => { log.error('data worker died; its lanes failed over, it is started again', { worker: index, error: err.message }) }
          })
        }
        if (init.controlSocket !== false) server = await startControlServer(node, join(init.dataDir, CONTROL_SOCKET))
        if (init.metrics != null) {
          const m = await startMetricsServer(metrics, parseHostPort(init.metrics))
          metricsServer = m.server
          node.metricsUrl = m.url
          log.info('metrics served', { url: m.url })
        }
        // Post-copies a restart interrupted: once peers can be reached (the workloads wait meanwhile).
        void postcopies.resumeAfterRestart()
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
      const grace = init.stopGraceMs ?? 0
      if (grace > 0 && outgoing.size > 0) {
        // No new requests; the migrations out running now may finish within the bound.
        server?.close()
        log.info('stopping: waiting for migrations out to finish', { running: outgoing.size, graceMs: grace })
        await settleWithin([...outgoing], grace)
        if (outgoing.size > 0) log.warn('stopping: migrations out still running are cancelled (their workloads resume here)', { running: outgoing.size })
      }
      stopping.abort(new PeerGoneError(`node ${peerId} is stopping`))
      announcer.stop()
      libp2p.removeEventListener('peer:connect', onConnect)
      libp2p.removeEventListener('peer:disconnect', onDisconnect)
      if (metricsServer != null) {
        metricsServer.closeAllConnections()
        await new Promise(resolve => metricsServer!.close(resolve))
      }
      if (server != null) {
        server.closeAllConnections()
        await new Promise(resolve => { if (server!.listening) server!.close(resolve); else resolve(undefined) })
      }
      await incoming.drain(STOP_DRAIN_MS)
      // Post-copy streams stop; their sources keep their copies (a restart does not resume them yet).
      await postcopies.stopAll()
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
    async createImage (opts) { return await imageOps.run(opts.name, async () => await createImage(opts)) },
    async removeImage (name) { await imageOps.run(name, async () => { await removeImage(name) }) },
    markHot (image, from, to) {
      const rec = store.get(image)
      if (!CacheMeta.exists(rec.spec.cache.path)) throw new InvalidImageError(`the cache of ${image} caches no volume`)
      CacheMeta.open(rec.spec.cache.path).markHot(from, to)
    },
    async startImage (name, opts) { return await imageOps.run(name, async () => await workloads.start(name, opts?.force === true)) },
    async migrate (name, to, opts = {}) {
      const keepCache = async (kept: KeptCache, cachePath: string, peer: string): Promise<() => Promise<void>> => await volumes.kept.keep(kept, cachePath, peer)
      // Checked before a record is made: an unknown image or a bad address is not a migration.
      store.get(name)
      const peer = resolvePeer(to, 'target').peerId.toString()
      const { onProgress, onId, signal, ...asked } = opts
      // What the request does not say comes from the node's defaults (its config file).
      const chosen: MigrateOptions = { ...init.migrateDefaults, ...Object.fromEntries(Object.entries(asked).filter(([, v]) => v !== undefined)) }
      const handle = migrations.begin(name, peer, to, chosen)
      onId?.(handle.id)
      const signals = [stopping.signal, handle.signal, ...(signal != null ? [signal] : [])]
      // Every line this migration logs carries its id.
      const mlog = childLogger(log, { migration: handle.id })
      // Begun once no create, start or remove of the image is under way; migrateOut marks the image
      // migrating before its first await, so what waits behind this sees it migrating.
      const { run } = await imageOps.run(name, async () => ({
        run: migrateOut({ libp2p, transport, dataPlane: () => dataPlane, shadows, store, workloads, pool: poolOf, log: mlog, keepCache }, name, to, {
          ...chosen, signal: AbortSignal.any(signals), onProgress: (p) => { handle.progress(p); onProgress?.(p) }
        })
      }))
      outgoing.add(run)
      try {
        const report = await run
        handle.succeeded(report)
        return report
      } catch (err) {
        // A caller's signal aborted without a reason of ours (a bare AbortController): say so with
        // the stable code, not as an internal error.
        const e = !(err instanceof ShoalError) && (err as Error).name === 'AbortError'
          ? new AbortedError('cancelled by its caller (the request\'s signal was aborted)', { cause: err })
          : err
        handle.failed(e)
        throw e
      } finally { outgoing.delete(run) }
    },
    async evacuate (opts) {
      // One at a time: two would place the same images and fight over them.
      if (evacuatingSince != null) throw new BusyError(`an evacuation of this node is already running (since ${evacuatingSince}); wait for it to end, or stop it by ending its \`shoal evacuate\` (Ctrl-C)`)
      evacuatingSince = new Date().toISOString()
      try {
        return await runEvacuation(opts)
      } finally {
        evacuatingSince = undefined
      }
    },
    migrations: () => migrations.list(),
    migration: (id) => migrations.get(id),
    cancelMigration: (id) => migrations.cancel(id),
    keptCaches: () => volumes.kept.list(),
    async dropKeptCache (session, force = false) { return await volumes.kept.dropByOperator(session, p => connectedPeers().includes(p), force) },
    migrationFiles: (id) => migrations.files(id),
    async verifyImage (name) {
      const rec = store.get(name)
      const running = workloads.get(name) != null
      const driver = workloads.driver(rec.spec.driver)
      const checks: ImageVerification['checks'] = []
      if (rec.spec.cache.size > 0 && CacheMeta.exists(rec.spec.cache.path)) {
        if (postcopies.status(name) != null) checks.push({ check: 'cache-blocks', detail: 'its cache is still streaming in (post-copy): blocks are missing until it completes' })
        else if (running && driver.tracker(rec.spec.driverConfig) !== 'cooperative' && rec.spec.driver !== 'synthetic') checks.push({ check: 'cache-blocks', detail: 'the workload runs and does not mark the blocks it writes: stop it to check its cache against the volume' })
        else checks.push({ check: 'cache-blocks', ...await verifyCacheBlocks(rec.spec.cache.path) })
      }
      if (driver.verify != null) checks.push({ check: 'workload', ...await driver.verify(workloads.image(rec), running) })
      const ok = checks.some(c => c.ok === false) ? false : checks.some(c => c.ok === true) ? true : undefined
      return { image: name, ...(ok != null ? { ok } : {}), checks }
    },
    async peers () {
      const connected = new Set(libp2p.getConnections().map(c => c.remotePeer.toString()))
      return (await libp2p.peerStore.all()).filter(p => !p.id.equals(libp2p.peerId)).map(p => ({
        peerId: p.id.toString(),
        addrs: p.addresses.map(a => a.multiaddr.toString()),
        connected: connected.has(p.id.toString()),
        ...capacityOf(p.id.toString())
      }))
    },
    async status () {
      return {
        peerId,
        addrs: node.addrs(),
        peers: await node.peers(),
        images: store.list().map(r => {
          const pc = postcopies.status(r.spec.name)
          return { ...r, pid: workloads.get(r.spec.name)?.pid, ...(pc != null ? { postcopy: pc } : {}) }
        }),
        volumes: volumes.list(),
        kept: volumes.kept.list(),
        incoming: incoming.size,
        arriving: admission.arrivingImages()
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

/**
 * Every clean block of a cache that caches a volume (not marked dirty: the synthetic workload
 * marks a block before it writes it) against the volume's SHA-256 of that block.
 */
async function verifyCacheBlocks (cachePath: string): Promise<{ ok: boolean, detail: string }> {
  const meta = CacheMeta.open(cachePath)
  const dirty = meta.dirty()
  const { checked, bad } = await meta.differing(i => !dirty.get(i))
  return bad.length === 0
    ? { ok: true, detail: `${checked} clean blocks match volume ${meta.volume} (${meta.blockCount - checked} written here, not checked)` }
    : { ok: false, detail: `${bad.length} of ${checked} clean blocks differ from volume ${meta.volume}: blocks ${bad.slice(0, 10).join(', ')}${bad.length > 10 ? ', ...' : ''}` }
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
