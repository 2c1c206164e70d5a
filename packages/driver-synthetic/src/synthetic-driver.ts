import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { openSync, closeSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join, dirname } from 'node:path'
import { createInterface } from 'node:readline'
import { CacheMeta, cacheMetaPaths, DirtyMarks, DutyCycle, formatSize, InvalidDriverConfigError, InvalidImageError, WorkloadError } from '@shoal/core'
import type { ArrivalCheck, Driver, DriverImage, PreparedLaunch, RunningWorkload } from '@shoal/core'
import { initImage, readHeader, verifyImage, workloadBinPath } from '@shoal/workload'
import type { OpsSnapshot } from '@shoal/workload'
import { processArgs, processStartTime, waitForExit } from './process-info.js'
import { FIXED_PAUSE_MS, FULL_CHECK_MS_PER_GIB, DEFAULT_CACHE_READ_RATE, DEFAULT_RECORD_RATE, DEFAULT_WORKLOAD_RATE, READY_TIMEOUT_MS, SYNTHETIC_MIN_MEMORY_SIZE, THROTTLE_RUN_MS } from './constants.js'

/** Driver settings of a synthetic image (they travel with the image). */
export interface SyntheticConfig {
  /** Page writes per second. */
  rate?: number
  /** Cache records appended per second. */
  recordRate?: number
  /**
   * Cache blocks read per second (default 0), at random beyond the records, each checked against
   * the volume's block hashes (`shoal-workload run --cache-reads`); a wrong read is logged and
   * counted as `badCacheReads` in the ops file. Only a cache that caches a volume has hashes to
   * check against: for any other cache the reads are not made.
   */
  cacheReadRate?: number
  /** `cooperative`: the workload marks the pages it writes in a marks file beside its memory. */
  tracker?: 'scan' | 'cooperative'
  /**
   * What a destination checks before resuming the workload, inside the pause: `quick` (default:
   * the header against the device state; the image's SHA-256 already matched) or `full` (every
   * page stamp and record, ~0.3 s per GiB).
   */
  arrivalCheck?: 'quick' | 'full'
}

/** A booted `shoal-workload standby` process, waiting on stdin for the arguments of `run`. */
class StandbyWorkload implements PreparedLaunch {
  private taken = false
  constructor (readonly child: ChildProcess) {}
  /** Claims the process for a launch (once). */
  take (): boolean {
    if (this.taken || this.child.exitCode != null) return false
    this.taken = true
    return true
  }

  async cancel (): Promise<void> {
    if (this.taken) return
    this.taken = true
    if (this.child.exitCode == null && this.child.signalCode == null) {
      const exited = new Promise(resolve => this.child.once('exit', resolve))
      this.child.kill('SIGKILL')
      await exited
    }
  }
}

/** Device state of a synthetic workload: its counters at pause, read from its header page. */
interface SyntheticState { writes: number, records: number }

const CONFIG_KEYS = new Set(['rate', 'recordRate', 'cacheReadRate', 'tracker', 'arrivalCheck'])

/** Checks a synthetic image's config; throws {@link InvalidDriverConfigError} naming the field. */
export function validateSyntheticConfig (config: Record<string, unknown>): SyntheticConfig {
  if (typeof config !== 'object' || config == null || Array.isArray(config)) throw new InvalidDriverConfigError('synthetic driver config must be an object')
  for (const k of Object.keys(config)) {
    if (!CONFIG_KEYS.has(k)) throw new InvalidDriverConfigError(`synthetic driver: unknown config field ${JSON.stringify(k)} (known: ${[...CONFIG_KEYS].join(', ')})`)
  }
  const rate = (k: 'rate' | 'recordRate' | 'cacheReadRate', dflt: number): number => {
    const v = config[k] ?? dflt
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 10_000_000) throw new InvalidDriverConfigError(`synthetic driver: ${k} must be a number of ${k === 'cacheReadRate' ? 'reads' : 'writes'} per second in 0..1e7, got ${JSON.stringify(config[k])}`)
    return v
  }
  const tracker = config.tracker ?? 'scan'
  if (tracker !== 'scan' && tracker !== 'cooperative') throw new InvalidDriverConfigError(`synthetic driver: tracker must be scan or cooperative, got ${JSON.stringify(tracker)}`)
  const arrivalCheck = config.arrivalCheck ?? 'quick'
  if (arrivalCheck !== 'quick' && arrivalCheck !== 'full') throw new InvalidDriverConfigError(`synthetic driver: arrivalCheck must be quick or full, got ${JSON.stringify(arrivalCheck)}`)
  return { rate: rate('rate', DEFAULT_WORKLOAD_RATE), recordRate: rate('recordRate', DEFAULT_RECORD_RATE), cacheReadRate: rate('cacheReadRate', DEFAULT_CACHE_READ_RATE), tracker, arrivalCheck }
}

