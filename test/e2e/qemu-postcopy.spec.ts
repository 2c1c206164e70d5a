// Post-copy of a QEMU VM's cache disk: the VM runs on the destination while its cache is still
// arriving, its drive on the node's NBD export (reads and partial writes of missing blocks wait for
// their fetch), and moves to the local file with no pause once every block is there. First the
// driver alone against an export this test serves (boot through it, the export restarting under a
// running guest, the move, the move repeated and after the VM ended), then real nodes: a source,
// a destination and a slow replica of the volume the cache caches.
import { spawn, spawnSync } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { open } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { connect } from 'node:net'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { call } from '@shoal/cli'
import type { DriverImage, ImageSpec, RunningWorkload } from '@shoal/core'
import { buildTestGuest, CACHE_FILE_NODE, CACHE_NBD_NODE, CACHE_RAW_NODE, checkTestGuest, createQemuDriver, isQemuProcess, logSize, testGuestConfig, vmPaths, waitForLine } from '@shoal/driver-qemu'
import type { TestGuest } from '@shoal/driver-qemu'
import { createNbdServer } from '@shoal/nbd'
import type { NbdExport, NbdServer } from '@shoal/nbd'
import type { NodeStatus, ShoalNode, ShoalNodeInit } from '@shoal/node'
import { startNode } from '../fixtures/nodes.js'
import { tempDir } from '../fixtures/temp.js'
import { until } from '../fixtures/chaos.js'
import { killVmsUnder } from '../fixtures/qemu-vms.js'

const MiB = 2 ** 20
const BS = 256 * 1024
const SLOT = 4096
/** First word of the test guest's disk records ("SHOALRC1", little endian). */
const REC_MAGIC = Buffer.from('SHOALRC1', 'latin1')
const BIN = fileURLToPath(new URL('../../packages/cli/dist/bin.js', import.meta.url))
const qemuMissing = spawnSync('qemu-system-x86_64', ['--version']).status !== 0
let guest: TestGuest

interface LogEntry { level: string, msg: string, fields?: Record<string, unknown> }

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }



/** Connected unix sockets bound to `path` (the server's side of each client connection). */
function connectionsTo (path: string): number {
  return readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1).filter(l => {
    const f = l.trim().split(/\s+/)
    return f[7] === path && f[5] === '03'
  }).length
}

/** Sends a command line to the test guest's console and waits for the answer containing `expect`. */
async function guestCommand (runDir: string, line: string, expectLine: string): Promise<string> {
  const p = vmPaths(runDir)
  const from = logSize(p.serialLog)
  const sock = connect(p.serial)
  sock.resume()
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject)
      sock.once('connect', () => { sock.write(`${line}\n`, () => { resolve() }) })
    })
    return await waitForLine(p.serialLog, from, expectLine, 30_000)
  } finally {
    sock.destroy()
  }
}

/** The guest's error lines on its console (a failed disk write prints `SHOAL-ERR disk write failed`). */
function guestErrors (runDir: string): string[] {
  return readFileSync(vmPaths(runDir).serialLog, 'latin1').split('\n').filter(l => l.includes('SHOAL-ERR'))
}

/** Waits for the guest's next heartbeat; resolves with its `records` count. */
async function nextHeartbeat (runDir: string): Promise<number> {
  const p = vmPaths(runDir)
  const line = await waitForLine(p.serialLog, logSize(p.serialLog), 'SHOAL-HB', 10_000)
  return Number(/records=(\d+)/.exec(line)?.[1])
}

/**
 * Stops the guest's disk writes, takes its verdict, kills the VM, and checks its disk file: the
 * first `records` 4 KiB slots hold the guest's records (which its own check verified), every
 * other slot holds the expected bytes (the volume's): nothing the guest did not write was lost
 * or left as zeros.
 */
