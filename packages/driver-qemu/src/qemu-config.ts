import { accessSync, constants, statSync } from 'node:fs'
import { delimiter, isAbsolute, join } from 'node:path'
import { InvalidDriverConfigError } from '@shoal/core'
import type { ImageGeometry } from '@shoal/core'
import { DEFAULT_BOOT_TIMEOUT_MS, DEFAULT_CPUS, DEFAULT_HEARTBEAT_TIMEOUT_MS, DEFAULT_MACHINE, DEFAULT_QEMU_BINARY } from './constants.js'

/** How a VM's vCPUs run: `tcg` (emulation), `kvm`, or `auto` (KVM when a probe boots the guest's kernel under it). */
export type Accel = 'tcg' | 'kvm' | 'auto'

/** Driver config of a QEMU image (it travels with the image; the destination checks it again). */
export interface QemuConfig {
  /** Guest kernel (absolute path; must exist on every node the VM runs on). */
  kernel: string
  /** Initramfs (absolute path), if any. */
  initrd?: string
  /** Kernel command line; `console=ttyS0` is needed for the heartbeat check. */
  append: string
  /** vCPUs, 1..64 (default 1). */
  cpus: number
  /** Machine type (default `pc`). */
  machine: string
  /** `tcg`, `kvm` or `auto` (default `auto`). */
  accel: Accel
  /** QEMU binary, a name on PATH or an absolute path (default `qemu-system-x86_64`). */
  binary: string
  /**
   * A string the guest prints on its serial console at least every `heartbeatTimeoutMs`: a
   * migrated VM counts as arrived only when one appears after it resumed. Null: QMP's
   * `query-status` alone is the arrival check.
   */
  heartbeat: string | null
  /** How long a resumed guest may take to print its heartbeat (default 5 s). */
  heartbeatTimeoutMs: number
  /** How long a booting guest may take to print its first heartbeat (default 120 s). */
  bootTimeoutMs: number
  /** Always `scan`: a VM cannot mark the pages it writes. */
  tracker: 'scan'
  /**
   * How migrations find the cache disk's written blocks: `dirty-bitmap` (default: QEMU's block
   * dirty bitmaps, read over NBD; a round costs what changed) or `scan` (compare the whole disk
   * each round).
   */
  diskTracker: 'dirty-bitmap' | 'scan'
}

const KEYS = new Set(['kernel', 'initrd', 'append', 'cpus', 'machine', 'accel', 'binary', 'heartbeat', 'heartbeatTimeoutMs', 'bootTimeoutMs', 'tracker', 'diskTracker'])
const MiB = 1024 * 1024

function bad (msg: string): never { throw new InvalidDriverConfigError(`qemu driver: ${msg}`) }

function readableFile (field: string, v: unknown): string {
  if (typeof v !== 'string' || v === '') bad(`${field} must be the absolute path of a file`)
  if (!isAbsolute(v)) bad(`${field} must be an absolute path, got ${JSON.stringify(v)}`)
  try {
    if (!statSync(v).isFile()) bad(`${field} ${v} is not a regular file`)
    accessSync(v, constants.R_OK)
  } catch (err) {
    if (err instanceof InvalidDriverConfigError) throw err
    bad(`${field} ${v} cannot be read on this node (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
  }
  return v
}

function positiveInt (field: string, v: unknown, dflt: number, max: number): number {
  const n = v ?? dflt
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > max) bad(`${field} must be an integer in 1..${max}, got ${JSON.stringify(v)}`)
  return n
}

/** Finds an executable by name on PATH (or checks an absolute path); undefined when absent. */
export function findExecutable (name: string): string | undefined {
  const candidates = isAbsolute(name) ? [name] : (process.env.PATH ?? '').split(delimiter).filter(Boolean).map(d => join(d, name))
  for (const c of candidates) {
    try { accessSync(c, constants.X_OK); if (statSync(c).isFile()) return c } catch {}
  }
  return undefined
}

/**
 * Checks a QEMU image's config and the image's sizes against what a VM can use; returns the
 * config with defaults filled in. Throws {@link InvalidDriverConfigError} naming the field.
 */
export function validateQemuConfig (config: Record<string, unknown>, image: ImageGeometry): QemuConfig {
  if (typeof config !== 'object' || config == null || Array.isArray(config)) bad('config must be an object')
  for (const k of Object.keys(config)) if (!KEYS.has(k)) bad(`unknown config field ${JSON.stringify(k)} (known: ${[...KEYS].join(', ')})`)
  if (image.pageSize !== 4096) bad(`memory page size must be 4096 for a VM, got ${image.pageSize}`)
  if (image.memorySize < 16 * MiB || image.memorySize % (2 * MiB) !== 0) bad(`memory size must be a multiple of 2 MiB and at least 16 MiB, got ${image.memorySize} bytes`)
  if (image.cacheSize % 512 !== 0) bad(`cache disk size must be a multiple of 512 bytes, got ${image.cacheSize}`)
  const kernel = readableFile('kernel', config.kernel)
  const initrd = config.initrd == null ? undefined : readableFile('initrd', config.initrd)
  const append = config.append ?? 'console=ttyS0'
  if (typeof append !== 'string' || append.length > 4096 || /[\n\r]/.test(append)) bad('append must be one line of at most 4096 characters')
  const machine = config.machine ?? DEFAULT_MACHINE
  if (typeof machine !== 'string' || !/^[a-z][a-z0-9._-]{0,63}$/.test(machine)) bad(`machine must be a QEMU machine type name, got ${JSON.stringify(config.machine)}`)
  const accel = config.accel ?? 'auto'
  if (accel !== 'tcg' && accel !== 'kvm' && accel !== 'auto') bad(`accel must be tcg, kvm or auto, got ${JSON.stringify(accel)}`)
  const binary = config.binary ?? DEFAULT_QEMU_BINARY
  if (typeof binary !== 'string' || binary === '' || (!isAbsolute(binary) && binary.includes('/'))) bad('binary must be a program name on PATH or an absolute path')
  if (findExecutable(binary) == null) bad(`QEMU binary ${binary} not found on this node (install Debian's qemu-system-x86)`)
  const heartbeat = config.heartbeat ?? null
  if (heartbeat !== null && (typeof heartbeat !== 'string' || heartbeat === '' || heartbeat.length > 256 || /[\n\r]/.test(heartbeat))) bad('heartbeat must be a non-empty one-line string or null')
  const tracker = config.tracker ?? 'scan'
  if (tracker !== 'scan') bad(`tracker must be scan (a VM cannot mark the pages it writes), got ${JSON.stringify(tracker)}`)
  const diskTracker = config.diskTracker ?? 'dirty-bitmap'
  if (diskTracker !== 'dirty-bitmap' && diskTracker !== 'scan') bad(`diskTracker must be dirty-bitmap or scan, got ${JSON.stringify(diskTracker)}`)
  return {
    kernel,
    ...(initrd != null ? { initrd } : {}),
    append,
    cpus: positiveInt('cpus', config.cpus, DEFAULT_CPUS, 64),
    machine,
    accel,
    binary,
    heartbeat,
    heartbeatTimeoutMs: positiveInt('heartbeatTimeoutMs', config.heartbeatTimeoutMs, DEFAULT_HEARTBEAT_TIMEOUT_MS, 600_000),
    bootTimeoutMs: positiveInt('bootTimeoutMs', config.bootTimeoutMs, DEFAULT_BOOT_TIMEOUT_MS, 3_600_000),
    tracker,
    diskTracker
  }
}
