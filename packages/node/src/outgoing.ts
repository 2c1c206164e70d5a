import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { CacheMeta, CacheMetaError, ImageStateError, InvalidArgumentError, LaneClosedError, NoLanesError, TimeoutError, PeerGoneError, RemoteAbortError, runSourceSession, ShoalError } from '@shoal/core'
import type { AcceptFrame, KeptCache, ShadowPool, CacheManifest, DirtySource, LaneTransport, ImageSpec, Lane, LaneStats, MigrationProgress, MigrationReport, WorkerPool, WorkloadController } from '@shoal/core'
import type { PeerId } from '@libp2p/interface'
import type { DataPlane, ShoalLibp2p } from '@shoal/libp2p'
import { DEFAULT_LANES, MIGRATE_PROTOCOL, PEER_CHECK_TIMEOUT_MS } from './constants.js'
import type { ImageRecord, ImageStore } from './image-store.js'
import { laneReplenisher, lanePaths, libp2pDataLanes, workerLanes } from './lane-paths.js'
import type { Logger } from './logger.js'
import type { MigrateOptions } from './node-api.js'
import { resolvePeer } from './peer-address.js'
import type { Workloads } from './workloads.js'

/** What {@link migrateOut} needs from the rest of the node. */
export interface OutgoingDeps {
  libp2p: ShoalLibp2p
  /** This node's data workers, if it has any. */
  dataPlane?: () => DataPlane | undefined
  /** Opens the control lane (core's transport seam). */
  transport: LaneTransport
  store: ImageStore
  workloads: Workloads
  pool: () => WorkerPool
  /** Shadow copies kept across this node's migrations. */
  shadows?: ShadowPool
  /** Post-copy: keeps the image's cache for the destination (see KeptCaches). */
  keepCache: (kept: KeptCache, cachePath: string, peer: string) => Promise<() => Promise<void>>
  log: Logger
}

/** The persisted migration phase for a progress phase (what a restart decides from). */
const PERSISTED: Partial<Record<MigrationProgress['phase'], NonNullable<ImageRecord['migration']>['phase']>> = {
  switchover: 'paused', verify: 'paused', commit: 'commit'
}

/**
 * Migrates a hosted image to `to` (the source side). The image is `migrating` meanwhile, and how
 * far it got is written to its record at each phase change, before the step is taken: a node that
 * crashes and restarts resumes a workload it paused, but never one whose COMMIT may have gone out.
 * On success the image leaves this node; on failure it is running (or stopped) as before.
 */