async function checkDiskAfter (runDir: string, pid: number, cachePath: string, expected: Buffer): Promise<{ records: number }> {
  await guestCommand(runDir, 'records 0', 'SHOAL-OK records=0')
  await sleep(300)
  const v = await checkTestGuest(runDir)
  expect(v.ok, v.line).toBe(true)
  process.kill(pid, 'SIGKILL')
  await until('QEMU to exit', () => isQemuProcess(pid) ? undefined : true, 10_000)
  const disk = readFileSync(cachePath)
  expect(disk.length).toBe(expected.length)
  let firstBad = -1
  for (let s = 0; s * SLOT < disk.length && firstBad < 0; s++) {
    const slot = disk.subarray(s * SLOT, (s + 1) * SLOT)
    const isRecord = slot.subarray(0, 8).equals(REC_MAGIC)
    if (s < v.records ? !isRecord : !slot.equals(expected.subarray(s * SLOT, (s + 1) * SLOT))) firstBad = s
  }
  expect(firstBad, `slot ${firstBad} (records: ${v.records})`).toBe(-1)
  return { records: v.records }
}

describe.skipIf(qemuMissing)('post-copy of a QEMU VM\'s cache disk', () => {
  const cleanups: Array<() => unknown> = []
  const dirs: string[] = []
  beforeAll(async () => { guest = await buildTestGuest() }, 900_000)
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })
  afterAll(() => { for (const d of dirs) killVmsUnder(d) })

  const logger = (into: LogEntry[], tag: string): NonNullable<ShoalNodeInit['logger']> => {
    const at = (level: string) => (msg: string, fields?: Record<string, unknown>) => {
      into.push({ level, msg, fields })
      if (process.env.SHOAL_TEST_LOG != null) console.log(level, tag, msg, JSON.stringify(fields))
    }
    return { info: at('info'), warn: at('warn'), error: at('error') }
  }

  describe('the driver against an export served here', () => {
    /**
     * A cache file still arriving, served as the node serves it: a request touching a missing
     * block first "fetches" it (copies it from `source` into the file), except a write covering
     * a block whole, which claims it. Every request is counted.
     */
    class ArrivingCache {
      requests = 0
      readonly onDemand: number[] = []
      readonly backend: NbdExport
      constructor (private readonly file: FileHandle, private readonly source: Buffer, readonly missing: Set<number>) {
        this.backend = {
          size: source.length,
          preferredBlockSize: 65536,
          read: async (offset, length) => {
            this.requests++
            await this.ready(offset, length, false)
            const buf = Buffer.alloc(length)
            await this.file.read(buf, 0, length, offset)
            return buf
          },
          write: async (offset, data) => {
            this.requests++
            await this.ready(offset, data.byteLength, true)
            await this.file.write(data, 0, data.byteLength, offset)
          },
          flush: async () => { this.requests++; await this.file.datasync() }
        }
      }

      /** Writes a missing block into the file (an on-demand or a background fetch). */
      async fetch (b: number): Promise<void> {
        if (!this.missing.has(b)) return
        await this.file.write(this.source, b * BS, BS, b * BS)
        this.missing.delete(b)
      }

      private async ready (offset: number, length: number, writing: boolean): Promise<void> {
        for (let b = Math.floor(offset / BS); b * BS < offset + length; b++) {
          if (!this.missing.has(b)) continue
          if (writing && offset <= b * BS && (b + 1) * BS <= offset + length) { this.missing.delete(b); continue }
          this.onDemand.push(b)
          await this.fetch(b)
        }
      }
    }

    interface Setup { image: DriverImage, source: Buffer, cache: ArrivingCache, serve: () => Promise<NbdServer>, logs: LogEntry[], driver: ReturnType<typeof createQemuDriver> }

    /** A 16 MiB cache of random bytes of which only every 4th block has arrived, and a 128 MiB VM of the test guest. */
    async function setup (): Promise<Setup> {
      const d = tempDir('qpc-drv')
      const shm = tempDir('qpc-drv-shm', '/dev/shm')
      dirs.push(d.path)
      cleanups.push(d.cleanup, shm.cleanup, () => { killVmsUnder(d.path) })
      const cacheSize = 16 * MiB
      const spec: ImageSpec = {
        name: 'vm', driver: 'qemu',
        driverConfig: { ...testGuestConfig(guest, 128 * MiB, { memMiB: 32, rate: 1000, records: 50 }), accel: 'tcg' },
        memory: { path: join(shm.path, 'vm.mem'), size: 128 * MiB, pageSize: 4096 },
        cache: { path: join(d.path, 'cache.img'), size: cacheSize, blockSize: BS }
      }
      const logs: LogEntry[] = []
      const driver = createQemuDriver({ logger: logger(logs, 'driver') })
      spec.driverConfig = driver.validateConfig(spec.driverConfig, { memorySize: spec.memory.size, pageSize: 4096, cacheSize, blockSize: BS })
      await driver.initImage(spec, { fill: 'zero' })
      const source = randomBytes(cacheSize)
      const missing = new Set<number>()
      const present = Buffer.alloc(cacheSize / BS)
      const fd = openSync(spec.cache.path, 'r+')
      try {
        for (let b = 0; b < cacheSize / BS; b++) {
          if (b % 4 === 3) { writeSync(fd, source, b * BS, BS, b * BS); present[b] = 1 } else missing.add(b)
        }
      } finally { closeSync(fd) }
      const presentPath = `${spec.cache.path}.present`
      writeFileSync(presentPath, present)
      const file = await open(spec.cache.path, 'r+')
      cleanups.push(async () => { await file.close() })
      const cache = new ArrivingCache(file, source, missing)
      const runDir = join(d.path, 'run')
      const socket = join(d.path, 'cache.nbd')
      const serve = async (): Promise<NbdServer> => {
        const server = createNbdServer({ path: socket, exports: n => n === 'cache' ? cache.backend : undefined })
        await server.start()
        cleanups.push(async () => { await server.stop() })
        return server
      }
      const image: DriverImage = { spec, runDir, postcopy: { presentPath, faultSocket: join(d.path, 'faults.sock'), nbd: { socket, exportName: 'cache' } } }
      mkdirSync(runDir)
      return { image, source, cache, serve, logs, driver }
    }

    it('boots through the export, survives the export restarting, moves to the local file without a pause, idempotently, and safely after the VM ended', async () => {
      const { image, source, cache, serve, logs, driver } = await setup()
      let server = await serve()
      const w: RunningWorkload = await driver.launch(image)
      cleanups.push(async () => { await w.terminate() })
      // The guest booted with every request on the export: the kernel read its disk, missing blocks were fetched first.
      expect(cache.requests).toBeGreaterThan(0)
      expect(cache.onDemand.length).toBeGreaterThan(0)
      expect(server.connections).toBe(1)
      const runDir = image.runDir
      const v0 = await checkTestGuest(runDir)
      expect(v0.ok, v0.line).toBe(true)

      // The export goes away (its node restarting) and comes back at the same path: the guest's
      // requests wait and are sent again; it keeps writing records.
      await server.stop()
      await sleep(1500)
      server = await serve()
      await until('QEMU to reconnect to the export', () => server.connections === 1 ? true : undefined, 20_000)
      const r0 = await nextHeartbeat(runDir)
      await until('records written through the new export', async () => (await nextHeartbeat(runDir)) > r0 + 20 ? true : undefined, 20_000)
      // The writes issued while the export was away waited for it (reconnect-delay): none failed.
      expect(guestErrors(runDir)).toEqual([])

      // Every block arrives; the drive moves to the local file.
      for (const b of [...cache.missing]) await cache.fetch(b)
      writeFileSync(image.postcopy!.presentPath, Buffer.alloc(image.spec.cache.size / BS, 1))
      await w.postcopyComplete!()
      const moved = logs.filter(l => l.msg === 'VM cache drive moved from the post-copy export to the local file')
      expect(moved).toHaveLength(1)
      expect(moved[0]!.fields).toMatchObject({ status: 'running', stopped: false, file: vmPaths(runDir).disk })
      expect((moved[0]!.fields!.nodes as string[]).sort()).toEqual([CACHE_FILE_NODE, CACHE_RAW_NODE].sort())
      await until('QEMU to hang up on the export', () => server.connections === 0 ? true : undefined, 10_000)
      const seen = cache.requests
      // Again: nothing to move, nothing said.
      await w.postcopyComplete!()
      expect(logs.filter(l => l.msg === moved[0]!.msg)).toHaveLength(1)
      // The guest keeps writing, to the local file only.
      const r1 = await nextHeartbeat(runDir)
      await until('records written after the move', async () => (await nextHeartbeat(runDir)) > r1 + 20 ? true : undefined, 20_000)
      expect(cache.requests).toBe(seen)
      await server.stop()

      await checkDiskAfter(runDir, w.pid!, image.spec.cache.path, source)
      await w.exited
      // A VM that is gone has nothing to move.
      await w.postcopyComplete!()
      expect(logs.filter(l => l.level !== 'info')).toEqual([])
    }, 240_000)

    it('a cache that completed while the VM started: the VM leaves the export before launch returns', async () => {
      const { image, source, cache, serve, logs, driver } = await setup()
      const server = await serve()
      // The node finished the cache (and removed the present bytes) before it held the workload.
      for (const b of [...cache.missing]) await cache.fetch(b)
      rmSync(image.postcopy!.presentPath)
      const w = await driver.launch(image)
      cleanups.push(async () => { await w.terminate() })
      expect(logs.filter(l => l.msg === 'VM cache drive moved from the post-copy export to the local file')).toHaveLength(1)
      expect(cache.requests).toBeGreaterThan(0) // the boot went through the export
      await until('QEMU to hang up on the export', () => server.connections === 0 ? true : undefined, 10_000)
      await checkDiskAfter(image.runDir, w.pid!, image.spec.cache.path, source)
    }, 240_000)
  })

  describe('between real nodes', () => {
    const node = async (ip: string, logs: LogEntry[], extra: Partial<ShoalNodeInit> = {}): Promise<ShoalNode> => {
      const data = tempDir('qpc-node')
      dirs.push(data.path)
      cleanups.push(data.cleanup, () => { killVmsUnder(data.path) })
      const log = logger(logs, ip)
      return await startNode(ip, cleanups, { dataDir: data.path, logger: log, drivers: [createQemuDriver({ logger: log })], ...extra })
    }

    interface Cluster { src: ShoalNode, replica: ShoalNode, volume: Buffer, v0: { records: number }, srcPid: number }

    /**
     * A source and a replica of a 32 MiB random volume, both serving blocks at `serveRate`, so that
     * the cache takes seconds to arrive after the switchover; on the source a VM of the test guest whose
     * cache caches the volume, running and checked. The source keeps no replica store: after the
     * switchover it serves the cache it kept.
     */
    async function cluster (serveRate = 2 * MiB): Promise<Cluster> {
      const src = await node('127.0.0.1', [], { serveRate })
      const replica = await node('127.0.0.3', [], { serveRate })
      const volume = randomBytes(32 * MiB)
      const vol = tempDir('qpc-vol')
      cleanups.push(vol.cleanup)
      writeFileSync(join(vol.path, 'base.img'), volume)
      await src.importVolume('base', join(vol.path, 'base.img'), BS)
      await replica.importVolume('base', join(vol.path, 'base.img'), BS)
      await src.createImage({
        name: 'vm', driver: 'qemu', memorySize: 128 * MiB, cacheSize: 0, cacheVolume: 'base',
        config: { ...testGuestConfig(guest, 128 * MiB, { memMiB: 48, rate: 2000, records: 50 }), accel: 'tcg' }
      })
      await src.removeVolume('base')
      await src.startImage('vm')
      const before = (await src.status()).images[0]!
      await sleep(1000)
      const v0 = await checkTestGuest(before.runtime!.runDir as string)
      expect(v0.ok, v0.line).toBe(true)
      return { src, replica, volume, v0, srcPid: before.pid! }
    }

    it('the VM runs on the destination before its cache arrived, on the NBD export; once complete it is on the local file, unpaused, and the guest\'s records and the volume\'s bytes are all there', async () => {
      const logs: LogEntry[] = []
      // Sources slow enough (2 blocks/s together) that the guest's ring outruns the stream.
      const { src, replica, volume, v0, srcPid } = await cluster(512 * 1024)
      const dst = await node('127.0.0.2', logs)
      dst.allowPeer(src.peerId)
      replica.allowPeer(dst.peerId)
      await dst.libp2p.dial(replica.libp2p.getMultiaddrs()[0]!)

      const report = await src.migrate('vm', dst.addrs()[0]!, { lanes: 2, downtimeTargetMs: 500, cacheMode: 'postcopy' })
      expect(report.ok).toBe(true)
      expect(report.verified).toBe(true)
      expect(report.cacheMode).toBe('postcopy')
      expect(report.postcopy!.deferredBlocks).toBeGreaterThan(0)
      expect(isQemuProcess(srcPid)).toBe(false)

      // Right after the switchover: running on the destination, blocks still missing, the drive on the export.
      const during = (await dst.status()).images.find(i => i.spec.name === 'vm')!
      expect(during.state).toBe('running')
      expect(during.postcopy).toBeDefined()
      expect(during.postcopy!.presentBlocks).toBeLessThan(during.postcopy!.blocks)
      const runDir = during.runtime!.runDir as string
      const pid = during.pid!
      const nbdSocket = join(runDir, 'cache.nbd')
      expect(connectionsTo(nbdSocket)).toBe(1)
      expect(logs.find(l => l.msg === 'VM resumed')?.fields?.toExportMs).toBeGreaterThan(0)
      // The guest's ring now runs ahead of the stream: its 4 KiB writes land in blocks that have
      // not arrived, which the export fetches on demand before it writes them.
      await guestCommand(runDir, 'records 1000', 'SHOAL-OK records=1000')
      // The guest runs and writes its ring through the export; its check reads its records back through it.
      const r0 = await nextHeartbeat(runDir)
      const v1 = await checkTestGuest(runDir)
      expect(v1.ok, v1.line).toBe(true)
      expect(v1.records).toBeGreaterThan(v0.records)
      const stillArriving = (await dst.status()).images.find(i => i.spec.name === 'vm')!
      expect(stillArriving.postcopy, 'the cache completed before the guest was checked during post-copy').toBeDefined()

      const done = await until('the post-copy to complete', async () => {
        const i = (await dst.status()).images.find(x => x.spec.name === 'vm')
        return i?.postcopyResult?.complete === true ? i : undefined
      }, 120_000)
      expect(done.postcopy).toBeUndefined()
      expect(done.pid).toBe(pid)
      // Every claimed block is present, each counted once.
      expect(done.postcopyResult!.presentBlocks).toBe(done.postcopyResult!.blocks)
      expect(done.postcopyResult!.onDemand!.fetches, 'no guest request waited for a block').toBeGreaterThan(0)
      // The drive moved with the VM running, QEMU hung up on the export, which is gone.
      const moved = logs.filter(l => l.msg === 'VM cache drive moved from the post-copy export to the local file')
      expect(moved).toHaveLength(1)
      expect(moved[0]!.fields).toMatchObject({ status: 'running', stopped: false, file: vmPaths(runDir).disk })
      expect(moved[0]!.fields!.nodes).not.toContain(CACHE_NBD_NODE)
      expect(readlinkSync(vmPaths(runDir).disk)).toBe(done.spec.cache.path)
      await until('the export to be gone', () => !existsSync(nbdSocket) && connectionsTo(nbdSocket) === 0 ? true : undefined, 10_000)
      // The source dropped its kept copy once the destination had every block.
      await until('the source to drop its copy', async () => (await src.status()).kept?.length === 0 ? true : undefined, 10_000)

      // Without the export the guest keeps running and writing to its disk; its own check passes.
      const r1 = await nextHeartbeat(runDir)
      expect(r1).toBeGreaterThan(r0)
      await until('records written after the move', async () => (await nextHeartbeat(runDir)) > r1 + 20 ? true : undefined, 20_000)
      const v2 = await checkTestGuest(runDir)
      expect(v2.ok, v2.line).toBe(true)
      expect(v2.records).toBeGreaterThan(v1.records)
      expect(logs.filter(l => l.level !== 'info').map(l => l.msg)).toEqual([])
      expect(guestErrors(runDir)).toEqual([])
      console.log('post-copy of the VM\'s cache:', JSON.stringify({ deferredBlocks: report.postcopy!.deferredBlocks, downtimeMs: report.downtimeMs, ...done.postcopyResult, moveMs: moved[0]!.fields!.ms }))

      // Every slot the guest did not write holds the volume's bytes: the blocks streamed in and
      // fetched on demand (ahead of the guest's partial writes) landed where they belong.
      await checkDiskAfter(runDir, pid, done.spec.cache.path, volume)
    }, 300_000)

    it('the destination node killed during the stream: its VM keeps running, the restarted node adopts it and serves the export again, the VM reconnects, and completion moves it to the local file', async () => {
      const { src, replica, volume } = await cluster()
      const data = tempDir('qpc-dst')
      const shm = tempDir('qpc-dst-shm', '/dev/shm')
      dirs.push(data.path)
      cleanups.push(data.cleanup, shm.cleanup, () => { killVmsUnder(data.path) })
      const logFile = join(data.path, 'node.log')
      const sock = join(data.path, 'control.sock')
      const replicaAddr = `${replica.libp2p.getMultiaddrs()[0]!.toString()}`
      // The destination as the CLI runs it (a process to kill -9); its log is JSON lines on stderr.
      const startDst = async (): Promise<{ child: ChildProcess, peerId: string, addrs: string[] }> => {
        const err = openSync(logFile, 'a')
        const child = spawn(process.execPath, [BIN, 'node', '--data-dir', data.path, '--shm-dir', shm.path, '--listen', '/ip4/127.0.0.2/tcp/0', '--allow', src.peerId, '--bootstrap', replicaAddr, '--workers', '1'], { stdio: ['ignore', 'pipe', err] })
        closeSync(err)
        cleanups.push(async () => { if (child.exitCode == null && child.signalCode == null) { const e = new Promise(resolve => child.once('exit', resolve)); child.kill('SIGTERM'); await e } })
        const first = await new Promise<{ peerId: string, addrs: string[] }>((resolve, reject) => {
          createInterface({ input: child.stdout! }).once('line', l => { resolve(JSON.parse(l) as { peerId: string, addrs: string[] }) })
          child.once('exit', (code) => { reject(new Error(`node exited with ${code}`)) })
        })
        return { child, ...first }
      }
      const nodeLog = (): Array<{ level: string, msg: string } & Record<string, unknown>> => readFileSync(logFile, 'utf8').split('\n').filter(l => l.startsWith('{')).map(l => JSON.parse(l) as { level: string, msg: string })
      const vmStatus = async (): Promise<NodeStatus['images'][number] | undefined> => (await call(sock, 'GET', '/status') as NodeStatus).images.find(i => i.spec.name === 'vm')

      const first = await startDst()
      replica.allowPeer(first.peerId)
      const report = await src.migrate('vm', first.addrs[0]!, { lanes: 2, downtimeTargetMs: 500, cacheMode: 'postcopy' })
      expect(report.ok).toBe(true)
      const during = (await vmStatus())!
      expect(during.postcopy).toBeDefined()
      const runDir = during.runtime!.runDir as string
      const pid = during.pid!
      const nbdSocket = join(runDir, 'cache.nbd')
      expect(connectionsTo(nbdSocket)).toBe(1)

      const gone = new Promise(resolve => first.child.once('exit', resolve))
      first.child.kill('SIGKILL')
      await gone
      // The VM outlives its node; its drive waits for the export (nothing serves it now).
      expect(isQemuProcess(pid)).toBe(true)
      expect(connectionsTo(nbdSocket)).toBe(0)
      await sleep(2000)

      await startDst()
      const done = await until('the resumed post-copy to complete', async () => {
        const i = await vmStatus()
        return i?.postcopyResult?.complete === true ? i : undefined
      }, 120_000)
      expect(done.pid).toBe(pid) // adopted, not started again
      expect(done.state).toBe('running')
      const log = nodeLog()
      expect(log.find(l => l.msg === 'post-copy taken up again after a restart')).toBeDefined()
      const moved = log.filter(l => l.msg === 'VM cache drive moved from the post-copy export to the local file')
      expect(moved).toHaveLength(1)
      expect(moved[0]).toMatchObject({ status: 'running', stopped: false, file: vmPaths(runDir).disk })
      expect(moved[0]!.nodes).not.toContain(CACHE_NBD_NODE)
      await until('the export to be gone', () => !existsSync(nbdSocket) && connectionsTo(nbdSocket) === 0 ? true : undefined, 10_000)

      // The guest kept running through it: no disk write failed, its records check, and every
      // other byte of its disk is the volume's.
      const r1 = await nextHeartbeat(runDir)
      await until('records written after the move', async () => (await nextHeartbeat(runDir)) > r1 + 20 ? true : undefined, 20_000)
      expect(guestErrors(runDir)).toEqual([])
      await checkDiskAfter(runDir, pid, done.spec.cache.path, volume)
    }, 300_000)
  })
})
