import { openSync, closeSync, existsSync, ftruncateSync, readFileSync, writeSync } from 'node:fs'
import { randomFillSync } from 'node:crypto'
import { DutyCycle, WorkloadError } from '@shoal/core'
import type { ArrivalCheck, Driver, DriverImage, ImageSpec, PreparedLaunch, RunningWorkload } from '@shoal/core'
import { CACHE_DRIVE, cacheDriveNodes, moveCacheToFile, moveCacheToNbd } from './cache-drive.js'
import type { CacheExport } from './cache-drive.js'
import { THROTTLE_RUN_MS, VM_FIXED_PAUSE_MS } from './constants.js'
import { isQemuStream } from './device-state.js'
import { qemuDiskDirtySource } from './disk-dirty-bitmap.js'
import { kvmWorks } from './kvm-probe.js'
import { checkPeerConfig, defaultTrustedDirs } from './peer-config.js'
import { validateQemuConfig } from './qemu-config.js'
import type { QemuConfig } from './qemu-config.js'
import { isQemuProcess, QemuVm } from './qemu-vm.js'
import { linkImageFiles, vmPaths } from './command-line.js'
import { checkTestGuest } from './test-guest.js'

/** Options of {@link createQemuDriver}. */
export interface QemuDriverInit {
  /** Decides whether KVM works for `accel: 'auto'` (default: boot the guest's kernel under KVM, see `kvmWorks`). */
  probeKvm?: (binary: string, kernel: string) => Promise<boolean>
  /** Where the driver says what it did (resume timings) and what an operator must know (a VM adopted in a state it will not resume). */
  logger?: { info: (msg: string, fields?: Record<string, unknown>) => void, warn: (msg: string, fields?: Record<string, unknown>) => void }
  /**
   * Directories whose kernels and initrds a VM migrated in from a peer may boot (a peer's config
   * naming another file is refused). Default: `/boot`, `/var/lib/shoal`, `/usr/share/shoal` and the
   * test guest's build cache (`$SHOAL_GUEST_DIR` or `~/.cache/shoal/guest`).
   */
  trustedDirs?: string[]
}

/** A VM started with `-incoming defer` ahead of the switchover, waiting for its device state. */
class PreparedVm implements PreparedLaunch {
  private taken = false
  constructor (readonly vm: QemuVm) {}
  take (): boolean {
    if (this.taken) return false
    this.taken = true
    return true
  }

  async cancel (): Promise<void> {
    if (this.taken) return
    this.taken = true
    await this.vm.kill()
  }
}

/** Where the driver says what it did and what an operator must know. */
type DriverLogger = NonNullable<QemuDriverInit['logger']>

/**
 * Post-copy: the export a VM reaches its still-arriving cache by. A VM speaks only a block
 * protocol, so a post-copy launch without an NBD export is refused (the local file has zeros
 * where blocks are missing).
 */
function postcopyExport (image: DriverImage): CacheExport | undefined {
  const pc = image.postcopy
  if (pc == null || image.spec.cache.size === 0) return undefined
  if (pc.nbd == null) throw new WorkloadError('post-copy: a VM reaches its cache disk only by NBD, and the node offers no NBD export for it')
  return pc.nbd
}

/** Whether the node's present bytes say every block has arrived (the file is gone once the node finished). */
function cacheComplete (presentPath: string): boolean {
  if (!existsSync(presentPath)) return true
  return readFileSync(presentPath).every(b => b === 1)
}

/**
 * `RunningWorkload.postcopyComplete` of a VM: moves its cache drive off the post-copy export
 * (see {@link moveCacheToFile}), the VM running throughout; says how long it took, whether QEMU
 * stopped the VM meanwhile (it should not) and which file the drive is on. Concurrent calls share
 * one move; a later call finds nothing to move. A VM that is gone (or goes meanwhile) has nothing
 * to move: the call resolves.
 */