export async function migrateOut (deps: OutgoingDeps, name: string, to: string, opts: MigrateOptions = {}): Promise<MigrationReport> {
  const { libp2p, store, workloads, log } = deps
  const rec = store.get(name)
  if (rec.state === 'migrating') throw new ImageStateError(`image ${name} is already migrating`)
  if (rec.state === 'orphaned' || rec.state === 'in-doubt') throw new ImageStateError(`image ${name} is ${rec.state}; see \`shoal status\``)
  const target = resolvePeer(to, 'target')
  if (target.peerId.equals(libp2p.peerId)) throw new InvalidArgumentError(`cannot migrate ${name} to this node itself (${libp2p.peerId.toString()})`)
  const w = workloads.get(name)
  const driver = workloads.driver(rec.spec.driver)
  if (w == null && opts.cacheMode === 'postcopy') throw new InvalidArgumentError(`image ${name} is stopped: it migrates with --cache-mode precopy (post-copy needs its workload running on the destination)`)
  const controller: WorkloadController = w?.controller ?? { async pause () {}, async resume () {}, deviceState: async () => await driver.deviceState(workloads.image(rec)), async stop () {} }
  const peer = target.peerId.toString()
  let persisted: NonNullable<ImageRecord['migration']>['phase'] = 'precopy'
  store.put({ ...rec, state: 'migrating', migration: { to: peer, phase: persisted } })
  const onProgress = (p: MigrationProgress): void => {
    const phase = PERSISTED[p.phase]
    if (phase != null && phase !== persisted && store.has(name)) {
      persisted = phase
      store.put({ ...store.get(name), migration: { to: peer, phase } })
    }
    opts.onProgress?.(p)
  }
  let cacheDirtySource: DirtySource | undefined
  try {
    const [control] = await deps.transport.openLanes(to, MIGRATE_PROTOCOL, 1, { signal: opts.signal })
    const paths = await lanePaths(libp2p, target, libp2p.getConnections(target.peerId)[0])
    // One lane per usable (local NIC, remote NIC) pair, and at least DEFAULT_LANES.
    const count = opts.lanes ?? Math.max(paths.length, DEFAULT_LANES)
    let replenish: ((active: LaneStats[]) => Promise<Lane[]>) | undefined
    const open = async (accepted: AcceptFrame): Promise<Lane[]> => {
      // On both sides' data workers when both have them; else libp2p streams on this thread.
      const plane = deps.dataPlane?.()
      const opener = plane != null && accepted.dataEndpoints != null
        ? workerLanes(plane, libp2p, target, accepted.dataEndpoints)
        : libp2pDataLanes(libp2p, target)
      const lanes = await opener(paths, count, opts.signal)
      replenish = laneReplenisher(opener, paths, lanes)
      log.info('migration out', { image: name, to: peer, lanes: lanes.map(l => l.id) })
      return lanes
    }
    const cooperative = driver.tracker(rec.spec.driverConfig) === 'cooperative'
    // A workload that knows which cache blocks it wrote (a VM's dirty bitmaps) spares the scans.
    cacheDirtySource = cooperative || rec.spec.cache.size === 0 ? undefined : w?.cacheDirtySource?.(rec.spec.cache.size / rec.spec.cache.blockSize, rec.spec.cache.blockSize)
    const report = await runSourceSession({
      image: rec.spec, controller, stopped: w == null, control: control!, lanes: { count, open }, pool: deps.pool(), cacheManifest: cacheManifestOf(rec.spec),
      ...(deps.shadows != null ? { shadows: deps.shadows } : {}),
      ...(cooperative ? { memoryMarks: marksPathOf(rec.spec), cacheMarks: `${rec.spec.cache.path}.marks` } : {}),
      ...(cacheDirtySource != null ? { cacheDirtySource } : {}),
      replenish: async (active) => await (replenish?.(active) ?? Promise.resolve([])),
      // Post-copy: from the verified switchover on, this node serves the cache to the destination.
      keepCache: async (kept) => await deps.keepCache(kept, rec.spec.cache.path, peer)
    }, { ...opts, onProgress, fixedPauseMs: opts.fixedPauseMs ?? w?.fixedPauseMs })
    workloads.forget(name)
    store.remove(name)
    rmSync(join(workloads.runRoot, name), { recursive: true, force: true })
    return report
  } catch (err) {
    if (store.has(name)) {
      const now = store.get(name)
      // A COMMIT whose answer never came: the session kept the workload paused; so does the record.
      const inDoubt = (err as ShoalError).code === 'ERR_COMMIT_UNKNOWN'
      store.put({ ...now, state: inDoubt ? 'in-doubt' : workloads.get(name) != null ? 'running' : 'stopped', migration: inDoubt ? now.migration : undefined })
    }
    throw await explain(err, target.peerId, libp2p)
  } finally {
    await cacheDirtySource?.close()
  }
}

/**
 * The error a user should see: the destination's own refusal with its own code (not a generic
 * "peer aborted"), and a destination that went away as {@link PeerGoneError} instead of "no
 * lanes left". The session's report stays attached.
 */
async function explain (err: unknown, peer: PeerId, libp2p: ShoalLibp2p): Promise<unknown> {
  const report = (err as { report?: MigrationReport }).report
  let out: unknown = err
  if (err instanceof RemoteAbortError) {
    out = new ShoalError(`destination ${peer.toString()}: ${err.remoteMessage}`, err.remoteCode, { cause: err })
  } else if ((err instanceof NoLanesError || err instanceof LaneClosedError || err instanceof TimeoutError) && !(await reachable(libp2p, peer))) {
    out = new PeerGoneError(`destination ${peer.toString()} went away during the migration (it cannot be reached now); the workload runs here as before`, { cause: err })
  }
  if (out !== err && report != null) (out as { report?: MigrationReport }).report = report
  return out
}

/** Whether the peer answers a dial now (a fresh connection, not one that may be half dead). */
async function reachable (libp2p: ShoalLibp2p, peer: PeerId): Promise<boolean> {
  try {
    await libp2p.dial(peer, { signal: AbortSignal.timeout(PEER_CHECK_TIMEOUT_MS), force: true })
    return true
  } catch {
    return false
  }
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