/**
 * Driver of the synthetic workload process (`@shoal/workload`): pause = SIGSTOP, resume =
 * SIGCONT, device state = the write and record counters at pause; on arrival the image is fully
 * verified against those counters before the workload resumes.
 */
export function createSyntheticDriver (): Driver {
  const deviceState = async (image: DriverImage): Promise<Uint8Array> => {
    const h = await readHeader(image.spec.memory.path)
    const state: SyntheticState = { writes: h.writes, records: h.records }
    return Buffer.from(JSON.stringify(state))
  }
  return {
    name: 'synthetic',
    deviceState,
    validateConfig: (config, geometry) => {
      // The workload's own rule, reported as an image error naming the size (not as the
      // workload's internal flag, which the user never typed).
      if (geometry.memorySize < SYNTHETIC_MIN_MEMORY_SIZE) {
        throw new InvalidImageError(`memory size must be at least ${formatSize(SYNTHETIC_MIN_MEMORY_SIZE)} for the synthetic workload (a header page and one data page), got ${formatSize(geometry.memorySize)} (--memory, memorySize)`)
      }
      return { ...validateSyntheticConfig(config) }
    },
    tracker: (config) => (config as SyntheticConfig).tracker ?? 'scan',
    async initImage (spec, opts) {
      await initImage({ memoryPath: spec.memory.path, memorySize: spec.memory.size, cachePath: spec.cache.path, cacheSize: spec.cache.size, fill: opts.fill ?? 'zero' })
    },
    async prepareLaunch () {
      // A workload process that has booted and waits on stdin for its arguments.
      const child = spawn(process.execPath, [workloadBinPath, 'standby'], { stdio: ['pipe', 'pipe', 'ignore'] })
      const booted = new Promise<void>((resolve, reject) => {
        const lines = createInterface({ input: child.stdout! })
        lines.once('line', () => { lines.close(); resolve() })
        child.once('exit', (code) => { reject(new WorkloadError(`standby workload exited with ${code}`)) })
      })
      const timer = setTimeout(() => { child.kill('SIGKILL') }, READY_TIMEOUT_MS)
      try { await booted } finally { clearTimeout(timer) }
      return new StandbyWorkload(child)
    },
    async launch (image, resumeState, prepared) {
      const rec = image
      const cfg = rec.spec.driverConfig as SyntheticConfig
      const opsPath = join(dirname(rec.spec.cache.path), 'ops.json')
      const args = [workloadBinPath, 'run', '--memory-path', rec.spec.memory.path, '--cache-path', rec.spec.cache.path,
        '--rate', String(cfg.rate ?? DEFAULT_WORKLOAD_RATE), '--record-rate', String(cfg.recordRate ?? DEFAULT_RECORD_RATE),
        '--ops-file', opsPath]
      // Cooperative tracking: fresh marks files; the workload marks every page and cache block
      // before writing it.
      const blockMarks: string[] = []
      if (cfg.tracker === 'cooperative') {
        DirtyMarks.create(`${rec.spec.memory.path}.marks`, rec.spec.memory.size / rec.spec.memory.pageSize)
        DirtyMarks.create(`${rec.spec.cache.path}.marks`, rec.spec.cache.size / rec.spec.cache.blockSize)
        args.push('--marks', `${rec.spec.memory.path}.marks`)
        blockMarks.push('--cache-marks', `${rec.spec.cache.path}.marks`)
      }
      // A cache that caches a volume: the workload marks the blocks it writes (before writing),
      // and may read blocks and check them against the volume's hashes.
      const volumeCache = CacheMeta.exists(rec.spec.cache.path)
      if (volumeCache) blockMarks.push('--dirty-marks', cacheMetaPaths(rec.spec.cache.path).dirty)
      const cacheReadRate = cfg.cacheReadRate ?? DEFAULT_CACHE_READ_RATE
      if (volumeCache && cacheReadRate > 0) blockMarks.push('--cache-reads', String(cacheReadRate), '--cache-hashes', cacheMetaPaths(rec.spec.cache.path).hashes)
      // Post-copy: the cache is still arriving; the workload asks for a missing block before touching it.
      if (image.postcopy != null) blockMarks.push('--cache-present', image.postcopy.presentPath, '--cache-faults', image.postcopy.faultSocket)
      if (blockMarks.length > 0) args.push(...blockMarks, '--block-size', String(rec.spec.cache.blockSize))
      // A migrated image was fully checked by check() just before launch; `run` continues from
      // its header counters, so `--resume` (which would verify the whole image again) is not used.
      // The same arguments go to a prepared (standby) process on its stdin.
      void resumeState
      let child: ChildProcess
      if (prepared instanceof StandbyWorkload && prepared.take()) {
        child = prepared.child
        child.stdin!.end(JSON.stringify(args.slice(1)) + '\n')
      } else {
        const logFd = openSync(join(dirname(rec.spec.cache.path), 'workload.log'), 'a')
        child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', logFd] })
        closeSync(logFd)
      }
      const exited = new Promise<number | null>(resolve => { child.once('exit', code => { resolve(code) }) })
      await new Promise<void>((resolve, reject) => {
        const lines = createInterface({ input: child.stdout! })
        const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new WorkloadError('workload did not become ready')) }, READY_TIMEOUT_MS)
        lines.on('line', (line) => {
          if (line.includes('"ready"')) { clearTimeout(timer); resolve() }
        })
        void exited.then((code) => { clearTimeout(timer); reject(new WorkloadError(`workload exited with ${code} before it was ready (see workload.log)`)) })
      })
      child.stdout?.resume()
      const signal = (sig: NodeJS.Signals): void => {
        if (child.exitCode == null && child.signalCode == null) child.kill(sig)
      }
      return controlled(rec, child.pid!, exited, signal, deviceState)
    },
    async adopt (image) {
      // A workload that kept running while its node was down: the same process (pid and start
      // time), running this image. It is taken back as it is; the node decides whether to resume it.
      const pid = image.runtime?.pid
      const startTime = image.runtime?.startTime
      if (typeof pid !== 'number' || typeof startTime !== 'number' || processStartTime(pid) !== startTime) return undefined
      // Its command line names the image, or it is a standby process that got its arguments on
      // stdin (a workload started by an incoming migration); pid and start time already match.
      const args = processArgs(pid) ?? []
      if (!args.includes(image.spec.memory.path) && !(args.includes(workloadBinPath) && args.includes('standby'))) return undefined
      const signal = (sig: NodeJS.Signals): void => {
        if (processStartTime(pid) === startTime) process.kill(pid, sig)
      }
      return controlled(image, pid, waitForExit(pid, startTime), signal, deviceState)
    },
    async verify (rec, running) {
      // A writer that runs tears pages under the reader: its own check needs it stopped.
      if (running) return { detail: 'the workload runs: stop it (or migrate it) for its own check of every page stamp and record' }
      const v = await verifyImage({ memoryPath: rec.spec.memory.path, cachePath: rec.spec.cache.path })
      if (v.ok) return { ok: true, detail: `every page stamp and record verified (${v.pagesChecked} pages, ${v.recordsChecked} records)` }
      return { ok: false, detail: [`${v.badPageCount} bad pages`, `${v.badRecordCount} bad records`, ...v.errors.slice(0, 3)].join('; ') }
    },
    async check (rec, deviceState) {
      if (deviceState.byteLength === 0) return { ok: true, detail: 'the source was not running: the workload starts from its image' }
      let state: SyntheticState
      try {
        state = JSON.parse(Buffer.from(deviceState).toString('utf8')) as SyntheticState
        if (!Number.isSafeInteger(state.writes) || !Number.isSafeInteger(state.records)) throw new Error('bad counters')
      } catch {
        return { ok: false, detail: 'device state is not a synthetic workload state' }
      }
      if ((rec.spec.driverConfig as SyntheticConfig).arrivalCheck !== 'full') {
        // The image's SHA-256 already matched the source's at pause; check that the header agrees
        // with the device state, and leave the page-by-page check to `arrivalCheck: 'full'`.
        const h = await readHeader(rec.spec.memory.path).catch((err: Error) => err)
        if (h instanceof Error) return { ok: false, detail: `header: ${h.message}` }
        const ok = h.writes === state.writes && h.records === state.records
        return { ok, detail: ok ? `header agrees with the device state (${h.writes} page writes, ${h.records} records; quick check)` : `header has ${h.writes} writes / ${h.records} records, device state ${state.writes} / ${state.records}` }
      }
      const r = await verifyImage({ memoryPath: rec.spec.memory.path, cachePath: rec.spec.cache.path, writes: state.writes, records: state.records })
      const detail = r.ok
        ? `${r.writes} page writes and ${r.records} records present (${r.pagesChecked} pages checked)`
        : `${r.badPageCount} bad pages, ${r.badRecordCount} bad records; ${[...r.errors, ...r.badPages.slice(0, 3).map(p => `page ${p.page}: ${p.reason}`)].join('; ')}`
      return { ok: r.ok, detail } satisfies ArrivalCheck
    }
  }
}

