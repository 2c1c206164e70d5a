import { resolve } from 'node:path'
import type { ImageVerification, NodeStatus, PullReport } from '@shoal/node'
import { checkGeometry, DEFAULT_BLOCK_SIZE, DEFAULT_PAGE_SIZE, formatSize, InvalidArgumentError, UnknownImageError } from '@shoal/core'
import { SYNTHETIC_MIN_MEMORY_SIZE } from '@shoal/driver-synthetic'
import { buildTestGuest, checkTestGuest, testGuestConfig } from '@shoal/driver-qemu'
import { call, socketOf } from '../control-client.js'
import { checkImageName, checkVolumeId } from '../args.js'
import { formatBytes, formatMs, formatRate } from '../format.js'

/** Options of `shoal image create`. */
export interface ImageCreateOptions {
  node: string
  driver: 'synthetic' | 'qemu'
  memory: number
  cache: number
  fill: 'zero' | 'random'
  rate: number
  recordRate: number
  blockSize?: number
  cacheVolume?: string
  tracker?: 'scan' | 'cooperative'
  /** qemu: guest kernel, initramfs, command line, vCPUs, accelerator, heartbeat string, binary. */
  kernel?: string
  initrd?: string
  append?: string
  cpus?: number
  accel?: 'tcg' | 'kvm' | 'auto'
  heartbeat?: string
  qemuBinary?: string
  /** qemu: run Shoal's test guest (built from Debian packages on first use). */
  testGuest: boolean
  /** Extra driver config as JSON (merged last). */
  config?: string
}

/** The driver config the options describe (the driver checks it). */
export async function driverConfigOf (o: ImageCreateOptions): Promise<Record<string, unknown>> {
  let extra: Record<string, unknown> = {}
  if (o.config != null) {
    try { extra = JSON.parse(o.config) as Record<string, unknown> } catch { throw new InvalidArgumentError('--config must be a JSON object') }
    if (typeof extra !== 'object' || extra == null || Array.isArray(extra)) throw new InvalidArgumentError('--config must be a JSON object')
  }
  if (o.driver === 'synthetic') {
    const qemuOnly = (['kernel', 'initrd', 'append', 'cpus', 'accel', 'heartbeat', 'qemuBinary'] as const).filter(k => o[k] != null)
    if (qemuOnly.length > 0 || o.testGuest) throw new InvalidArgumentError(`--${qemuOnly[0] ?? 'test-guest'} is a qemu driver option (add --driver qemu)`)
    return { rate: o.rate, recordRate: o.recordRate, ...extra }
  }
  const cfg: Record<string, unknown> = {}
  if (o.testGuest) {
    if (o.kernel != null || o.initrd != null) throw new InvalidArgumentError('--test-guest brings its own kernel and initrd: drop --kernel/--initrd')
    process.stderr.write('building the test guest (cached after the first time) ...\n')
    const guest = await buildTestGuest()
    Object.assign(cfg, testGuestConfig(guest, o.memory, { rate: o.rate, records: o.recordRate }))
  }
  if (o.kernel != null) cfg.kernel = resolve(o.kernel)
  if (o.initrd != null) cfg.initrd = resolve(o.initrd)
  if (o.append != null) cfg.append = o.append
  if (o.cpus != null) cfg.cpus = o.cpus
  if (o.accel != null) cfg.accel = o.accel
  if (o.heartbeat != null) cfg.heartbeat = o.heartbeat
  if (o.qemuBinary != null) cfg.binary = o.qemuBinary
  if (cfg.kernel == null && extra.kernel == null) throw new InvalidArgumentError('a qemu image needs --kernel PATH (or --test-guest)')
  return { ...cfg, ...extra }
}

/** `shoal image create <name>`: an image on a node (a synthetic workload or a QEMU VM). */
export async function runImageCreate (name: string, o: ImageCreateOptions): Promise<void> {
  if (o.fill !== 'zero' && o.fill !== 'random') throw new InvalidArgumentError('--fill must be zero or random')
  checkCreateOptions(name, o)
  const rec = await call(socketOf(o.node), 'POST', '/images', {
    name, driver: o.driver, memorySize: o.memory, cacheSize: o.cache, fill: o.fill, blockSize: o.blockSize, cacheVolume: o.cacheVolume, tracker: o.tracker, config: await driverConfigOf(o)
  })
  process.stdout.write(JSON.stringify(rec) + '\n')
}

/**
 * Checks `image create`'s name and sizes with the rules the node and the wire apply (limits.ts),
 * naming the flags: what passes here can be created and migrated.
 */
export function checkCreateOptions (name: string, o: Pick<ImageCreateOptions, 'driver' | 'memory' | 'cache' | 'blockSize' | 'cacheVolume'>): void {
  checkImageName(name)
  if (o.cacheVolume != null) checkVolumeId(o.cacheVolume)
  checkGeometry({
    memorySize: o.memory, pageSize: DEFAULT_PAGE_SIZE,
    // A cache that caches a volume takes its size and block size from the volume.
    cacheSize: o.cacheVolume != null ? 0 : o.cache, blockSize: o.blockSize ?? DEFAULT_BLOCK_SIZE
  }, InvalidArgumentError, { memorySize: '--memory', pageSize: 'the page size', cacheSize: '--cache', blockSize: '--block-size' })
  if (o.driver === 'synthetic' && o.memory < SYNTHETIC_MIN_MEMORY_SIZE) {
    throw new InvalidArgumentError(`--memory must be at least ${formatSize(SYNTHETIC_MIN_MEMORY_SIZE)} for the synthetic workload (a header page and one data page) (got ${formatSize(o.memory)})`)
  }
}

