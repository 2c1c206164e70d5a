// The NBD server against real QEMU tools as clients (qemu-io, qemu-img, qemu-nbd --list) and
// against a raw socket client that breaks the protocol on purpose.
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { InvalidArgumentError } from '@shoal/core'
import { NbdBackendError, NbdListenError, NbdProtocolError, NbdUnknownExportError, createNbdServer } from '@shoal/nbd'
import type { NbdExport, NbdServer, NbdServerInit } from '@shoal/nbd'
import { tempDir } from '../fixtures/temp.js'
import { NBD, RawNbdClient } from './raw-client.js'

const cleanups: Array<() => unknown> = []
afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

const KiB = 1024
const MiB = 1024 * KiB

/** An export held in memory that logs its calls; `gate` lets a test hold a read back. */
interface MemoryDisk {
  bytes: Buffer
  calls: string[]
  nbd: NbdExport
}

function memoryDisk (size: number, extra: Partial<NbdExport> = {}): MemoryDisk {
  const bytes = Buffer.alloc(size)
  const calls: string[] = []
  const nbd: NbdExport = {
    size,
    read: async (offset, length) => { calls.push(`read ${offset} ${length}`); return Buffer.from(bytes.subarray(offset, offset + length)) },
    write: async (offset, data) => { calls.push(`write ${offset} ${data.length}`); bytes.set(data, offset) },
    flush: async () => { calls.push('flush') },
    trim: async (offset, length) => { calls.push(`trim ${offset} ${length}`) },
    writeZeroes: async (offset, length) => { calls.push(`zero ${offset} ${length}`); bytes.fill(0, offset, offset + length) },
    ...extra
  }
  return { bytes, calls, nbd }
}

/** A promise a test resolves by hand. */
function deferred (): { promise: Promise<void>, resolve: () => void } {
  let resolve!: () => void
  const promise = new Promise<void>(r => { resolve = r })
  return { promise, resolve }
}

/**
 * Holds back the export's reads at offsets `held` picks until `release()`: the stand-in for an
 * on-demand fetch of a block that has not arrived. `waiting` lists the held offsets as they come.
 */
function holdReads (disk: MemoryDisk, held: (offset: number) => boolean): { waiting: number[], release: () => void } {
  const arrived = deferred()
  const waiting: number[] = []
  const plain = disk.nbd.read
  disk.nbd.read = async (offset, length, o) => {
    if (held(offset)) {
      waiting.push(offset)
      await arrived.promise
    }
    return await plain(offset, length, o)
  }
  return { waiting, release: arrived.resolve }
}

async function until (what: string, cond: () => boolean): Promise<void> {
  // Polls a condition the test cannot await directly; bounded by the test's own timeout.
  while (!cond()) await new Promise(resolve => setTimeout(resolve, 5))
  expect(cond(), what).toBe(true)
}

interface Served { server: NbdServer, path: string, dir: string, errors: Error[] }

async function serve (init: Omit<NbdServerInit, 'path'>): Promise<Served> {
  const dir = tempDir('nbd')
  cleanups.push(dir.cleanup)
  const path = join(dir.path, 'nbd.sock')
  const errors: Error[] = []
  const server = createNbdServer({ ...init, path, onError: (e) => { errors.push(e) } })
  await server.start()
  cleanups.push(async () => { await server.stop() })
  return { server, path, dir: dir.path, errors }
}

function uri (path: string, name: string): string { return `nbd+unix:///${name}?socket=${path}` }

interface Run { code: number | null, stdout: string, stderr: string }

/** A child process whose output is collected; killed by the test's cleanup if still running. */
function start (cmd: string, args: string[]): { child: ChildProcess, out: () => string, done: Promise<Run> } {
  // stdbuf: qemu-io's lines arrive as they are printed, not when the pipe buffer flushes at exit.
  const child = spawn('stdbuf', ['-oL', cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout?.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr?.on('data', (d: Buffer) => { stderr += d.toString() })
  const done = new Promise<Run>((resolve) => { child.once('close', (code) => { resolve({ code, stdout, stderr }) }) })
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) { child.kill('SIGKILL'); await done }
  })
  return { child, out: () => stdout, done }
}