/**
 * The running workload of a synthetic image whose process is `pid`: pause = SIGSTOP, resume =
 * SIGCONT (throttle: a duty cycle of both), progress from its ops file, stop = SIGKILL,
 * terminate = SIGTERM then SIGKILL.
 */
function controlled (rec: DriverImage, pid: number, exited: Promise<number | null>, signal: (sig: NodeJS.Signals) => void, deviceState: (image: DriverImage) => Promise<Uint8Array>): RunningWorkload {
  const opsPath = join(dirname(rec.spec.cache.path), 'ops.json')
  let stopped = false
  // Auto-converge: a SIGSTOP/SIGCONT duty cycle; a migration pause always wins over it.
  const duty = new DutyCycle(async () => { signal('SIGSTOP') }, async () => { signal('SIGCONT') }, THROTTLE_RUN_MS)
  void exited.then(() => { duty.stop() })
  const cfg = rec.spec.driverConfig as SyntheticConfig
  const running: RunningWorkload = {
    pid,
    // The run directory too: a workload that arrived by migration runs in the one the migration
    // prepared (its post-copy fault socket is there), which a restarted node must keep.
    runtime: { pid, startTime: processStartTime(pid), runDir: rec.runDir },
    // A full arrival check reads the whole image on the destination inside the pause: tell the
    // planner what it costs (measured ~0.3 s per GiB here) instead of letting it assume 20 ms.
    ...(cfg.arrivalCheck === 'full' ? { fixedPauseMs: FIXED_PAUSE_MS + Math.ceil((rec.spec.memory.size + rec.spec.cache.size) / 2 ** 30 * FULL_CHECK_MS_PER_GIB) } : {}),
    exited,
    controller: {
      async pause () { await duty.pause() },
      async resume () { await duty.resume() },
      async throttle (f) { await duty.set(f) },
      async progress () {
        // The workload rewrites its ops file every second; an old one means it is not running.
        try {
          const v = JSON.parse(await readFile(opsPath, 'utf8')) as OpsSnapshot
          return Date.now() - v.t < 3000 ? { opsPerSec: v.opsPerSec } : undefined
        } catch {
          return undefined
        }
      },
      deviceState: async () => await deviceState(rec),
      async stop () {
        stopped = true
        duty.stop()
        signal('SIGKILL')
        await exited
      }
    },
    async terminate () {
      if (stopped) return
      stopped = true
      duty.stop()
      signal('SIGCONT')
      signal('SIGTERM')
      const t = setTimeout(() => { signal('SIGKILL') }, 5000)
      await exited
      clearTimeout(t)
    }
  }
  return running
}