function postcopyCompletion (vm: QemuVm, image: string, log?: DriverLogger): () => Promise<void> {
  let moving: Promise<void> | undefined
  const move = async (): Promise<void> => {
    if (!vm.reachable) return
    const stops: number[] = []
    const off = vm.qmp.onEvent(e => { if (e.event === 'STOP') stops.push(Date.now()) })
    const t0 = performance.now()
    try {
      if (!await moveCacheToFile(vm.qmp, vm.paths.disk)) return
      const ms = +(performance.now() - t0).toFixed(1)
      const status = await vm.status()
      const blocks = await vm.qmp.execute<Array<{ device: string, inserted?: { image?: { filename?: string } } }>>('query-block')
      const file = blocks.find(b => b.device === CACHE_DRIVE)?.inserted?.image?.filename
      log?.info('VM cache drive moved from the post-copy export to the local file', { image, pid: vm.pid, ms, status, stopped: stops.length > 0, file, nodes: [...(await cacheDriveNodes(vm.qmp)).keys()] })
    } catch (err) {
      if (!vm.reachable) return
      throw new WorkloadError(`could not move the VM's cache drive to the local file: ${(err as Error).message}`)
    } finally {
      off()
    }
  }
  return async () => {
    moving ??= move().finally(() => { moving = undefined })
    await moving
  }
}

function geometry (spec: ImageSpec): { memorySize: number, pageSize: number, cacheSize: number, blockSize: number } {
  return { memorySize: spec.memory.size, pageSize: spec.memory.pageSize, cacheSize: spec.cache.size, blockSize: spec.cache.blockSize }
}

/**
 * The QEMU driver: an image is a VM whose RAM is the image's memory file (a shared
 * `memory-backend-file` in the node's shm dir) and whose local cache disk is the image's cache
 * file (raw, virtio-blk). Pause = QMP `stop` (QEMU drains and flushes its disks before it
 * answers); device state = QEMU's own migration stream with `x-ignore-shared` (no RAM);
 * resume = `cont`. On a destination the VM is started with `-incoming defer` when the HELLO
 * arrives, loads the device state inside the pause, continues, and counts as arrived when QMP
 * says `running` and the guest prints its heartbeat on the serial console. Auto-converge is a
 * stop/cont duty cycle (QEMU's own cpu-throttle only acts inside QEMU's migration). Post-copy of
 * the cache: the VM's drive runs on the node's NBD export until the cache is complete, then moves
 * to the local file with no pause (cache-drive.ts).
 */
