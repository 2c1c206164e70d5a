import { spawn, spawnSync } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { randomFillSync } from 'node:crypto'
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { MigrationReport } from '@shoal/core'
import { ImageStateError, InvalidArgumentError, NodeGoneError, VerificationFailedError, WorkloadError } from '@shoal/core'
import { buildTestGuest, checkTestGuest, findExecutable, testGuestConfig } from '@shoal/driver-qemu'
import type { NodeStatus } from '@shoal/node'
import { call } from '../control-client.js'
import { formatBytes } from '../format.js'
import { runMigrate } from './migrate.js'

/** Options of `shoal demo`. */
export interface DemoOptions {
  memory: number
  cache: number
  rate: number
  recordRate: number
  lanes: number
  keep?: boolean
  /** A QEMU VM (Shoal's test guest) instead of the synthetic workload. */
  vm?: boolean
}

interface DemoNode { ip: string, dir: string, socket: string, peerId: string, addrs: string[], proc: ChildProcess }

const BIN = fileURLToPath(new URL('../bin.js', import.meta.url))
const IPS = ['127.0.0.1', '127.0.0.2', '127.0.0.3']

/**
 * `shoal demo`: three `shoal node` processes on 127.0.0.1/.2/.3, a synthetic workload dirtying
 * memory on the first, migrated live to the second, with progress, report and the destination's
 * own check of the image. The image's cache caches a volume the third node holds a replica of, so
 * the destination pulls the cache's clean blocks from it while the source sends memory and the
 * blocks the workload wrote. Everything it starts and creates is removed at the end.
 */
export async function runDemo (o: DemoOptions): Promise<MigrationReport> {
  const say = (s: string): void => { process.stdout.write(s + '\n') }
  // A VM needs QEMU and the test guest: installed and built on first use, or a clear reason why not.
  const guest = o.vm === true ? await prepareVm(say) : undefined
  const root = mkdtempSync(join(tmpdir(), 'shoal-demo-'))
  // Memory files live on tmpfs (RAM): they get their own directory, removed at the end too.
  const shm = mkdtempSync(join('/dev/shm', 'shoal-demo-'))
  const nodes: DemoNode[] = []
  let cleaning: Promise<void> | undefined
  const cleanup = async (): Promise<void> => {
    cleaning ??= (async () => {
      await Promise.all(nodes.map(async n => { await stopProc(n.proc) }))
      if (o.keep !== true) {
        rmSync(root, { recursive: true, force: true })
        rmSync(shm, { recursive: true, force: true })
      }
    })()
    await cleaning
  }
  // Ctrl-C: stop the three nodes (and their workloads) and remove everything, then exit.
  const onInt = (): void => { void cleanup().finally(() => process.exit(130)) }
  process.on('SIGINT', onInt)
  try {
    // The replica starts first; the others find it through --bootstrap (the destination then knows it).
    const replica = await startNode(IPS[2]!, join(root, IPS[2]!), join(shm, IPS[2]!))
    const bootstrap = `${replica.addrs[0]!}/p2p/${replica.peerId}`
    nodes.push(await startNode(IPS[0]!, join(root, IPS[0]!), join(shm, IPS[0]!), bootstrap))
    nodes.push(await startNode(IPS[1]!, join(root, IPS[1]!), join(shm, IPS[1]!), bootstrap))
    nodes.push(replica)
    for (const n of nodes) {
      for (const m of nodes) if (m !== n) await call(n.socket, 'POST', '/allow', { peerId: m.peerId })
      say(`node ${n.ip}  peer ${n.peerId}  (${n.addrs[0] ?? ''})`)
    }
    const [a, b, c] = nodes as [DemoNode, DemoNode, DemoNode]
    say(`\nvolume base: ${formatBytes(o.cache)} of random blocks, held by ${a.ip} (whose cache caches it) and by ${c.ip} (a replica) ...`)
    const volumeFile = join(root, 'base.img')
    writeRandomFile(volumeFile, o.cache)
    for (const n of [a, c]) await call(n.socket, 'POST', '/volumes', { id: 'base', path: volumeFile })
    rmSync(volumeFile)
    if (guest == null) {
      say(`creating image vm1 on ${a.ip}: ${formatBytes(o.memory)} memory (random) + ${formatBytes(o.cache)} cache caching volume base ...`)
      await call(a.socket, 'POST', '/images', { name: 'vm1', memorySize: o.memory, cacheSize: o.cache, cacheVolume: 'base', tracker: 'cooperative', fill: 'random', config: { rate: o.rate, recordRate: o.recordRate, arrivalCheck: 'quick' } })
      await call(a.socket, 'POST', '/images/vm1/start')
      say(`workload running: ${o.rate} page writes/s (90% to a hot set, each page marked for the cooperative tracker), ${o.recordRate} cache records/s`)
    } else {
      say(`creating VM vm1 on ${a.ip}: QEMU, ${formatBytes(o.memory)} RAM in a shared file + a ${formatBytes(o.cache)} virtio cache disk caching volume base ...`)
      await call(a.socket, 'POST', '/images', {
        name: 'vm1', driver: 'qemu', memorySize: o.memory, cacheSize: o.cache, cacheVolume: 'base',
        config: { ...testGuestConfig(guest, o.memory, { rate: o.rate, records: o.recordRate }), accel: 'auto' }
      })
      say('booting it (accel auto: KVM if a probe boots the kernel under it, else TCG) ...')
      await call(a.socket, 'POST', '/images/vm1/start')
      const runDir = await vmRunDir(a)
      const v = await checkTestGuest(runDir)
      say(`guest up: dirtying ${o.rate} pages/s, ${o.recordRate} checksummed disk records/s; its own check: ${v.ok ? 'OK' : 'FAILED'} (${v.writes} page writes, ${v.records} records)`)
    }
    await new Promise(resolve => setTimeout(resolve, 1000))
    say(`migrating vm1 live from ${a.ip} to ${b.ip} over ${o.lanes} lanes ...\n`)
    const report = await runMigrate('vm1', { to: `${b.addrs[0]!}`, node: a.dir, lanes: o.lanes, handleInterrupt: false })
    const dst = await call(b.socket, 'GET', '/status') as NodeStatus
    const img = dst.images.find(i => i.spec.name === 'vm1')
    say(`\non ${b.ip}: vm1 is ${img?.state ?? 'missing'}${img?.pid != null ? ` (pid ${img.pid})` : ''}`)
    say(`${guest != null ? 'VM' : 'workload'} check on arrival: ${img?.arrivalCheck?.ok === true ? 'OK' : 'FAILED'} - ${img?.arrivalCheck?.detail ?? 'no check'}`)
    if (!report.ok || img?.arrivalCheck?.ok !== true) throw new VerificationFailedError('demo migration did not verify')
    if (guest != null) {
      const v = await checkTestGuest(await vmRunDir(b))
      say(`the guest's own check after the move: ${v.ok ? 'OK' : 'FAILED'} - ${v.line}`)
      if (!v.ok) throw new VerificationFailedError('the guest found lost or corrupt data after the move')
    }
    say('\ndemo: migration verified, nothing lost.')
    return report
  } finally {
    await cleanup()
    process.off('SIGINT', onInt)
  }
}

