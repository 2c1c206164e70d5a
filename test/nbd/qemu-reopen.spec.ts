// Post-copy's switch on QEMU 7.2: a running VM's drive starts on the node's NBD export (reads of
// blocks not yet arrived wait for their fetch) and moves to the local staging file with QMP, the
// VM running throughout. Guest-visible I/O is issued through the device's own BlockBackend with
// HMP `qemu-io`; the NBD server counts what reaches it, and the file is checked on disk.
import { spawn } from 'node:child_process'
import { open, readFile, truncate, writeFile } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { QmpClient, QmpError } from '@shoal/driver-qemu'
import type { QmpEvent } from '@shoal/driver-qemu'
import { createNbdServer } from '@shoal/nbd'
import type { NbdExport, NbdServer } from '@shoal/nbd'
import { tempDir } from '../fixtures/temp.js'

const cleanups: Array<() => unknown> = []
afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

const KiB = 1024
const SIZE = 4 * 1024 * KiB
const BLOCK = 64 * KiB
/** The drive as the guest sees it: HMP qemu-io on the virtio-blk device's own BlockBackend. */
const DEVICE = '/machine/peripheral/cachedisk/virtio-backend'

/**
 * The destination's staging file served over NBD, as post-copy would: blocks listed in `missing`
 * are not in the file yet; a request touching one fetches it first (from `source`, standing in
 * for the network) and writes it into the file. Every request is logged.
 */
class StagingExport {
  readonly requests: string[] = []
  readonly fetchedOnDemand: number[] = []
  constructor (private readonly file: FileHandle, private readonly source: Buffer, readonly missing: Set<number>) {}

  /** Writes a missing block into the staging file (an on-demand or a background fetch). */
  async fetch (block: number): Promise<void> {
    if (!this.missing.has(block)) return
    await this.file.write(this.source, block * BLOCK, BLOCK, block * BLOCK)
    this.missing.delete(block)
  }

  private async arrive (offset: number, length: number): Promise<void> {
    for (let b = Math.floor(offset / BLOCK); b * BLOCK < offset + length; b++) {
      if (this.missing.has(b)) { this.fetchedOnDemand.push(b); await this.fetch(b) }
    }
  }

  readonly nbd: NbdExport = {
    size: SIZE,
    preferredBlockSize: BLOCK,
    read: async (offset, length) => {
      this.requests.push(`read ${offset} ${length}`)
      await this.arrive(offset, length)
      const buf = Buffer.alloc(length)
      await this.file.read(buf, 0, length, offset)
      return buf
    },
    write: async (offset, data) => {
      this.requests.push(`write ${offset} ${data.length}`)
      await this.arrive(offset, data.length)
      await this.file.write(data, 0, data.length, offset)
    },
    flush: async () => {
      this.requests.push('flush')
      await this.file.datasync()
    }
  }
}

interface Vm { qmp: QmpClient, events: QmpEvent[], output: () => string, quit: () => Promise<void> }

/** Starts QEMU (TCG, no guest kernel) with the cache drive on the NBD export `cache`. */
async function startVm (dir: string, nbdPath: string): Promise<Vm> {
  const qmpPath = join(dir, 'qmp.sock')
  const child = spawn('qemu-system-x86_64', [
    '-machine', 'pc,accel=tcg', '-nodefaults', '-display', 'none', '-S',
    '-qmp', `unix:${qmpPath},server=on,wait=off`,
    '-blockdev', `driver=nbd,node-name=remote0,server.type=unix,server.path=${nbdPath},export=cache`,
    '-blockdev', 'driver=raw,node-name=cache0,file=remote0',
    '-device', 'virtio-blk-pci,drive=cache0,id=cachedisk'
  ], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (d: Buffer) => { output += d.toString() })
  child.stderr.on('data', (d: Buffer) => { output += d.toString() })
  const exited = new Promise<void>(resolve => { child.once('close', () => { resolve() }) })
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) { child.kill('SIGKILL'); await exited }
  })
  const qmp = await QmpClient.connect(qmpPath)
  cleanups.push(() => { qmp.close() })
  const events: QmpEvent[] = []
  qmp.onEvent(e => events.push(e))
  return {
    qmp,
    events,
    // HMP qemu-io prints to QEMU's stdout, a pipe: its lines are complete once QEMU has exited.
    output: () => output,
    quit: async () => {
      await qmp.execute('quit').catch(() => undefined)
      await exited
    }
  }
}

