// End to end with real QEMU: two real Shoal nodes on loopback, a real VM (Shoal's test guest
// under TCG: 128 MiB RAM, a 64 MiB cache disk) dirtying RAM and writing checksummed records to
// its disk while Shoal migrates it live; the guest checks itself after the move.
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { readdirSync, readFileSync, copyFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { buildTestGuest, checkTestGuest, createQemuDriver, isQemuProcess, testGuestConfig } from '@shoal/driver-qemu'
import type { TestGuest } from '@shoal/driver-qemu'
import { InvalidDriverConfigError } from '@shoal/core'
import type { ShoalNode } from '@shoal/node'
import { startNode } from '../fixtures/nodes.js'
import { tempDir } from '../fixtures/temp.js'
import { killVmsUnder } from '../fixtures/qemu-vms.js'

const MiB = 2 ** 20
const BIN = fileURLToPath(new URL('../../packages/cli/dist/bin.js', import.meta.url))
let guest: TestGuest


async function vmImage (node: ShoalNode, name: string, extra: Record<string, unknown> = {}): Promise<void> {
  await node.createImage({
    name, driver: 'qemu', memorySize: 128 * MiB, cacheSize: 64 * MiB,
    config: { ...testGuestConfig(guest, 128 * MiB, { memMiB: 48, rate: 2000, records: 20 }), accel: 'tcg', ...extra }
  })
}

async function runDirOf (node: ShoalNode, name: string): Promise<{ runDir: string, pid: number }> {
  const img = (await node.status()).images.find(i => i.spec.name === name)
  expect(img?.state).toBe('running')
  return { runDir: img!.runtime!.runDir as string, pid: img!.pid! }
}

describe('live migration of a QEMU VM between two Shoal nodes', () => {
  const cleanups: Array<() => unknown> = []
  const dirs: string[] = []
  beforeAll(async () => { guest = await buildTestGuest() }, 900_000)
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })
  afterAll(() => { for (const d of dirs) killVmsUnder(d) })

  // Each node's data dir is known here, so a VM a failed test left behind can be found and killed.
  const node = async (ip: string): Promise<ShoalNode> => {
    const data = tempDir('qnode')
    dirs.push(data.path)
    cleanups.push(data.cleanup, () => { killVmsUnder(data.path) })
    const log = (level: string) => (msg: string, fields?: Record<string, unknown>) => { if (process.env.SHOAL_TEST_LOG != null) console.log(level, ip, msg, JSON.stringify(fields)) }
    const logger = { info: log('info'), warn: log('warn'), error: log('error') }
    return await startNode(ip, cleanups, { dataDir: data.path, logger, drivers: [createQemuDriver({ logger })] })
  }

  it('moves a dirtying VM live; the guest keeps running and its own check of RAM stamps and disk records passes', async () => {
    const a = await node('127.0.0.1')
    const b = await node('127.0.0.2')
    b.allowPeer(a.peerId)
    await vmImage(a, 'vm1')
    await a.startImage('vm1') // resolves once the guest printed its first heartbeat
    const before = await runDirOf(a, 'vm1')
    await new Promise(resolve => setTimeout(resolve, 1000))
    const v0 = await checkTestGuest(before.runDir)
    expect(v0.ok, v0.line).toBe(true)

    const report = await a.migrate('vm1', b.addrs()[0]!, { lanes: 2, downtimeTargetMs: 500 })
    expect(report.ok).toBe(true)
    expect(report.verified).toBe(true)
    expect(report.bytes).toBeGreaterThan(0)
    expect(report.downtimeMs).toBeGreaterThan(0)

    // The source VM is gone, its image with it; the destination runs the same guest.
    expect((await a.status()).images).toEqual([])
    expect(isQemuProcess(before.pid)).toBe(false)
    const after = await runDirOf(b, 'vm1')
    expect(after.pid).not.toBe(before.pid)
    const img = (await b.status()).images[0]!
    expect(img.arrivalCheck?.ok).toBe(true)
    const v1 = await checkTestGuest(after.runDir)
    expect(v1.ok, v1.line).toBe(true)
    // Counters continue from before the move (same guest, not a reboot).
    expect(v1.writes).toBeGreaterThan(v0.writes)
    expect(v1.records).toBeGreaterThan(v0.records)

    // And back again, while it keeps dirtying.
    a.allowPeer(b.peerId)
    const back = await b.migrate('vm1', a.addrs()[0]!, { lanes: 2, downtimeTargetMs: 500 })
    expect(back.ok).toBe(true)
    const v2 = await checkTestGuest((await runDirOf(a, 'vm1')).runDir)
    expect(v2.ok, v2.line).toBe(true)
    expect(v2.writes).toBeGreaterThan(v1.writes)
  })

  it('refuses bad driver configuration with a clear error and creates nothing', async () => {
    const a = await node('127.0.0.1')
    const err = await a.createImage({ name: 'bad', driver: 'qemu', memorySize: 128 * MiB, cacheSize: 0, config: { kernel: '/nonexistent/vmlinuz' } }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(InvalidDriverConfigError)
    expect((err as Error).message).toMatch(/kernel \/nonexistent\/vmlinuz cannot be read on this node/)
    const err2 = await a.createImage({ name: 'bad', driver: 'qemu', memorySize: 128 * MiB, cacheSize: 0, config: { kernel: guest.kernel, tracker: 'cooperative' } }).catch((e: unknown) => e)
    expect((err2 as Error).message).toMatch(/tracker must be scan/)
    const err3 = await a.createImage({ name: 'bad', driver: 'vmware', memorySize: 128 * MiB, cacheSize: 0 }).catch((e: unknown) => e)
    expect((err3 as Error).message).toMatch(/no driver named "vmware" on this node/)
    expect((await a.status()).images).toEqual([])
  })

  it('a destination that refuses the image (its kernel is missing there) changes nothing; the VM keeps running on the source', async () => {
    const a = await node('127.0.0.1')
    const b = await node('127.0.0.2')
    b.allowPeer(a.peerId)
    // The VM boots from a kernel that is then removed: the destination cannot run it and says so
    // when the HELLO arrives, before it stages anything.
    const k = tempDir('kernel')
    cleanups.push(k.cleanup)
    copyFileSync(guest.kernel, join(k.path, 'vmlinuz'))
    await vmImage(a, 'vm2', { kernel: join(k.path, 'vmlinuz') })
    await a.startImage('vm2')
    rmSync(join(k.path, 'vmlinuz'))
    const err = await a.migrate('vm2', b.addrs()[0]!, { lanes: 2 }).catch((e: unknown) => e) as Error & { report?: { error?: { code: string } } }
    expect(err).toBeInstanceOf(Error)
    expect(err.message).toMatch(/kernel .* cannot be read on this node/)
    expect((await b.status()).images).toEqual([])
    const img = (await a.status()).images[0]!
    expect(img.state).toBe('running')
    const v = await checkTestGuest(img.runtime!.runDir as string)
    expect(v.ok, v.line).toBe(true)
  })

  it('a destination killed mid-migration leaves the VM running on the source, intact', async () => {
    const a = await node('127.0.0.1')
    const data = tempDir('dst')
    const shm = tempDir('dst-shm', '/dev/shm')
    cleanups.push(data.cleanup, shm.cleanup, () => { killVmsUnder(data.path) })
    const child: ChildProcess = spawn(process.execPath, [BIN, 'node', '--data-dir', data.path, '--shm-dir', shm.path, '--listen', '/ip4/127.0.0.2/tcp/0', '--allow', a.peerId, '--workers', '1'], { stdio: ['ignore', 'pipe', 'ignore'] })
    cleanups.push(async () => { if (child.exitCode == null && child.signalCode == null) { const e = new Promise(resolve => child.once('exit', resolve)); child.kill('SIGKILL'); await e } })
    const listening = await new Promise<{ peerId: string, addrs: string[] }>((resolve) => {
      createInterface({ input: child.stdout! }).once('line', l => { resolve(JSON.parse(l) as { peerId: string, addrs: string[] }) })
    })
    await vmImage(a, 'vm3')
    await a.startImage('vm3')
    let killed = false
    const err = await a.migrate('vm3', `${listening.addrs[0]!}`, {
      lanes: 2,
      maxRate: 8 * MiB, // slow enough that the kill lands in the middle of the copy
      onProgress: (p) => { if (!killed && p.bytes > 4 * MiB) { killed = true; child.kill('SIGKILL') } }
    }).catch((e: unknown) => e) as Error & { report?: { sourceResumed?: boolean } }
    expect(killed).toBe(true)
    expect(err).toBeInstanceOf(Error)
    const img = (await a.status()).images[0]!
    expect(img.state).toBe('running')
    const v = await checkTestGuest(img.runtime!.runDir as string)
    expect(v.ok, v.line).toBe(true)
    // The VM the destination had prepared (-incoming defer) is reaped when that node restarts.
    const restarted = spawn(process.execPath, [BIN, 'node', '--data-dir', data.path, '--shm-dir', shm.path, '--listen', '/ip4/127.0.0.2/tcp/0'], { stdio: ['ignore', 'pipe', 'ignore'] })
    cleanups.push(async () => { if (restarted.exitCode == null) { const e = new Promise(resolve => restarted.once('exit', resolve)); restarted.kill('SIGTERM'); await e } })
    await new Promise<void>((resolve) => { createInterface({ input: restarted.stdout! }).once('line', () => { resolve() }) })
    expect(readdirSync(join(data.path, 'run')).filter(d => d.startsWith('in-'))).toEqual([])
  })
})
