import { mkdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { BusyError, CacheMeta, DestinationSession, errorCode, ProtocolError, InvalidDriverConfigError, readLaneHello, UnknownImageError, WorkloadError } from '@shoal/core'
import type { CacheSources, CacheSourcesRequest, HelloFrame, ImageSpec, Lane, PostCopyAccess, PostCopyCache, PreparedLaunch, WorkerPool } from '@shoal/core'
import type { Admission, AdmissionTicket } from './admission.js'
import { MAX_LANES_PER_SESSION } from './constants.js'
import type { ImageStore, Staging } from './image-store.js'
import type { Logger } from './logger.js'
import type { Workloads } from './workloads.js'
import { settleWithin } from './settle-within.js'

/** What {@link IncomingMigrations} needs from the rest of the node. */
export interface IncomingDeps {
  store: ImageStore
  workloads: Workloads
  admission: Admission
  /** The node's worker pool (exists once the node started). */
  pool: () => WorkerPool
  /** Where clean cache blocks of a volume can come from, besides the source. */
  cacheSources: (req: CacheSourcesRequest, exclude: string[]) => Promise<CacheSources>
  log: Logger
  /** Where this node's data workers take data lanes (`host:port`); empty without workers. */
  dataEndpoints: () => string[]
  /** Aborted when the node stops. */
  signal: AbortSignal
  /**
   * Post-copy: takes over an arriving image's cache that is still streaming (its `cachePath` is
   * the final one) and returns how its workload reaches missing blocks.
   */
  postcopy: (image: string, pc: PostCopyCache, cachePath: string, runDir: string, from: string) => Promise<PostCopyAccess>
  /** Post-copy: the image's workload runs (its stream may now complete and move it off the fault path). */
  postcopyLaunched: (image: string) => void
  /** Post-copy: stops an image's stream again (its workload did not come up). */
  stopPostcopy: (image: string) => Promise<void>
  /** Metrics: a migration refused at admission (its code), an incoming migration ended. */
  onRefused?: (code: string) => void
  onEnded?: (committed: boolean) => void
}

/** One incoming migration in progress. */
interface Incoming { session: DestinationSession, peer: string, lanes: number }

/**
 * The migrations coming into a node: a control lane starts a {@link DestinationSession} whose
 * HELLO goes through admission control before anything is staged; data lanes join the session
 * their LANE_HELLO names (from the same peer only, a bounded number).
 */
export class IncomingMigrations {
  private readonly sessions = new Map<string, Incoming>()
  /** Every session still running (registered or not), so that stopping can wait for their ABORTs. */
  private readonly running = new Set<Promise<unknown>>()

  constructor (private readonly deps: IncomingDeps) {}

  /** Incoming migrations in progress. */
  get size (): number { return this.sessions.size }

  /** Handles a control lane of `MIGRATE_PROTOCOL`. */
  onControlLane (lane: Lane, info: { peerId: string }): void {
    const { store, workloads, log } = this.deps
    let ticket: AdmissionTicket | undefined
    let staging: Staging | undefined
    let sessionKey: string | undefined
    let prepared: PreparedLaunch | undefined
    let runDir: string | undefined
    // The incoming image as the driver validated it when the HELLO arrived (paths: staging files).
    let incomingSpec: ImageSpec | undefined
    // Stopped on the source: it arrives stopped (nothing is started here).
    let stopped = false
    const session = new DestinationSession(lane, {
      pool: this.deps.pool(),
      hooks: {
        prepare: async (hello) => {
          const driverConfig = this.validate(hello)
          // Refused here, nothing was written: the name, the sizes, the space, the session counts.
          try {
            ticket = this.deps.admission.admit({ image: hello.image, peer: info.peerId, memorySize: hello.memorySize, cacheSize: hello.cacheSize })
          } catch (err) {
            this.deps.onRefused?.(errorCode(err))
            throw err
          }
          const key = Buffer.from(hello.sessionId).toString('hex')
          staging = store.stage(hello, key)
          runDir = join(workloads.runRoot, `in-${key.slice(0, 16)}`)
          mkdirSync(runDir, { recursive: true })
          const spec: ImageSpec = incomingSpec = {
            name: hello.image, driver: hello.driver, driverConfig,
            memory: { path: staging.memoryPath, size: hello.memorySize, pageSize: hello.pageSize },
            cache: { path: staging.cachePath, size: hello.cacheSize, blockSize: hello.blockSize }
          }
          stopped = hello.stopped === true
          // Start the workload now (a VM waiting for its device state), so the pause does not include it.
          if (!stopped) prepared = await workloads.driver(hello.driver).prepareLaunch?.({ spec, runDir }).catch((err: Error) => {
            log.warn('could not prepare the workload ahead of the switchover', { image: hello.image, error: err.message })
            return undefined
          })
          return staging
        },
        dataEndpoints: this.deps.dataEndpoints,
        register: (key) => { sessionKey = key; this.sessions.set(key, { session, peer: info.peerId, lanes: 0 }) },
        cacheSources: async (req) => await this.deps.cacheSources(req, [info.peerId]),
        commit: async (deviceState, cacheMeta, postcopy) => {
          const spec = incomingSpec!
          const check = await workloads.driver(spec.driver).check({ spec, runDir: runDir! }, deviceState, prepared)
          log.info('arrival check', { image: spec.name, ...check })
          if (!check.ok) throw new WorkloadError(`arrival check failed: ${check.detail}`)
          if (stopped && postcopy != null) throw new ProtocolError('a stopped image cannot arrive by post-copy (no workload would read its missing blocks)')
          store.adopt(staging!, { spec, state: 'stopped', arrivalCheck: check, from: info.peerId })
          staging = undefined
          try {
            const cachePath = store.get(spec.name).spec.cache.path
            if (cacheMeta != null) CacheMeta.create(cachePath, cacheMeta)
            // Post-copy: the workload starts with the fault path to the blocks still arriving.
            const access = postcopy != null ? await this.deps.postcopy(spec.name, postcopy, cachePath, runDir!, info.peerId) : undefined
            if (!stopped) await workloads.launch(store.get(spec.name), deviceState, prepared, runDir, access)
            if (postcopy != null) this.deps.postcopyLaunched(spec.name)
          } catch (err) {
            // The workload did not come up here: the source resumes, so this copy must go.
            if (postcopy != null) await this.deps.stopPostcopy(spec.name).catch(() => {})
            await prepared?.cancel().catch(() => {})
            workloads.forget(spec.name)
            store.remove(spec.name)
            throw err
          } finally {
            prepared = undefined
          }
        },
        discard: async () => {
          await prepared?.cancel()
          if (staging != null) store.discard(staging)
          if (runDir != null && !store.list().some(r => r.runtime?.runDir === runDir)) rmSync(runDir, { recursive: true, force: true })
        }
      }
    }, { signal: this.deps.signal })
    log.info('incoming migration', { from: info.peerId })
    const run = session.run().then((r) => {
      this.running.delete(run)
      if (sessionKey != null) this.sessions.delete(sessionKey)
      ticket?.release()
      this.deps.onEnded?.(r.committed)
      if (r.committed) log.info('migration in committed', { image: r.image, bytes: r.bytes })
      else log.warn('migration in failed', { image: r.image, from: info.peerId, error: r.error })
    })
    this.running.add(run)
  }

  /**
   * Waits (at most `timeoutMs`) for the sessions to end once the node's signal was aborted: each
   * tells its source why (an ABORT on every lane) and discards its staging before the node closes
   * its connections, so the source learns the cause instead of seeing its lanes die.
   */
  async drain (timeoutMs: number): Promise<void> {
    await settleWithin([...this.running], timeoutMs)
  }

  /** Handles a data lane of `LANE_PROTOCOL`. */
  onDataLane (lane: Lane, info: { peerId: string }): void {
    readLaneHello(lane).then(({ hello, frames }) => {
      const entry = this.sessions.get(Buffer.from(hello.sessionId).toString('hex'))
      if (entry == null || entry.peer !== info.peerId) { lane.abort(new UnknownImageError('lane for an unknown session')); return }
      // Each lane holds frames in flight: a peer gets a bounded number per migration.
      if (entry.lanes >= MAX_LANES_PER_SESSION) { lane.abort(new BusyError(`a migration may use at most ${MAX_LANES_PER_SESSION} lanes`)); return }
      entry.lanes++
      entry.session.addLane(lane, frames, () => { entry.lanes-- })
    }, (err: Error) => { lane.abort(err) })
  }

  /** The driver's check of an incoming image's config, before anything is staged. */
  private validate (hello: HelloFrame): Record<string, unknown> {
    const driver = this.deps.workloads.driver(hello.driver)
    let raw: unknown
    try { raw = JSON.parse(hello.driverConfig) } catch { throw new InvalidDriverConfigError('driver config is not JSON') }
    return driver.validateConfig(raw as Record<string, unknown>, {
      memorySize: hello.memorySize, pageSize: hello.pageSize, cacheSize: hello.cacheSize, blockSize: hello.blockSize
    }, 'peer')
  }
}
