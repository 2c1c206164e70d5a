import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { ImageStateError, InvalidDriverConfigError } from '@shoal/core'
import type { Driver, DriverImage, PostCopyAccess, PreparedLaunch, RunningWorkload } from '@shoal/core'
import type { ImageRecord, ImageStore } from './image-store.js'
import type { Logger } from './logger.js'

/**
 * The workloads of the images a node hosts: which run here, their drivers and run directories,
 * starting and stopping them, and taking them back after the node restarted. Part of a node
 * that never imports the node.
 */
export class Workloads {
  private readonly running = new Map<string, RunningWorkload>()
  private readonly drivers = new Map<string, Driver>()
  /** Post-copy: how the workload of an image whose cache still streams in reaches missing blocks. */
  postcopyAccess?: (name: string) => PostCopyAccess | undefined

  constructor (private readonly store: ImageStore, drivers: readonly Driver[], readonly runRoot: string, private readonly log: Logger) {
    for (const d of drivers) this.drivers.set(d.name, d)
  }

  /** The driver named `name`; {@link InvalidDriverConfigError} when this node has none. */
  driver (name: string): Driver {
    const d = this.drivers.get(name)
    if (d == null) throw new InvalidDriverConfigError(`no driver named ${JSON.stringify(name)} on this node (drivers here: ${[...this.drivers.keys()].join(', ') || 'none'})`)
    return d
  }

  /** The running workload of an image, if it runs here. */
  get (name: string): RunningWorkload | undefined { return this.running.get(name) }

  /** The run directory of a hosted image's workload (sockets, logs), created on demand. */
  runDir (name: string): string {
    const dir = join(this.runRoot, name)
    mkdirSync(dir, { recursive: true })
    return dir
  }

  /** The driver's view of a hosted image. */
  image (rec: ImageRecord): DriverImage {
    return { spec: rec.spec, runDir: typeof rec.runtime?.runDir === 'string' ? rec.runtime.runDir : this.runDir(rec.spec.name), runtime: rec.runtime }
  }

  /**
   * Starts an image's workload (`runDir`: the one an incoming migration prepared; `postcopy`: its
   * cache is still arriving, and how the workload reaches missing blocks).
   */
  async launch (rec: ImageRecord, deviceState?: Uint8Array, prepared?: PreparedLaunch, runDir?: string, postcopy?: PostCopyAccess): Promise<void> {
    const image: DriverImage = runDir != null ? { spec: rec.spec, runDir } : this.image({ ...rec, runtime: undefined })
    const access = postcopy ?? this.postcopyAccess?.(rec.spec.name)
    // A cache with missing blocks is never run without its fault path: it would read zeros.
    if (access == null && rec.postcopyPending != null) throw new ImageStateError(`the cache of ${rec.spec.name} is incomplete (its post-copy from ${rec.postcopyPending.from} did not finish and could not be taken up again; see the node's log)`)
    if (access != null) image.postcopy = access
    this.track(rec, await this.driver(rec.spec.driver).launch(image, deviceState, prepared))
  }

  /** Post-copy: the image's cache is complete; its workload leaves the fault path. */
  async postcopyComplete (name: string): Promise<void> {
    await this.running.get(name)?.postcopyComplete?.()
  }

  /**
   * Starts a stopped image. A running one is returned as it is. An image whose workload a crash
   * left beyond this node's control (`orphaned`) or whose migration may have committed on the
   * destination (`in-doubt`) is refused with {@link ImageStateError}: a second writer on one image
   * corrupts it; `force` starts (or resumes) it anyway once the operator has checked.
   */
  async start (name: string, force = false): Promise<ImageRecord> {
    const rec = this.store.get(name)
    const w = this.running.get(name)
    if (rec.state === 'in-doubt') {
      if (!force) throw new ImageStateError(`image ${name} was switching over to ${rec.migration?.to ?? 'another node'} when this node stopped: it may run there now. Check that node; if it does not run the image, start it here with --force, else remove it here`)
      if (w != null) {
        await w.controller.resume()
        this.store.put({ ...rec, state: 'running', migration: undefined })
        return this.store.get(name)
      }
    }
    if (w != null) return rec
    if (rec.state === 'orphaned' && !force) {
      throw new ImageStateError(`image ${name} still has a workload (pid ${String(rec.runtime?.pid ?? '?')}) this node could not take back after a restart; stop that process, then start the image with --force`)
    }
    if (rec.state === 'migrating') throw new ImageStateError(`image ${name} is migrating`)
    await this.launch(rec)
    return this.store.get(name)
  }