async function hmp (qmp: QmpClient, line: string): Promise<string> {
  return await qmp.execute<string>('human-monitor-command', { 'command-line': line })
}

async function status (qmp: QmpClient): Promise<string> {
  return (await qmp.execute<{ status: string }>('query-status')).status
}

async function qmpError (p: Promise<unknown>): Promise<string> {
  const err = await p.then(() => undefined, (e: unknown) => e)
  expect(err).toBeInstanceOf(QmpError)
  return (err as QmpError).message
}

interface Setup { dir: string, staging: string, exp: StagingExport, server: NbdServer, source: Buffer }

async function setup (): Promise<Setup> {
  const d = tempDir('reopen')
  cleanups.push(d.cleanup)
  const staging = join(d.path, 'cache.raw')
  await writeFile(staging, '')
  await truncate(staging, SIZE)
  // What the source node holds of blocks 0 and 1, which have not arrived yet.
  const source = Buffer.alloc(SIZE)
  source.fill(0x5a, 0, BLOCK)
  source.fill(0x6b, BLOCK, 2 * BLOCK)
  const file = await open(staging, 'r+')
  cleanups.push(async () => { await file.close() })
  const exp = new StagingExport(file, source, new Set([0, 1]))
  const server = createNbdServer({ path: join(d.path, 'nbd.sock'), exports: n => n === 'cache' ? exp.nbd : undefined })
  await server.start()
  cleanups.push(async () => { await server.stop() })
  return { dir: d.path, staging, exp, server, source }
}