/** `shoal image check <name>`: the test guest's own check of its RAM and disk (QEMU images running it). */
export async function runImageCheck (name: string, o: { node: string, json: boolean }): Promise<void> {
  checkImageName(name)
  const s = await call(socketOf(o.node), 'GET', '/status') as NodeStatus
  const img = s.images.find(i => i.spec.name === name)
  if (img == null) throw new UnknownImageError(`no image named ${JSON.stringify(name)} on this node`)
  const runDir = img.runtime?.runDir
  if (img.spec.driver !== 'qemu' || img.state !== 'running' || typeof runDir !== 'string') throw new InvalidArgumentError(`${name} is not a running QEMU image`)
  const v = await checkTestGuest(runDir, 120_000)
  process.stdout.write(o.json ? JSON.stringify(v) + '\n' : `${name}: ${v.ok ? 'OK' : 'FAILED'} - ${v.line}\n`)
  if (!v.ok) process.exitCode = 1
}

/** `shoal image verify <name>`: its cache against its volume and the workload's own check; exit 1 when one failed. */
export async function runImageVerify (name: string, o: { node: string, json: boolean }): Promise<void> {
  checkImageName(name)
  const v = await call(socketOf(o.node), 'POST', `/images/${encodeURIComponent(name)}/verify`) as ImageVerification
  if (o.json) process.stdout.write(JSON.stringify(v) + '\n')
  else {
    const verdict = v.ok === true ? 'OK' : v.ok === false ? 'FAILED' : 'NOT CHECKED'
    process.stdout.write([`${name}: ${verdict}`, ...v.checks.map(c => `  ${c.check}: ${c.ok === true ? 'ok' : c.ok === false ? 'FAILED' : 'skipped'} - ${c.detail}`)].join('\n') + '\n')
  }
  if (v.ok === false) process.exitCode = 1
}

/** `shoal image start <name>`: starts its workload. */
export async function runImageStart (name: string, o: { node: string, force?: boolean }): Promise<void> {
  checkImageName(name)
  const rec = await call(socketOf(o.node), 'POST', `/images/${encodeURIComponent(name)}/start${o.force === true ? '?force=1' : ''}`)
  process.stdout.write(JSON.stringify(rec) + '\n')
}

/** `shoal volume import <id> <file>`: the node serves the file's blocks as a replica volume. */
export async function runVolumeImport (id: string, file: string, o: { node: string, blockSize?: number }): Promise<void> {
  checkVolumeId(id)
  const info = await call(socketOf(o.node), 'POST', '/volumes', { id, path: resolve(file), blockSize: o.blockSize })
  process.stdout.write(JSON.stringify(info) + '\n')
}

/** `shoal image hot <name> <from> [to]`: marks cache blocks [from, to) hot. */
export async function runImageHot (name: string, from: number, to: number | undefined, o: { node: string }): Promise<void> {
  checkImageName(name)
  await call(socketOf(o.node), 'POST', `/images/${encodeURIComponent(name)}/hot`, { from, to: to ?? from + 1 })
}

/** `shoal volume pull <id>`: the node becomes a replica, pulling from every peer that holds the volume. */
export async function runVolumePull (id: string, o: { node: string, from?: string[], json: boolean }): Promise<void> {
  checkVolumeId(id)
  const r = await call(socketOf(o.node), 'POST', '/volumes/pull', { id, from: o.from }) as PullReport
  if (o.json) { process.stdout.write(JSON.stringify(r) + '\n'); return }
  process.stdout.write(`pulled ${r.id}: ${formatBytes(r.bytes)} in ${formatMs(r.ms)} (${formatRate(r.bytes / (r.ms / 1000))}), dedup ${formatBytes(r.dedupBytes)}, ${r.leftover} blocks not found\n`)
  for (const [peer, s] of Object.entries(r.sources)) {
    process.stdout.write(`  ${peer} ${formatBytes(s.bytes).padStart(10)} ${String(s.blocks).padStart(6)} blocks${s.corrupt > 0 ? `, ${s.corrupt} corrupt` : ''}${r.dropped[peer] != null ? `, dropped: ${r.dropped[peer]}` : ''}\n`)
  }
}

/** `shoal volume rm <id>`: drops a replica volume. */
export async function runVolumeRemove (id: string, o: { node: string }): Promise<void> {
  checkVolumeId(id)
  await call(socketOf(o.node), 'DELETE', `/volumes/${encodeURIComponent(id)}`)
}

/** `shoal image rm <name>`: stops its workload and deletes the image. */
export async function runImageRemove (name: string, o: { node: string }): Promise<void> {
  checkImageName(name)
  await call(socketOf(o.node), 'DELETE', `/images/${encodeURIComponent(name)}`)
}
