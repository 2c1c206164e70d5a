import { renameSync, rmSync, symlinkSync } from 'node:fs'
import { join } from 'node:path'
import type { ImageSpec } from '@shoal/core'
import { InvalidArgumentError } from '@shoal/core'
import { CACHE_DRIVE, CACHE_FILE_NODE, CACHE_RAW_NODE } from './cache-drive.js'
import { MAX_SOCKET_PATH } from './constants.js'
import type { QemuConfig } from './qemu-config.js'

/** Files of a VM inside its run directory. */
export interface VmPaths {
  /** Symlink to the image's memory file (QEMU's RAM). */
  ram: string
  /** Symlink to the image's cache file (QEMU's disk). QEMU reopens its disk by name when it
   * takes it over after a migration, and the node renames staged files into place at commit:
   * the link is repointed, the name QEMU knows stays. */
  disk: string
  qmp: string
  serial: string
  serialLog: string
  pidFile: string
  qemuLog: string
}

/** Where a VM keeps its sockets and logs in `runDir`; throws when a socket path would be too long. */
export function vmPaths (runDir: string): VmPaths {
  const p = {
    ram: join(runDir, 'ram'),
    disk: join(runDir, 'disk'),
    qmp: join(runDir, 'qmp.sock'),
    serial: join(runDir, 'serial.sock'),
    serialLog: join(runDir, 'serial.log'),
    pidFile: join(runDir, 'qemu.pid'),
    qemuLog: join(runDir, 'qemu.log')
  }
  if (Buffer.byteLength(p.serial) > MAX_SOCKET_PATH) throw new InvalidArgumentError(`run directory ${runDir} is too long for a unix socket path (max ${MAX_SOCKET_PATH} bytes): use a shorter data dir`)
  return p
}

/** Points the VM's `ram` and `disk` links in `runDir` at the image's files (atomically). */
export function linkImageFiles (spec: ImageSpec, runDir: string): void {
  const p = vmPaths(runDir)
  for (const [link, target] of [[p.ram, spec.memory.path], [p.disk, spec.cache.path]] as const) {
    const tmp = `${link}.new`
    rmSync(tmp, { force: true })
    symlinkSync(target, tmp)
    renameSync(tmp, link)
  }
}

/** Options of {@link qemuArgs}. */
export interface QemuArgsOptions {
  /** The accelerator actually used (`auto` resolved). */
  accel: 'tcg' | 'kvm'
  /** Start paused, waiting for the device state (`-incoming defer`). */
  incoming: boolean
  /** Start paused (`-S`) without waiting for a device state: a fresh boot that `cont` starts. */
  paused?: boolean
}

/** Escapes a value for QEMU's comma-separated option syntax (a comma is written twice). */
function optValue (v: string): string { return v.replaceAll(',', ',,') }

/**
 * The QEMU command line of an image's VM. Its RAM is the image's memory file, mapped shared, so
 * Shoal tracks and moves it itself; its cache disk is the image's cache file, raw, on virtio;
 * the serial console goes to a socket (for commands) and a log file (for the heartbeat); QMP on
 * a unix socket. Source and destination derive the same device model from the same spec, as
 * QEMU's migration requires.
 */
export function qemuArgs (spec: ImageSpec, cfg: QemuConfig, runDir: string, opts: QemuArgsOptions): string[] {
  const p = vmPaths(runDir)
  const memMiB = spec.memory.size / (1024 * 1024)
  const args = [
    '-name', optValue(`shoal-${spec.name}`),
    '-machine', `${cfg.machine},accel=${opts.accel},memory-backend=ram0`,
    '-m', `${memMiB}M`,
    '-smp', String(cfg.cpus),
    '-object', `memory-backend-file,id=ram0,size=${memMiB}M,mem-path=${optValue(p.ram)},share=on`,
    '-nodefaults', '-no-user-config', '-display', 'none',
    '-kernel', cfg.kernel,
    ...(cfg.initrd != null ? ['-initrd', cfg.initrd] : []),
    '-append', cfg.append
  ]
  if (spec.cache.size > 0) {
    // drop-cache=off: when QEMU takes its disk over after an incoming migration it would otherwise
    // fdatasync and drop the page cache of the whole file (for shared storage): with the cache
    // just written by Shoal that flush cost 250-450 ms inside the pause (measured).
    // Named nodes (format and file): post-copy moves the raw node's file child onto an NBD export
    // and back with blockdev-reopen (cache-drive.ts, which repeats these options in QMP form).
    // QEMU's migration stream carries the virtio-blk device's state, not the block graph's node
    // names: a source and a destination started with or without them stay compatible.
    args.push('-drive', `file=${optValue(p.disk)},format=raw,if=none,id=${CACHE_DRIVE},node-name=${CACHE_RAW_NODE},file.node-name=${CACHE_FILE_NODE},cache=writeback,aio=threads,discard=unmap,file.drop-cache=off`,
      '-device', `virtio-blk-pci,drive=${CACHE_DRIVE},id=cachedisk`)
  }
  args.push(
    '-chardev', `socket,id=ser0,path=${optValue(p.serial)},server=on,wait=off,logfile=${optValue(p.serialLog)},logappend=on`,
    '-serial', 'chardev:ser0',
    '-qmp', `unix:${optValue(p.qmp)},server=on,wait=off`,
    '-pidfile', p.pidFile
  )
  if (opts.incoming) args.push('-S', '-incoming', 'defer')
  else if (opts.paused === true) args.push('-S')
  return args
}