describe('QEMU 7.2: moving a running drive from the NBD export to the local file', () => {
  it('blockdev-add of a file node, blockdev-reopen of the raw node onto it, blockdev-del of the nbd node: no pause, no NBD request after', async () => {
    const { dir, staging, exp, server } = await setup()
    const vm = await startVm(dir, server.address)
    const q = vm.qmp
    await q.execute('cont')
    expect(await status(q)).toBe('running')

    // Before: guest I/O goes to the NBD server; a read of a missing block waits for its fetch.
    await hmp(q, `qemu-io -d ${DEVICE} "read -P 0x5a 0 64k"`)
    await hmp(q, `qemu-io -d ${DEVICE} "write -P 0x77 128k 64k"`)
    expect(exp.requests).toContain(`read 0 ${BLOCK}`)
    expect(exp.requests).toContain(`write ${2 * BLOCK} ${BLOCK}`)
    expect(exp.fetchedOnDemand).toContain(0)
    expect(server.connections).toBe(1)
    // The background fetch completes the staging file; only then may the drive leave NBD.
    await exp.fetch(1)
    expect(exp.missing.size).toBe(0)

    // The switch.
    await q.execute('blockdev-add', { driver: 'file', 'node-name': 'local0', filename: staging })
    await q.execute('blockdev-reopen', { options: [{ driver: 'raw', 'node-name': 'cache0', file: 'local0' }] })
    expect(await status(q)).toBe('running')
    await q.execute('blockdev-del', { 'node-name': 'remote0' })
    const seenBySwitch = exp.requests.length
    // QEMU hung up on the export.
    while (server.connections > 0) await new Promise(resolve => setTimeout(resolve, 5))

    const block = await q.execute<Array<{ qdev: string, inserted: { 'node-name': string, file: string, image: { filename: string } } }>>('query-block')
    const drive = block.find(b => b.qdev === DEVICE)
    expect(drive?.inserted['node-name']).toBe('cache0')
    expect(drive?.inserted.image.filename).toBe(staging)
    const nodes = await q.execute<Array<{ 'node-name': string }>>('query-named-block-nodes', { flat: true })
    expect(nodes.map(n => n['node-name']).sort()).toEqual(['cache0', 'local0'])

    // After: the same device reads what arrived over NBD and what was written through it, and
    // writes land in the file; the NBD server sees nothing.
    await hmp(q, `qemu-io -d ${DEVICE} "read -P 0x5a 0 64k"`)
    await hmp(q, `qemu-io -d ${DEVICE} "read -P 0x6b 64k 64k"`)
    await hmp(q, `qemu-io -d ${DEVICE} "read -P 0x77 128k 64k"`)
    await hmp(q, `qemu-io -d ${DEVICE} "write -P 0x33 192k 64k"`)
    await hmp(q, `qemu-io -d ${DEVICE} "flush"`)
    // A control: a wrong pattern is reported, so the checks above can fail.
    await hmp(q, `qemu-io -d ${DEVICE} "read -P 0x99 192k 4k"`)
    expect(exp.requests.length).toBe(seenBySwitch)
    const onDisk = await readFile(staging)
    expect(onDisk.subarray(3 * BLOCK, 4 * BLOCK).every(b => b === 0x33)).toBe(true)
    expect(onDisk.subarray(0, BLOCK).every(b => b === 0x5a)).toBe(true)
    expect(onDisk.subarray(BLOCK, 2 * BLOCK).every(b => b === 0x6b)).toBe(true)
    expect(onDisk.subarray(2 * BLOCK, 3 * BLOCK).every(b => b === 0x77)).toBe(true)

    expect(await status(q)).toBe('running')
    expect(vm.events.map(e => e.event)).toEqual(['RESUME'])
    await vm.quit()
    const out = vm.output()
    expect(out.match(/Pattern verification failed at offset \d+/g)).toEqual([`Pattern verification failed at offset ${3 * BLOCK}`])
    expect(out.match(/^(read|wrote) \d+\/\d+ bytes at offset \d+$/gm)).toEqual([
      'read 65536/65536 bytes at offset 0', 'wrote 65536/65536 bytes at offset 131072',
      'read 65536/65536 bytes at offset 0', 'read 65536/65536 bytes at offset 65536', 'read 65536/65536 bytes at offset 131072',
      'wrote 65536/65536 bytes at offset 196608', 'read 4096/4096 bytes at offset 196608'
    ])
  })

  it('what does not work on 7.2, with QEMU\'s own error text', async () => {
    const { dir, staging, server } = await setup()
    const vm = await startVm(dir, server.address)
    const q = vm.qmp
    await q.execute('cont')
    // The nbd node cannot go while the raw node uses it as its file.
    expect(await qmpError(q.execute('blockdev-del', { 'node-name': 'remote0' }))).toBe('blockdev-del: Block device remote0 is in use')
    // reopen cannot create a new file node inline: the child must exist and be named.
    expect(await qmpError(q.execute('blockdev-reopen', { options: [{ driver: 'raw', 'node-name': 'cache0', file: { driver: 'file', filename: staging } }] })))
      .toBe("blockdev-reopen: Cannot change the option 'file.driver'")
    // reopen resets every option left out, and `file` is mandatory.
    expect(await qmpError(q.execute('blockdev-reopen', { options: [{ driver: 'raw', 'node-name': 'cache0' }] })))
      .toBe("blockdev-reopen: Parameter 'options[0].file' is missing")
    // HMP qemu-io: the virtio-blk-pci proxy has no drive, its virtio-backend child has; a node name
    // gets a BlockBackend of its own, which the device's unshared write permission blocks.
    expect(await hmp(q, 'qemu-io -d cachedisk "read 0 4k"')).toContain('Device does not have a block device backend')
    expect(await hmp(q, 'qemu-io cache0 "write 0 4k"')).toContain("Permission conflict on node 'cache0'")
    expect(await status(q)).toBe('running')
    await vm.quit()
  })
})