export function createQemuDriver (init: QemuDriverInit = {}): Driver {
  const probe = init.probeKvm ?? kvmWorks
  const trustedDirs = init.trustedDirs ?? defaultTrustedDirs()
  const configOf = (spec: ImageSpec): QemuConfig => validateQemuConfig(spec.driverConfig, geometry(spec))
  const accelOf = async (cfg: QemuConfig): Promise<'tcg' | 'kvm'> => cfg.accel === 'auto' ? ((await probe(cfg.binary, cfg.kernel)) ? 'kvm' : 'tcg') : cfg.accel

  /** The arrival check of a VM that was just continued: QMP says running, the guest's heartbeat appears. */
  const arrived = async (vm: QemuVm, cfg: QemuConfig, from: number, timeoutMs: number): Promise<void> => {
    const status = await vm.status()
    if (status !== 'running') throw new WorkloadError(`VM is ${status}, not running`)
    if (cfg.heartbeat != null) await vm.waitConsole(cfg.heartbeat, from, timeoutMs)
  }

  const workload = (vm: QemuVm, cfg: QemuConfig, image: string): RunningWorkload => {
    const duty = new DutyCycle(async () => { await vm.pause() }, async () => { await vm.cont() }, THROTTLE_RUN_MS)
    let ended = false
    void vm.exited.then(() => { duty.stop() })
    const end = async (): Promise<void> => {
      if (ended) return
      ended = true
      duty.stop()
      await vm.quit()
    }
    return {
      pid: vm.pid,
      exited: vm.exited,
      runtime: { runDir: vm.runDir, pid: vm.pid },
      terminate: end,
      // Device state out and in (~10 + ~15 ms), cont, and waiting for the guest's heartbeat.
      fixedPauseMs: VM_FIXED_PAUSE_MS,
      postcopyComplete: postcopyCompletion(vm, image, init.logger),
      cacheDirtySource: cfg.diskTracker === 'dirty-bitmap' ? (units, unitSize) => qemuDiskDirtySource(vm.qmp, vm.runDir, units, unitSize) : undefined,
      controller: {
        pause: async () => { await duty.pause() },
        resume: async () => { await duty.resume() },
        throttle: async (f) => { await duty.set(f) },
        deviceState: async () => await vm.saveState(),
        stop: end
      }
    }
  }

  /**
   * Post-copy: the cache may have completed while the VM was being started, before the node held
   * its workload to tell it: then the drive moves to the local file now (see the present bytes).
   */
  const started = async (w: RunningWorkload, image: DriverImage, exp: CacheExport | undefined): Promise<RunningWorkload> => {
    if (exp != null && image.postcopy != null && cacheComplete(image.postcopy.presentPath)) {
      await w.postcopyComplete?.().catch((err: Error) => {
        init.logger?.warn('post-copy: the cache completed while the VM started, and its drive could not move to the local file', { image: image.spec.name, error: err.message })
      })
    }
    return w
  }

  return {
    name: 'qemu',
    validateConfig: (config, image, origin) => {
      const cfg = validateQemuConfig(config, image)
      if (origin === 'peer') checkPeerConfig(cfg, trustedDirs)
      return { ...cfg }
    },
    tracker: () => 'scan',
    async initImage (spec, opts) {
      // RAM: a sparse file of zeros (the guest boots into it); cache disk: a raw file.
      for (const [path, size, fill] of [[spec.memory.path, spec.memory.size, false], [spec.cache.path, spec.cache.size, opts.fill === 'random']] as const) {
        const fd = openSync(path, 'wx')
        try {
          ftruncateSync(fd, size)
          if (fill) {
            const buf = Buffer.alloc(1024 * 1024)
            for (let off = 0; off < size; off += buf.length) writeSync(fd, randomFillSync(buf), 0, Math.min(buf.length, size - off), off)
          }
        } finally {
          closeSync(fd)
        }
      }
    },
    async prepareLaunch (image) {
      const cfg = configOf(image.spec)
      return new PreparedVm(await QemuVm.start(image.spec, cfg, image.runDir, { accel: await accelOf(cfg), incoming: true }))
    },
    // Post-copy (`image.postcopy`): the cache drive moves onto the node's NBD export while the VM
    // is paused, before its first `cont`, so no guest request ever reaches the local file's
    // missing blocks; it moves back when the node calls postcopyComplete.
    async launch (image, deviceState, prepared) {
      const cfg = configOf(image.spec)
      const exp = postcopyExport(image)
      if (deviceState == null || deviceState.byteLength === 0) {
        // A fresh boot (or a migrated image whose source VM was not running).
        await prepared?.cancel()
        const vm = await QemuVm.start(image.spec, cfg, image.runDir, { accel: await accelOf(cfg), incoming: false, paused: exp != null })
        try {
          if (exp != null) {
            await moveCacheToNbd(vm.qmp, exp)
            await vm.cont()
          }
          await arrived(vm, cfg, 0, cfg.bootTimeoutMs)
        } catch (err) {
          await vm.kill()
          throw new WorkloadError(`VM did not boot: ${(err as Error).message}`)
        }
        return await started(workload(vm, cfg, image.spec.name), image, exp)
      }
      const vm = prepared instanceof PreparedVm && prepared.take()
        ? prepared.vm
        : await QemuVm.start(image.spec, cfg, image.runDir, { accel: await accelOf(cfg), incoming: true })
      try {
        // The staged files were renamed into place: QEMU takes its disk over by the link's name.
        linkImageFiles(image.spec, vm.runDir)
        const t0 = performance.now()
        await vm.loadState(deviceState)
        const t1 = performance.now()
        if (exp != null) await moveCacheToNbd(vm.qmp, exp)
        const t1b = performance.now()
        const from = vm.serialOffset()
        await vm.cont()
        const t2 = performance.now()
        await arrived(vm, cfg, from, cfg.heartbeatTimeoutMs)
        const t3 = performance.now()
        init.logger?.info('VM resumed', { image: image.spec.name, pid: vm.pid, prepared: prepared != null, loadStateMs: +(t1 - t0).toFixed(1), ...(exp != null ? { toExportMs: +(t1b - t1).toFixed(1) } : {}), contMs: +(t2 - t1b).toFixed(1), heartbeatMs: +(t3 - t2).toFixed(1) })
      } catch (err) {
        await vm.kill()
        throw new WorkloadError(`migrated VM did not resume: ${(err as Error).message}`)
      }
      return await started(workload(vm, cfg, image.spec.name), image, exp)
    },
    /**
     * Takes a VM back after a node restart. A VM whose cache was still arriving by post-copy keeps
     * its drive on the node's NBD export: while the node is down its NBD client reconnects in the
     * background and guest requests wait (up to POSTCOPY_NBD_RECONNECT_DELAY_S, then they fail
     * with an I/O error in the guest). The restarted node serves the export again at the same
     * path (`<runDir>/cache.nbd`) when it takes the stream up again; the client reconnects and
     * sends the waiting requests again. The adopted workload's `postcopyComplete` reads the block
     * graph, not state of the node that started the VM, so it moves such a drive to the local file
     * when the node calls it (and does nothing for a drive already there). Shown by
     * test/e2e/qemu-postcopy.spec.ts (a destination node killed with SIGKILL during the stream).
     */
    async adopt (image: DriverImage) {
      const pid = image.runtime?.pid
      if (typeof pid !== 'number') return undefined
      const cfg = configOf(image.spec)
      const vm = await QemuVm.attach(image.runDir, pid)
      if (vm == null) return undefined
      const status = await vm.status()
      // A Shoal VM is never paused without its node holding it: a node that died inside a pause
      // or a throttle cycle left it so. A VM whose device state was taken (`postmigrate`) may be
      // running on the destination now: it stays paused until an operator decides.
      if (status === 'paused') await vm.cont()
      if (status === 'postmigrate') init.logger?.warn('adopted a VM whose device state was taken for a switchover: left paused (the destination may run it)', { image: image.spec.name, pid })
      return workload(vm, cfg, image.spec.name)
    },
    async reap (runDir) {
      const pid = Number(readFileSync(vmPaths(runDir).pidFile, 'utf8').trim())
      if (Number.isInteger(pid) && pid > 0 && isQemuProcess(pid)) process.kill(pid, 'SIGKILL')
    },
    async deviceState () { return new Uint8Array(0) },
    async verify (image, running) {
      // Only a guest that checks itself can say its data is whole: Shoal's test guest does.
      const append = configOf(image.spec).append ?? ''
      if (!append.includes('shoal.mem=')) return { detail: 'this VM\'s guest has no self-check Shoal can ask for (Shoal\'s test guest has one); check it from inside the guest' }
      if (!running) return { detail: 'the VM is not running: start it, and its test guest checks every RAM stamp and disk record it wrote' }
      const v = await checkTestGuest(image.runDir, 120_000)
      return { ok: v.ok, detail: v.line }
    },
    async check (image, deviceState, prepared): Promise<ArrivalCheck> {
      if (deviceState.byteLength === 0) return { ok: true, detail: 'the source VM was not running: the VM boots here' }
      if (!isQemuStream(deviceState)) return { ok: false, detail: 'device state is not a QEMU migration stream' }
      if (prepared instanceof PreparedVm) {
        const status = await prepared.vm.status().catch((err: Error) => `unreachable (${err.message})`)
        if (status !== 'inmigrate') return { ok: false, detail: `the VM prepared for this image is ${status}, not waiting for its device state` }
      }
      return { ok: true, detail: `QEMU device state of ${deviceState.byteLength} bytes; VM ${prepared != null ? 'prepared' : 'to be started'} with -incoming defer` }
    }
  }
}