async function run (cmd: string, args: string[]): Promise<Run> { return await start(cmd, args).done }

function qemuIo (path: string, name: string, ...commands: string[]): string[] {
  return ['-f', 'raw', uri(path, name), ...commands.flatMap(c => ['-c', c])]
}

describe('NBD server with QEMU tools as the client', () => {
  it('qemu-io writes patterns and reads them back, writes zeroes, discards and flushes', async () => {
    const disk = memoryDisk(4 * MiB)
    const { path, errors } = await serve({ exports: n => n === 'cache' ? disk.nbd : undefined })
    const r = await run('qemu-io', qemuIo(path, 'cache',
      'write -P 0xab 0 64k', 'read -P 0xab 0 64k',
      'write -P 0xcd 1M 128k', 'read -P 0xcd 1M 128k',
      'write -P 0xee 2M 8k', 'write -z 2M 4k', 'read -P 0 2M 4k', 'read -P 0xee 2052k 4k',
      'discard 3M 64k', 'flush'))
    expect(r.stderr).toBe('')
    expect(r.stdout).not.toContain('Pattern verification failed')
    expect(r.code).toBe(0)
    expect(disk.bytes.subarray(0, 64 * KiB).every(b => b === 0xab)).toBe(true)
    expect(disk.bytes.subarray(1 * MiB, 1 * MiB + 128 * KiB).every(b => b === 0xcd)).toBe(true)
    expect(disk.bytes.subarray(2 * MiB, 2 * MiB + 4 * KiB).every(b => b === 0)).toBe(true)
    expect(disk.bytes.subarray(2 * MiB + 4 * KiB, 2 * MiB + 8 * KiB).every(b => b === 0xee)).toBe(true)
    expect(disk.calls).toContain(`zero ${2 * MiB} ${4 * KiB}`)
    expect(disk.calls).toContain(`trim ${3 * MiB} ${64 * KiB}`)
    expect(disk.calls).toContain('flush')
    expect(errors).toEqual([])
  })

  it('a wrong pattern fails qemu-io (so the read checks above can fail)', async () => {
    const disk = memoryDisk(1 * MiB)
    disk.bytes.fill(0x11, 0, 4 * KiB)
    const { path } = await serve({ exports: () => disk.nbd })
    const r = await run('qemu-io', qemuIo(path, 'cache', 'read -P 0x22 0 4k'))
    expect(r.stdout).toContain('Pattern verification failed at offset 0')
    expect(r.code).not.toBe(0)
  })

  it('qemu-img info and qemu-nbd --list show the export and its size', async () => {
    const disk = memoryDisk(3 * MiB + 512)
    const { path } = await serve({ exports: n => n === 'cache' ? disk.nbd : undefined, listExports: () => ['cache'] })
    const info = await run('qemu-img', ['info', '--output=json', uri(path, 'cache')])
    expect(info.code).toBe(0)
    expect(JSON.parse(info.stdout)).toMatchObject({ 'virtual-size': 3 * MiB + 512, format: 'raw' })
    const list = await run('qemu-nbd', ['--list', '-k', path])
    expect(list.code).toBe(0)
    expect(list.stdout).toContain("export: 'cache'")
    expect(list.stdout).toContain(`size:  ${3 * MiB + 512}`)
    expect(list.stdout).toMatch(/flags: 0x6d \( flush fua trim zeroes \)/)
  })

  it('an unknown export name is refused and reported', async () => {
    const disk = memoryDisk(1 * MiB)
    const { path, errors } = await serve({ exports: n => n === 'cache' ? disk.nbd : undefined })
    const r = await run('qemu-io', qemuIo(path, 'nope', 'read 0 4k'))
    expect(r.code).not.toBe(0)
    expect(r.stderr).toContain('Requested export not available')
    expect(r.stderr).toContain('unknown export "nope"')
    expect(errors.some(e => e instanceof NbdUnknownExportError && e.exportName === 'nope' && e.code === 'ERR_NBD_UNKNOWN_EXPORT')).toBe(true)
    expect(disk.calls).toEqual([])
  })

  it('a read waiting for its block does not hold up a later read on the same connection: QEMU takes the replies out of order', async () => {
    const disk = memoryDisk(4 * MiB)
    disk.bytes.fill(0x11, 0, 4 * KiB)
    disk.bytes.fill(0x22, 1 * MiB, 1 * MiB + 4 * KiB)
    const block0 = holdReads(disk, offset => offset === 0)
    const { path, server } = await serve({ exports: () => disk.nbd })
    const io = start('qemu-io', qemuIo(path, 'cache', 'aio_read -P 0x11 0 4k', 'aio_read -P 0x22 1M 4k', 'aio_flush'))
    // The second read completes at the client while the first still waits at the backend.
    await until('read at 1M completed', () => io.out().includes('read 4096/4096 bytes at offset 1048576'))
    expect(block0.waiting).toEqual([0])
    expect(io.out()).not.toContain('at offset 0\n')
    expect(server.connections).toBe(1)
    block0.release()
    const r = await io.done
    expect(r.code).toBe(0)
    expect(r.stdout).not.toContain('Pattern verification failed')
    const lines = r.stdout.split('\n').filter(l => l.startsWith('read '))
    expect(lines).toEqual(['read 4096/4096 bytes at offset 1048576', 'read 4096/4096 bytes at offset 0'])
  })

  it('another client is served while the first one waits for a block', async () => {
    const disk = memoryDisk(4 * MiB)
    const block0 = holdReads(disk, offset => offset === 0)
    const { path, server } = await serve({ exports: () => disk.nbd })
    const first = start('qemu-io', qemuIo(path, 'cache', 'read -P 0 0 4k'))
    await until('first read at the backend', () => block0.waiting.length === 1)
    const second = await run('qemu-io', qemuIo(path, 'cache', 'write -P 0x5a 2M 4k', 'read -P 0x5a 2M 4k'))
    expect(second.code).toBe(0)
    expect(first.out()).toBe('')
    expect(server.connections).toBe(1)
    block0.release()
    expect((await first.done).code).toBe(0)
  })
})