  /** Stops an image's workload if it runs here and forgets it. */
  async stop (name: string): Promise<void> {
    const w = this.running.get(name)
    this.running.delete(name)
    await w?.terminate()
  }

  /** Forgets a workload that left this node (migrated away) without stopping it again. */
  forget (name: string): void { this.running.delete(name) }

  /** Stops every workload this node runs. */
  async stopAll (): Promise<void> {
    const all = [...this.running.values()]
    this.running.clear()
    await Promise.all(all.map(async w => { await w.terminate() }))
  }

  /** Lets go of every workload without stopping it (the node stops; a restarted node takes them back). */
  detachAll (): void {
    this.running.clear()
  }

  /**
   * After a restart: workloads that kept running while the node was down are taken back by their
   * driver; the others are marked stopped, or `orphaned` when their process still runs but cannot
   * be taken back. An image the crash left `migrating` was not migrating any more: its workload
   * resumes (a crash inside the pause left it paused) — unless the crash came after the COMMIT
   * went out, when the destination may run it: it stays paused and `in-doubt` for the operator.
   */
  async adoptAfterRestart (isAlive: (pid: number) => boolean): Promise<void> {
    for (const rec of this.store.list()) {
      if (rec.state === 'stopped') continue
      const driver = this.drivers.get(rec.spec.driver)
      const inDoubt = rec.state === 'in-doubt' || (rec.state === 'migrating' && rec.migration?.phase === 'commit')
      let w: RunningWorkload | undefined
      try {
        w = rec.runtime != null ? await driver?.adopt?.(this.image(rec)) : undefined
      } catch (err) {
        this.log.warn('cannot take back workload', { image: rec.spec.name, error: (err as Error).message })
      }
      if (w == null) {
        const pid = rec.runtime?.pid
        if (typeof pid === 'number' && isAlive(pid)) {
          this.store.put({ ...rec, state: 'orphaned', migration: undefined })
          this.log.error('workload still runs but cannot be taken back: marked orphaned, starting it again is refused', { image: rec.spec.name, pid })
        } else {
          this.store.put({ ...rec, state: inDoubt ? 'in-doubt' : 'stopped', runtime: undefined })
          this.log.warn('workload not running after restart', { image: rec.spec.name, was: rec.state, now: inDoubt ? 'in-doubt' : 'stopped' })
        }
        continue
      }
      if (inDoubt) {
        this.track({ ...rec, state: 'in-doubt' }, w, 'in-doubt')
        this.log.error('node stopped after a COMMIT went out: the workload is kept paused, the destination may run it', { image: rec.spec.name, to: rec.migration?.to })
        continue
      }
      if (rec.state === 'migrating') await w.controller.resume()
      this.track({ ...rec, migration: undefined }, w)
      this.log.info('took back running workload', { image: rec.spec.name, pid: w.pid, was: rec.state })
    }
    await this.reapStale()
  }

  /** Run directories no image owns: left by incoming migrations a crash interrupted. */
  private async reapStale (): Promise<void> {
    const owned = new Set(this.store.list().flatMap(r => typeof r.runtime?.runDir === 'string' ? [r.runtime.runDir] : []))
    for (const d of existsSync(this.runRoot) ? readdirSync(this.runRoot) : []) {
      const dir = join(this.runRoot, d)
      if (owned.has(dir) || (!d.startsWith('in-') && this.store.has(d))) continue
      for (const driver of this.drivers.values()) await driver.reap?.(dir).catch(() => {})
      rmSync(dir, { recursive: true, force: true })
      this.log.info('removed a stale run directory', { dir })
    }
  }

  private track (rec: ImageRecord, w: RunningWorkload, state: ImageRecord['state'] = 'running'): void {
    const name = rec.spec.name
    this.running.set(name, w)
    void w.exited.then((code) => {
      if (this.running.get(name) !== w) return
      this.running.delete(name)
      if (this.store.has(name)) {
        const now = this.store.get(name)
        this.store.put({ ...now, state: now.state === 'in-doubt' ? 'in-doubt' : 'stopped', runtime: undefined })
      }
      this.log.warn('workload exited', { image: name, code })
    })
    this.store.put({ ...rec, state, runtime: w.runtime })
  }
}