/** Installs QEMU when missing (as root, from Debian's packages) and builds the test guest. */
async function prepareVm (say: (s: string) => void): Promise<Awaited<ReturnType<typeof buildTestGuest>>> {
  if (findExecutable('qemu-system-x86_64') == null) {
    if (process.getuid?.() !== 0) throw new InvalidArgumentError('shoal demo --vm needs QEMU: install Debian\'s qemu-system-x86 (apt-get install qemu-system-x86), or run the demo as root to have it installed')
    say('installing QEMU (qemu-system-x86) ...')
    const r = spawnSync('sh', ['-c', 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 qemu-utils'], { stdio: ['ignore', 'ignore', 'inherit'] })
    if (r.status !== 0) throw new WorkloadError('could not install qemu-system-x86 with apt-get')
  }
  say('building the test guest (Debian cloud kernel + busybox initramfs + a static RAM/disk dirtier; cached after the first time) ...')
  return await buildTestGuest()
}

async function vmRunDir (n: DemoNode): Promise<string> {
  const s = await call(n.socket, 'GET', '/status') as NodeStatus
  const dir = s.images.find(i => i.spec.name === 'vm1')?.runtime?.runDir
  if (typeof dir !== 'string') throw new ImageStateError(`vm1 is not running on ${n.ip}`)
  return dir
}

/** Writes `size` random bytes in 16 MiB pieces. */
function writeRandomFile (path: string, size: number): void {
  const fd = openSync(path, 'w')
  try {
    const piece = Buffer.allocUnsafe(16 * 2 ** 20)
    for (let off = 0; off < size; off += piece.byteLength) {
      const n = Math.min(piece.byteLength, size - off)
      randomFillSync(piece, 0, n)
      writeSync(fd, piece, 0, n, off)
    }
  } finally {
    closeSync(fd)
  }
}

async function startNode (ip: string, dir: string, shmDir: string, bootstrap?: string): Promise<DemoNode> {
  const args = [BIN, 'node', '--data-dir', dir, '--shm-dir', shmDir, '--listen', `/ip4/${ip}/tcp/0`, ...(bootstrap != null ? ['--bootstrap', bootstrap] : [])]
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  const logs: string[] = []
  proc.stderr!.on('data', (d: Buffer) => { logs.push(d.toString()); if (logs.length > 50) logs.shift() })
  return await new Promise<DemoNode>((resolve, reject) => {
    const lines = createInterface({ input: proc.stdout! })
    lines.once('line', (line) => {
      const v = JSON.parse(line) as { peerId: string, addrs: string[] }
      resolve({ ip, dir, socket: join(dir, 'control.sock'), peerId: v.peerId, addrs: v.addrs, proc })
    })
    proc.once('exit', (code) => { reject(new NodeGoneError(`node on ${ip} exited with ${code}: ${logs.join('')}`)) })
  })
}

async function stopProc (p: ChildProcess): Promise<void> {
  if (p.exitCode != null || p.signalCode != null) return
  const exited = new Promise(resolve => p.once('exit', resolve))
  p.kill('SIGTERM')
  const t = setTimeout(() => { p.kill('SIGKILL') }, 10_000)
  await exited
  clearTimeout(t)
}