describe('NBD server against raw and hostile clients', () => {
  async function client (path: string, name = 'cache'): Promise<RawNbdClient> {
    const c = await RawNbdClient.connect(path)
    cleanups.push(() => { c.close() })
    if (name !== '') await c.open(name)
    return c
  }

  /** A connection still answers after whatever the test did to it. */
  async function stillServes (c: RawNbdClient, cookie = 99n): Promise<void> {
    c.request(NBD.CMD_READ, 0, 512, { cookie })
    const r = await c.reply(() => 512)
    expect(r).toMatchObject({ errno: 0, cookie })
  }

  it('answers out of order by cookie on one connection', async () => {
    const disk = memoryDisk(1 * MiB)
    disk.bytes.fill(0x33, 0, 4096)
    const block0 = holdReads(disk, offset => offset === 0)
    const { path } = await serve({ exports: () => disk.nbd })
    const c = await client(path)
    c.request(NBD.CMD_READ, 0, 4096, { cookie: 1n })
    c.request(NBD.CMD_READ, 8192, 4096, { cookie: 2n })
    const sizes = (): number => 4096
    const second = await c.reply(sizes)
    expect(second.cookie).toBe(2n)
    expect(block0.waiting).toEqual([0])
    block0.release()
    const first = await c.reply(sizes)
    expect(first.cookie).toBe(1n)
    expect(first.data.every(b => b === 0x33)).toBe(true)
  })

  it('advertises only what the export supports', async () => {
    const full = memoryDisk(1 * MiB)
    const minimal = memoryDisk(1 * MiB, { readOnly: true, trim: undefined, writeZeroes: undefined })
    const shared = memoryDisk(1 * MiB, { multiConn: true })
    const { path } = await serve({ exports: n => ({ full: full.nbd, minimal: minimal.nbd, shared: shared.nbd })[n] })
    expect((await client(path, '').then(async c => { await c.greet(); return await c.go('full') }))).toEqual({ size: BigInt(MiB), flags: 0x6d })
    expect((await client(path, '').then(async c => { await c.greet(); return await c.go('minimal') }))).toEqual({ size: BigInt(MiB), flags: 0x0f })
    expect((await client(path, '').then(async c => { await c.greet(); return await c.go('shared') }))).toEqual({ size: BigInt(MiB), flags: 0x16d })
  })

  it('a request past the end gets EINVAL (READ, TRIM) or ENOSPC (WRITE, WRITE_ZEROES) and the connection stays usable', async () => {
    const disk = memoryDisk(1 * MiB)
    const { path } = await serve({ exports: () => disk.nbd })
    const c = await client(path)
    c.request(NBD.CMD_READ, MiB - 512, 1024, { cookie: 1n })
    expect(await c.reply()).toMatchObject({ errno: NBD.EINVAL, cookie: 1n })
    c.request(NBD.CMD_READ, 2n ** 64n - 512n, 1024, { cookie: 2n })
    expect(await c.reply()).toMatchObject({ errno: NBD.EINVAL, cookie: 2n })
    c.request(NBD.CMD_TRIM, MiB, 1, { cookie: 3n })
    expect(await c.reply()).toMatchObject({ errno: NBD.EINVAL, cookie: 3n })
    c.request(NBD.CMD_WRITE, MiB - 1, 2, { cookie: 4n, data: Buffer.from([1, 2]) })
    expect(await c.reply()).toMatchObject({ errno: NBD.ENOSPC, cookie: 4n })
    c.request(NBD.CMD_WRITE_ZEROES, MiB, 4096, { cookie: 5n })
    expect(await c.reply()).toMatchObject({ errno: NBD.ENOSPC, cookie: 5n })
    await stillServes(c)
    expect(disk.calls).toEqual(['read 0 512'])
  })

  it('an oversized READ gets EINVAL; an oversized WRITE closes the connection without its payload; other clients go on', async () => {
    const disk = memoryDisk(64 * MiB)
    const { path, errors } = await serve({ exports: () => disk.nbd })
    const c = await client(path)
    c.request(NBD.CMD_READ, 0, 32 * MiB + 1, { cookie: 7n })
    expect(await c.reply()).toMatchObject({ errno: NBD.EINVAL, cookie: 7n })
    await stillServes(c)
    c.request(NBD.CMD_WRITE, 0, 0xffffffff, { cookie: 8n })
    await c.closed
    expect(errors.some(e => e instanceof NbdProtocolError && e.code === 'ERR_NBD_PROTOCOL' && e.message.includes('4294967295'))).toBe(true)
    expect(disk.calls).toEqual(['read 0 512'])
    await stillServes(await client(path))
  })

  it('a bad request magic closes the connection; other clients go on', async () => {
    const disk = memoryDisk(1 * MiB)
    const { path, errors } = await serve({ exports: () => disk.nbd })
    const bad = await client(path)
    const good = await client(path)
    bad.request(NBD.CMD_READ, 0, 512, { magic: 0x12345678 })
    await bad.closed
    expect(errors.some(e => e instanceof NbdProtocolError && e.message.includes('0x12345678'))).toBe(true)
    await stillServes(good)
    const r = await run('qemu-io', qemuIo(path, 'cache', 'write -P 0x42 0 4k', 'read -P 0x42 0 4k'))
    expect(r.code).toBe(0)
  })

  it('breaking the handshake (client flags, option magic, an option too long) closes the connection', async () => {
    const disk = memoryDisk(1 * MiB)
    const { path, errors } = await serve({ exports: () => disk.nbd })
    const flags = await client(path, '')
    await flags.greet(0x80)
    await flags.closed
    const magic = await client(path, '')
    await magic.greet()
    magic.sendOption(NBD.OPT_GO, Buffer.alloc(6), 0x1234n)
    await magic.closed
    const long = await client(path, '')
    await long.greet()
    const h = Buffer.alloc(16)
    h.writeBigUInt64BE(NBD.IHAVEOPT, 0)
    h.writeUInt32BE(NBD.OPT_GO, 8)
    h.writeUInt32BE(0x7fffffff, 12)
    long.write(h)
    await long.closed
    expect(errors.filter(e => e instanceof NbdProtocolError)).toHaveLength(3)
    await stillServes(await client(path))
  })

  it('unknown options get NBD_REP_ERR_UNSUP (structured replies too), an unknown export NBD_REP_ERR_UNKNOWN, and NBD_OPT_ABORT an ACK', async () => {
    const disk = memoryDisk(1 * MiB)
    const { path } = await serve({ exports: n => n === 'cache' ? disk.nbd : undefined })
    const c = await client(path, '')
    await c.greet()
    c.sendOption(NBD.OPT_STRUCTURED_REPLY)
    expect(await c.optionReply()).toMatchObject({ option: NBD.OPT_STRUCTURED_REPLY, type: NBD.REP_ERR_UNSUP })
    c.sendOption(4242, Buffer.from('whatever'))
    expect(await c.optionReply()).toMatchObject({ option: 4242, type: NBD.REP_ERR_UNSUP })
    expect(await c.go('nope')).toEqual({ error: NBD.REP_ERR_UNKNOWN })
    c.sendOption(NBD.OPT_ABORT)
    expect(await c.optionReply()).toMatchObject({ option: NBD.OPT_ABORT, type: NBD.REP_ACK })
    await c.closed
  })

  it('unknown commands and flags get EINVAL', async () => {
    const disk = memoryDisk(1 * MiB)
    const { path } = await serve({ exports: () => disk.nbd })
    const c = await client(path)
    c.request(5, 0, 4096, { cookie: 1n }) // NBD_CMD_CACHE, not advertised
    expect(await c.reply()).toMatchObject({ errno: NBD.EINVAL, cookie: 1n })
    c.request(77, 0, 0, { cookie: 2n })
    expect(await c.reply()).toMatchObject({ errno: NBD.EINVAL, cookie: 2n })
    c.request(NBD.CMD_READ, 0, 512, { cookie: 3n, flags: 1 << 2 }) // DF without structured replies
    expect(await c.reply()).toMatchObject({ errno: NBD.EINVAL, cookie: 3n })
    c.request(NBD.CMD_WRITE, 0, 4, { cookie: 4n, flags: 1 << 1, data: Buffer.from([1, 2, 3, 4]) }) // NO_HOLE on WRITE
    expect(await c.reply()).toMatchObject({ errno: NBD.EINVAL, cookie: 4n })
    c.request(NBD.CMD_FLUSH, 1, 0, { cookie: 5n })
    expect(await c.reply()).toMatchObject({ errno: NBD.EINVAL, cookie: 5n })
    await stillServes(c)
    expect(disk.bytes.subarray(0, 4)).toEqual(Buffer.alloc(4))
  })

  it('a read-only export refuses WRITE, TRIM and WRITE_ZEROES with EPERM and still reads', async () => {
    const disk = memoryDisk(1 * MiB, { readOnly: true })
    const { path } = await serve({ exports: () => disk.nbd })
    const c = await client(path)
    c.request(NBD.CMD_WRITE, 0, 4, { cookie: 1n, data: Buffer.from([1, 2, 3, 4]) })
    expect(await c.reply()).toMatchObject({ errno: NBD.EPERM, cookie: 1n })
    c.request(NBD.CMD_TRIM, 0, 4096, { cookie: 2n })
    expect(await c.reply()).toMatchObject({ errno: NBD.EPERM, cookie: 2n })
    c.request(NBD.CMD_WRITE_ZEROES, 0, 4096, { cookie: 3n })
    expect(await c.reply()).toMatchObject({ errno: NBD.EPERM, cookie: 3n })
    await stillServes(c)
    expect(disk.calls).toEqual(['read 0 512'])
    // QEMU honours the flag: it will not open the export writable, and reads it read-only.
    const rw = await run('qemu-io', qemuIo(path, 'cache', 'write -P 1 0 4k'))
    expect(rw.code).not.toBe(0)
    expect(rw.stderr).toContain('Could not open image: Permission denied')
    const ro = await run('qemu-io', ['-r', ...qemuIo(path, 'cache', 'read -P 0 0 4k')])
    expect(ro.code).toBe(0)
    expect(disk.bytes.every(b => b === 0)).toBe(true)
  })

  it('backend failures become ENOSPC, EPERM or EIO replies, are reported, and the connection stays usable', async () => {
    const disk = memoryDisk(1 * MiB)
    const plainRead = disk.nbd.read
    disk.nbd.write = async (offset) => {
      throw Object.assign(new Error(offset === 0 ? 'disk full' : offset === 4096 ? 'read-only file system' : 'media gone'), { code: offset === 0 ? 'ENOSPC' : offset === 4096 ? 'EROFS' : undefined })
    }
    disk.nbd.read = async (offset, length, o) => {
      if (offset === 8192) throw new Error('fetch failed')
      if (offset === 12288) return Buffer.alloc(length - 1) // a buggy backend: short read
      return await plainRead(offset, length, o)
    }
    disk.nbd.flush = async () => { throw new Error('fsync failed') }
    const { path, errors, server } = await serve({ exports: () => disk.nbd })
    const c = await client(path)
    c.request(NBD.CMD_WRITE, 0, 4, { cookie: 1n, data: Buffer.alloc(4) })
    expect(await c.reply()).toMatchObject({ errno: NBD.ENOSPC, cookie: 1n })
    c.request(NBD.CMD_WRITE, 4096, 4, { cookie: 2n, data: Buffer.alloc(4) })
    expect(await c.reply()).toMatchObject({ errno: NBD.EPERM, cookie: 2n })
    c.request(NBD.CMD_WRITE, 16384, 4, { cookie: 3n, data: Buffer.alloc(4) })
    expect(await c.reply()).toMatchObject({ errno: NBD.EIO, cookie: 3n })
    c.request(NBD.CMD_READ, 8192, 512, { cookie: 4n })
    expect(await c.reply()).toMatchObject({ errno: NBD.EIO, cookie: 4n })
    c.request(NBD.CMD_READ, 12288, 512, { cookie: 5n })
    expect(await c.reply()).toMatchObject({ errno: NBD.EIO, cookie: 5n })
    c.request(NBD.CMD_FLUSH, 0, 0, { cookie: 6n })
    expect(await c.reply()).toMatchObject({ errno: NBD.EIO, cookie: 6n })
    await stillServes(c)
    const backend = errors.filter((e): e is NbdBackendError => e instanceof NbdBackendError)
    expect(backend.map(e => [e.command, e.errno, e.code])).toEqual([
      ['WRITE', NBD.ENOSPC, 'ERR_NBD_BACKEND'], ['WRITE', NBD.EPERM, 'ERR_NBD_BACKEND'], ['WRITE', NBD.EIO, 'ERR_NBD_BACKEND'],
      ['READ', NBD.EIO, 'ERR_NBD_BACKEND'], ['READ', NBD.EIO, 'ERR_NBD_BACKEND'], ['FLUSH', NBD.EIO, 'ERR_NBD_BACKEND']
    ])
    expect((backend[0]?.cause as Error).message).toBe('disk full')
    expect(server.connections).toBe(1)
    // QEMU sees the errno as the error of its request.
    const r = await run('qemu-io', qemuIo(path, 'cache', 'write 0 4k'))
    expect(r.stdout).toContain('write failed: No space left on device')
  })

  it('an onError observer that throws is ignored', async () => {
    const disk = memoryDisk(1 * MiB, { flush: async () => { throw new Error('fsync failed') } })
    const dir = tempDir('nbd')
    cleanups.push(dir.cleanup)
    const server = createNbdServer({ path: join(dir.path, 's'), exports: () => disk.nbd, onError: () => { throw new Error('observer broke') } })
    await server.start()
    cleanups.push(async () => { await server.stop() })
    const c = await client(server.address)
    c.request(NBD.CMD_FLUSH, 0, 0, { cookie: 1n })
    expect(await c.reply()).toMatchObject({ errno: NBD.EIO, cookie: 1n })
    await stillServes(c)
  })

  it('never has more than maxInFlight requests of a connection at the backend', async () => {
    const disk = memoryDisk(1 * MiB)
    const gates = new Map<number, { promise: Promise<void>, resolve: () => void }>()
    const released = new Set<number>()
    const seenAtCall: Array<{ offset: number, released: number[] }> = []
    const plainRead = disk.nbd.read
    disk.nbd.read = async (offset, length, o) => {
      seenAtCall.push({ offset, released: [...released] })
      const g = deferred()
      gates.set(offset, g)
      await g.promise
      return await plainRead(offset, length, o)
    }
    const { path } = await serve({ exports: () => disk.nbd, maxInFlight: 2 })
    const c = await client(path)
    for (let i = 0; i < 3; i++) c.request(NBD.CMD_READ, i * 4096, 512, { cookie: BigInt(i) })
    await until('two reads at the backend', () => gates.size === 2)
    released.add(0)
    gates.get(0)?.resolve()
    expect((await c.reply(() => 512)).cookie).toBe(0n)
    await until('third read at the backend', () => gates.size === 3)
    expect(seenAtCall).toEqual([{ offset: 0, released: [] }, { offset: 4096, released: [] }, { offset: 8192, released: [0] }])
    gates.get(4096)?.resolve()
    gates.get(8192)?.resolve()
    const rest = [await c.reply(() => 512), await c.reply(() => 512)].map(r => r.cookie).sort()
    expect(rest).toEqual([1n, 2n])
  })

  it('NBD_CMD_DISC answers the requests in flight, then closes', async () => {
    const disk = memoryDisk(1 * MiB)
    const held = holdReads(disk, () => true)
    const { path, server } = await serve({ exports: () => disk.nbd })
    const c = await client(path)
    c.request(NBD.CMD_READ, 0, 512, { cookie: 5n })
    c.request(NBD.CMD_DISC, 0, 0, { cookie: 6n })
    await until('read at the backend', () => held.waiting.length === 1)
    held.release()
    expect(await c.reply(() => 512)).toMatchObject({ errno: 0, cookie: 5n })
    await c.closed
    await until('connection gone', () => server.connections === 0)
  })

  it('stop() drops connections whose reads still wait, aborts their signals and removes the socket', async () => {
    const disk = memoryDisk(1 * MiB)
    let signal: AbortSignal | undefined
    disk.nbd.read = async (_offset, _length, o) => {
      signal = o.signal
      return await new Promise<Uint8Array>(() => {}) // a fetch that never completes
    }
    const { path, server } = await serve({ exports: () => disk.nbd })
    const c = await client(path)
    c.request(NBD.CMD_READ, 0, 512, { cookie: 1n })
    await until('read at the backend', () => signal !== undefined)
    await server.stop()
    await c.closed
    expect(signal?.aborted).toBe(true)
    expect(server.connections).toBe(0)
    expect(existsSync(path)).toBe(false)
    await server.stop() // idempotent
  })

  it('after stop() the process exits by itself, even with a client in transmission and a read that never completes', async () => {
    const dir = tempDir('nbd')
    cleanups.push(dir.cleanup)
    const script = `
      import { createNbdServer } from '@shoal/nbd'
      import { connect } from 'node:net'
      const path = process.argv[1]
      let reached = false
      const server = createNbdServer({ path, exports: () => ({ size: 4096, read: () => { reached = true; return new Promise(() => {}) }, write: async () => {}, flush: async () => {} }) })
      await server.start()
      const c = connect(path)
      c.on('error', () => {})
      let seen = 0
      const read = new Promise(resolve => c.on('data', d => { seen += d.length; if (seen >= 18) resolve() }))
      await read
      const go = Buffer.alloc(4 + 16 + 4 + 1 + 2)
      go.writeUInt32BE(3, 0)
      go.writeBigUInt64BE(0x49484156454f5054n, 4); go.writeUInt32BE(7, 12); go.writeUInt32BE(7, 16)
      go.writeUInt32BE(1, 20); go.write('x', 24); go.writeUInt16BE(0, 25)
      const req = Buffer.alloc(28)
      req.writeUInt32BE(0x25609513, 0); req.writeUInt32BE(512, 24)
      c.write(Buffer.concat([go, req]))
      while (!reached) await new Promise(r => setTimeout(r, 5))
      await server.stop()
      console.log('stopped', server.connections)
    `
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, join(dir.path, 's.sock')], { cwd: join(import.meta.dirname, '..'), stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    child.stderr.on('data', (d: Buffer) => { out += d.toString() })
    cleanups.push(() => { if (child.exitCode === null) child.kill('SIGKILL') })
    // No timer here: if a handle stayed open the child would hang and the test's timeout fail it.
    const code = await new Promise<number | null>(resolve => child.once('close', resolve))
    expect(out.trim()).toBe('stopped 0')
    expect(code).toBe(0)
  })

  it('replaces a stale socket file, but not a live server nor a regular file', async () => {
    const dir = tempDir('nbd')
    cleanups.push(dir.cleanup)
    const disk = memoryDisk(1 * MiB)
    // A socket file nobody listens on, as a crashed node leaves it.
    const stale = join(dir.path, 'stale.sock')
    const killed = await run(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`])
    expect(killed.code).toBe(null)
    expect(existsSync(stale)).toBe(true)
    const s1 = createNbdServer({ path: stale, exports: () => disk.nbd })
    await s1.start()
    cleanups.push(async () => { await s1.stop() })
    await stillServes(await client(stale))

    const s2 = createNbdServer({ path: stale, exports: () => disk.nbd })
    const err = await s2.start().catch((e: unknown) => e)
    expect(err).toBeInstanceOf(NbdListenError)
    expect((err as NbdListenError).code).toBe('ERR_NBD_LISTEN')

    const file = join(dir.path, 'file')
    writeFileSync(file, 'keep me')
    const s3 = createNbdServer({ path: file, exports: () => disk.nbd })
    expect(await s3.start().catch((e: unknown) => e)).toBeInstanceOf(NbdListenError)
    expect(existsSync(file)).toBe(true)
  })

  it('refuses bad options with InvalidArgumentError', () => {
    const exports = (): undefined => undefined
    expect(() => createNbdServer({ path: '', exports })).toThrow(InvalidArgumentError)
    expect(() => createNbdServer({ path: '/tmp/' + 'x'.repeat(200), exports })).toThrow(InvalidArgumentError)
    expect(() => createNbdServer({ path: '/tmp/a.sock', exports, maxPayload: 64 * MiB })).toThrow(/maxPayload/)
    expect(() => createNbdServer({ path: '/tmp/a.sock', exports, maxInFlight: 0 })).toThrow(/maxInFlight/)
  })

  it('refuses a misconfigured export at the handshake and reports why', async () => {
    const disk = memoryDisk(1 * MiB, { preferredBlockSize: 1000 })
    const { path, errors } = await serve({ exports: () => disk.nbd })
    const c = await client(path, '')
    await c.greet()
    expect(await c.go('cache')).toEqual({ error: NBD.REP_ERR_UNKNOWN })
    expect(errors.map(e => (e as { code?: string }).code)).toEqual(['ERR_NBD_INVALID_EXPORT'])
  })
})
