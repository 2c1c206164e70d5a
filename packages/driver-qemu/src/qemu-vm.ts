import { spawn } from 'node:child_process'
import { closeSync, openSync, readFileSync, rmSync } from 'node:fs'
import type { ImageSpec } from '@shoal/core'
import { isLiveProcess, WorkloadError } from '@shoal/core'
import { QUIT_TIMEOUT_MS } from './constants.js'
import { linkImageFiles, qemuArgs, vmPaths } from './command-line.js'
import type { VmPaths } from './command-line.js'
import { loadDeviceState, saveDeviceState, setMigrationCaps } from './device-state.js'
import { QmpClient } from './qmp-client.js'
import type { QemuConfig } from './qemu-config.js'
import { logSize, waitForLine } from './serial-log.js'

/** Whether a pid is a live QEMU process (not a zombie, not a recycled pid of something else). */
export function isQemuProcess (pid: number): boolean {
  try {
    if (!isLiveProcess(pid)) return false
    const argv0 = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0] ?? ''
    return /qemu/.test(argv0.slice(argv0.lastIndexOf('/') + 1))
  } catch {
    return false
  }
}

/**
 * One QEMU process of an image, driven over QMP: started by Shoal (fresh or waiting for its
 * device state) or attached again after a node restart. QEMU runs in its own process group, so
 * it outlives the node: a crashed node's VMs keep running and are adopted on restart.
 */
export class QemuVm {
  /** Resolves when QEMU has exited (its QMP connection closed), with its exit code when known. */
  readonly exited: Promise<number | null>
  private gone = false
  private constructor (readonly qmp: QmpClient, readonly pid: number, readonly paths: VmPaths, readonly runDir: string, childExit?: Promise<number | null>) {
    this.exited = childExit != null
      ? Promise.all([childExit, qmp.closed]).then(([code]) => code)
      : qmp.closed.then(async () => { await waitGone(pid); return null })
    void qmp.closed.then(() => { this.gone = true })
  }

  /** False once QEMU exited or its QMP connection closed (nothing more can be asked of it). */
  get reachable (): boolean { return !this.gone }

  /** Starts QEMU for `spec` (paused waiting for a device state when `incoming`; paused for a fresh boot when `paused`). */
  static async start (spec: ImageSpec, cfg: QemuConfig, runDir: string, opts: { accel: 'tcg' | 'kvm', incoming: boolean, paused?: boolean }): Promise<QemuVm> {
    const paths = vmPaths(runDir)
    for (const f of [paths.qmp, paths.serial, paths.pidFile]) rmSync(f, { force: true })
    linkImageFiles(spec, runDir)
    const logFd = openSync(paths.qemuLog, 'a')
    const child = spawn(cfg.binary, qemuArgs(spec, cfg, runDir, opts), { detached: true, stdio: ['ignore', 'ignore', logFd] })
    closeSync(logFd)
    const childExit = new Promise<number | null>(resolve => {
      child.once('exit', code => { resolve(code) })
      child.once('error', () => { resolve(null) })
    })
    child.unref()
    let qmp: QmpClient
    try {
      qmp = await Promise.race([
        QmpClient.connect(paths.qmp),
        childExit.then(code => { throw new WorkloadError(`QEMU exited with ${code} at start: ${lastLines(paths.qemuLog)}`) })
      ])
    } catch (err) {
      child.kill('SIGKILL')
      throw err
    }
    const vm = new QemuVm(qmp, child.pid!, paths, runDir, childExit)
    try {
      await setMigrationCaps(qmp)
    } catch (err) {
      await vm.kill()
      throw err
    }
    return vm
  }

  /** Attaches to a VM Shoal started earlier (after a node restart); undefined if it is gone. */
  static async attach (runDir: string, pid: number): Promise<QemuVm | undefined> {
    if (!isQemuProcess(pid)) return undefined
    const paths = vmPaths(runDir)
    const qmp = await QmpClient.connect(paths.qmp, { timeoutMs: 3000 })
    return new QemuVm(qmp, pid, paths, runDir)
  }

  /** QMP `query-status`: `running`, `paused`, `postmigrate`, `inmigrate`, ... */
  async status (): Promise<string> {
    return (await this.qmp.execute<{ status: string }>('query-status')).status
  }

  /** Stops the vCPUs; QEMU drains and flushes every disk before it answers (vm_stop). */
  async pause (): Promise<void> { await this.qmp.execute('stop') }

  /** Lets the vCPUs run again (and takes the disks back after a completed device-state save). */
  async cont (): Promise<void> { await this.qmp.execute('cont') }

  /** The device state of the stopped VM. */
  async saveState (): Promise<Uint8Array> { return await saveDeviceState(this.qmp, this.runDir) }

  /** Loads a device state into a VM started with `incoming`. */
  async loadState (state: Uint8Array): Promise<void> { await loadDeviceState(this.qmp, this.runDir, state) }

  /** Bytes in the serial log so far (where to look for the next heartbeat). */
  serialOffset (): number { return logSize(this.paths.serialLog) }

  /** Waits for a console line containing `needle` written after `from`. */
  async waitConsole (needle: string, from: number, timeoutMs: number): Promise<string> {
    return await waitForLine(this.paths.serialLog, from, needle, timeoutMs, { gone: this.exited })
  }

  /** Asks QEMU to quit; kills it if it has not exited within 5 s. */
  async quit (): Promise<void> {
    await this.qmp.execute('quit').catch(() => {})
    const t = setTimeout(() => { try { process.kill(this.pid, 'SIGKILL') } catch {} }, QUIT_TIMEOUT_MS)
    await this.exited
    clearTimeout(t)
  }

  /** Kills QEMU at once (a VM prepared for a migration that failed). */
  async kill (): Promise<void> {
    try { process.kill(this.pid, 'SIGKILL') } catch {}
    this.qmp.close()
    await this.exited
  }
}

async function waitGone (pid: number): Promise<void> {
  while (isQemuProcess(pid)) await new Promise(resolve => setTimeout(resolve, 20))
}

function lastLines (path: string): string {
  try { return readFileSync(path, 'utf8').trim().split('\n').slice(-3).join(' | ') } catch { return '(no log)' }
}
