// The QEMU test guest (packages/driver-qemu/guest): builds it, boots it under TCG, checks its RAM
// stamps and disk records, moves it to a second QEMU with the driver's recipe (stop, x-ignore-shared
// migration of the device state, copy of the RAM file and the disk) and checks it again there; a
// copy with one zeroed page and one zeroed record must fail the check.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { execFile, spawn, spawnSync } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { closeSync, copyFileSync, existsSync, ftruncateSync, mkdirSync, openSync, readFileSync, readSync, rmSync, statSync, writeSync } from 'node:fs'
import { connect } from 'node:net'
import type { Socket } from 'node:net'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { tempDir } from '../fixtures/temp.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const BUILD = join(ROOT, 'packages/driver-qemu/guest/build.sh')
const QEMU = 'qemu-system-x86_64'
const MEM_MIB = 128
const AREA_MIB = 32
const PAGE = 4096
const PAGE_MAGIC = Buffer.from('SHOALPG1', 'latin1')

const unavailable = spawnSync(QEMU, ['--version']).status === 0 ? undefined : `${QEMU} not found`

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

async function until<T> (what: string, timeoutMs: number, probe: () => T | undefined | Promise<T | undefined>, everyMs = 100): Promise<T> {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = await probe()
    if (v !== undefined) return v
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(everyMs)
  }
}

/** Minimal QMP client: JSON lines over the unix socket, one command at a time. */
class Qmp {
  private buf = ''
  private waiting: Array<(msg: Record<string, unknown>) => void> = []
  private constructor (private readonly sock: Socket) {
    sock.setEncoding('utf8')
    sock.on('data', (d: string) => {
      this.buf += d
      let i
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i).trim()
        this.buf = this.buf.slice(i + 1)
        if (line === '') continue
        const msg = JSON.parse(line) as Record<string, unknown>
        if ('event' in msg) continue
        this.waiting.shift()?.(msg)
      }
    })
    sock.on('error', () => {})
  }

  static async open (path: string): Promise<Qmp> {
    const sock = await until(`QMP socket ${path}`, 30_000, async () => await new Promise<Socket | undefined>(resolve => {
      const s = connect(path)
      s.once('connect', () => { resolve(s) })
      s.once('error', () => { s.destroy(); resolve(undefined) })
    }))
    const qmp = new Qmp(sock)
    await new Promise<void>(resolve => { qmp.waiting.push(() => { resolve() }) }) // the greeting
    await qmp.execute('qmp_capabilities')
    return qmp
  }

  async execute (command: string, args?: Record<string, unknown>): Promise<any> {
    const reply = new Promise<Record<string, unknown>>(resolve => { this.waiting.push(resolve) })
    this.sock.write(JSON.stringify(args == null ? { execute: command } : { execute: command, arguments: args }) + '\n')
    const msg = await reply
    if ('error' in msg) throw new Error(`QMP ${command}: ${JSON.stringify(msg.error)}`)
    return msg.return
  }

  close (): void { this.sock.destroy() }
}

interface Verdict { ok: boolean, pages: number, writes: number, records: number, badPages: number, badRecords: number, firstBad: string }

/** One QEMU process running the guest, with its serial log, serial socket and QMP socket in dir. */
class Vm {
  readonly child: ChildProcess
  stderr = ''
  private serial?: Socket
  qmp?: Qmp
  readonly startedAt = Date.now()
  constructor (readonly name: string, readonly dir: string, guest: string, ram: string, disk: string, extra: string[] = []) {
    const args = [
      '-machine', 'pc,accel=tcg,memory-backend=ram0', '-m', `${MEM_MIB}M`, '-smp', '1',
      '-object', `memory-backend-file,id=ram0,size=${MEM_MIB}M,mem-path=${ram},share=on`,
      '-nodefaults', '-no-user-config', '-display', 'none',
      '-kernel', join(guest, 'vmlinuz'), '-initrd', join(guest, 'initrd.img'),
      '-append', `console=ttyS0 quiet shoal.mem=${AREA_MIB} shoal.rate=1000 shoal.records=20`,
      '-drive', `file=${disk},format=raw,if=none,id=cache0,cache=writeback`, '-device', 'virtio-blk-pci,drive=cache0',
      '-chardev', `socket,id=ser0,path=${join(dir, 'serial.sock')},server=on,wait=off,logfile=${join(dir, 'serial.log')}`,
      '-serial', 'chardev:ser0', '-qmp', `unix:${join(dir, 'qmp.sock')},server=on,wait=off`,
      ...extra
    ]
    this.child = spawn(QEMU, args, { stdio: ['ignore', 'ignore', 'pipe'] })
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => { this.stderr += d })
  }

  get exited (): boolean { return this.child.exitCode != null || this.child.signalCode != null }

  log (): string {
    const p = join(this.dir, 'serial.log')
    return existsSync(p) ? readFileSync(p, 'latin1').replace(/\r/g, '') : ''
  }

  lines (): string[] { return this.log().split('\n') }

  async waitLine (re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    return await until(`${re} in ${this.name}'s serial log`, timeoutMs, () => {
      if (this.exited) throw new Error(`${this.name} exited (${this.child.exitCode ?? this.child.signalCode}): ${this.stderr}\n${this.log().slice(-2000)}`)
      for (const l of this.lines()) { const m = l.match(re); if (m != null) return m }
      return undefined
    })
  }

  heartbeats (): number[] {
    return this.lines().flatMap(l => { const m = l.match(/^SHOAL-HB seq=(\d+) /); return m == null ? [] : [Number(m[1])] })
  }

  async qmpOpen (): Promise<Qmp> { return (this.qmp ??= await Qmp.open(join(this.dir, 'qmp.sock'))) }

  /** Sends one console command through serial.sock (the connection stays open and is drained). */
  async send (line: string): Promise<void> {
    if (this.serial == null) {
      const path = join(this.dir, 'serial.sock')
      this.serial = await until(`serial socket ${path}`, 30_000, async () => await new Promise<Socket | undefined>(resolve => {
        const s = connect(path)
        s.once('connect', () => { resolve(s) })
        s.once('error', () => { s.destroy(); resolve(undefined) })
      }))
      this.serial.on('data', () => {}) // output is read from serial.log; keep the socket drained
      this.serial.on('error', () => {})
    }
    this.serial.write(line + '\n')
  }

  async check (nonce: string, timeoutMs = 60_000): Promise<Verdict> {
    await this.send(`check ${nonce}`)
    const m = await this.waitLine(new RegExp(`^SHOAL-VERDICT nonce=${nonce} ok=(\\d) pages=(\\d+) writes=(\\d+) records=(\\d+) bad_pages=(\\d+) bad_records=(\\d+) first_bad=(\\S+)$`), timeoutMs)
    return { ok: m[1] === '1', pages: Number(m[2]), writes: Number(m[3]), records: Number(m[4]), badPages: Number(m[5]), badRecords: Number(m[6]), firstBad: m[7] }
  }

  async kill (): Promise<void> {
    this.serial?.destroy()
    this.qmp?.close()
    if (this.exited) return
    const gone = new Promise<void>(resolve => { this.child.once('exit', () => { resolve() }) })
    this.child.kill('SIGKILL')
    await gone
  }
}

/** Byte offset, in a RAM file, of every page that starts with the guest's page magic, by page index. */
function stampedPages (ramFile: string): Map<number, number> {
  const found = new Map<number, number>()
  const fd = openSync(ramFile, 'r')
  const chunk = Buffer.alloc(4 << 20)
  try {
    for (let off = 0; ; off += chunk.length) {
      const n = readSync(fd, chunk, 0, chunk.length, off)
      if (n <= 0) break
      for (let p = 0; p + 16 <= n; p += PAGE) {
        if (chunk.compare(PAGE_MAGIC, 0, 8, p, p + 8) === 0) found.set(Number(chunk.readBigUInt64LE(p + 8)), off + p)
      }
    }
  } finally { closeSync(fd) }
  return found
}

function zeroAt (file: string, offset: number, length: number): void {
  const fd = openSync(file, 'r+')
  try { writeSync(fd, Buffer.alloc(length), 0, length, offset) } finally { closeSync(fd) }
}

describe.skipIf(unavailable != null)('QEMU test guest', () => {
  let tmp: ReturnType<typeof tempDir>
  const shm: string[] = []
  const vms: Vm[] = []
  let guest = ''
  let n = 0

  const shmFile = (tag: string): string => {
    const p = `/dev/shm/shoal-guest-${process.pid}-${tag}.ram`
    shm.push(p)
    return p
  }
  const vmDir = (tag: string): string => {
    const d = join(tmp.path, tag)
    mkdirSync(d, { recursive: true })
    return d
  }
  const start = (tag: string, ram: string, disk: string, extra: string[] = []): Vm => {
    const vm = new Vm(tag, vmDir(tag), guest, ram, disk, extra)
    vms.push(vm)
    return vm
  }
  const cleanup = async (): Promise<void> => {
    await Promise.all(vms.splice(0).map(async vm => { await vm.kill() }))
  }

  beforeAll(async () => {
    tmp = tempDir('qemu-guest')
    guest = await new Promise<string>((resolve, reject) => {
      execFile('bash', [BUILD], { maxBuffer: 64 << 20, timeout: 900_000 }, (err, stdout, stderr) => {
        if (err != null) { reject(new Error(`build.sh failed: ${err.message}\n${stderr.slice(-4000)}`)); return }
        const lines = stdout.trim().split('\n')
        resolve(lines[lines.length - 1])
      })
    })
    expect(existsSync(join(guest, 'guest.json'))).toBe(true)
  }, 900_000)

  afterEach(cleanup)
  afterAll(async () => {
    await cleanup()
    for (const p of shm) rmSync(p, { force: true })
    tmp?.cleanup()
  })

  it('boots to READY, passes its check, moves to a second QEMU and passes there; a corrupted copy fails', async () => {
    const tag = `m${n++}`
    const ram = shmFile(`${tag}-src`)
    const disk = join(tmp.path, `${tag}-src.img`)
    const fd = openSync(disk, 'w'); ftruncateSync(fd, 16 << 20); closeSync(fd)

    // Boot: the serial log fills with nobody connected to serial.sock.
    const src = start(`${tag}-src`, ram, disk)
    const ready = await src.waitLine(/^SHOAL-READY pages=(\d+) rate=1000 records_per_s=20 disk=\/dev\/vda disk_slots=(\d+)$/, 90_000)
    console.log(`guest READY ${Date.now() - src.startedAt} ms after QEMU started`)
    const pages = Number(ready[1])
    expect(pages).toBe(AREA_MIB * 256)
    expect(Number(ready[2])).toBe(4096)
    await until('heartbeats', 30_000, () => src.heartbeats().length >= 10 ? true : undefined)

    const before = await src.check('before')
    expect(before).toMatchObject({ ok: true, pages, badPages: 0, badRecords: 0, firstBad: '-' })
    expect(before.writes).toBeGreaterThan(0)
    expect(before.records).toBeGreaterThan(0)

    // Move: stop, device state through x-ignore-shared migration, copy RAM file and disk.
    const qmp = await src.qmpOpen()
    await qmp.execute('stop')
    await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] })
    await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 10 * 2 ** 30 })
    const state = join(tmp.path, `${tag}.state`)
    await qmp.execute('migrate', { uri: `exec:cat > ${state}` })
    await until('outgoing migration', 60_000, async () => {
      const s = await qmp.execute('query-migrate') as { status?: string, 'error-desc'?: string }
      if (s.status === 'failed') throw new Error(`migration failed: ${s['error-desc'] ?? ''}`)
      return s.status === 'completed' ? true : undefined
    })
    const stateSize = statSync(state).size
    console.log(`device state: ${stateSize} bytes`)
    expect(stateSize).toBeGreaterThan(0)
    expect(stateSize).toBeLessThan(MEM_MIB << 20) // RAM is not in the stream
    await sleep(200)
    const srcBeats = src.heartbeats()
    const copies = (name: string): { ram: string, disk: string } => {
      const c = { ram: shmFile(`${tag}-${name}`), disk: join(tmp.path, `${tag}-${name}.img`) }
      copyFileSync(ram, c.ram)
      copyFileSync(disk, c.disk)
      return c
    }
    const good = copies('dst')
    const bad = copies('bad')
    await src.kill()

    const incoming = async (vm: Vm): Promise<void> => {
      const q = await vm.qmpOpen()
      await q.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] })
      await q.execute('migrate-incoming', { uri: `exec:cat ${state}` })
      await until('incoming migration', 60_000, async () => {
        const s = await q.execute('query-status') as { status: string }
        if (s.status === 'paused' || s.status === 'running') return true
        const m = await q.execute('query-migrate') as { status?: string, 'error-desc'?: string }
        if (m.status === 'failed') throw new Error(`incoming migration failed: ${m['error-desc'] ?? ''}`)
        return undefined
      })
      await q.execute('cont')
    }

    const dst = start(`${tag}-dst`, good.ram, good.disk, ['-incoming', 'defer'])
    await incoming(dst)
    const lastSrc = Math.max(...srcBeats)
    await until('heartbeats continuing on the destination', 30_000, () => dst.heartbeats().some(s => s > lastSrc + 5) ? true : undefined)
    const dstBeats = dst.heartbeats()
    expect(Math.min(...dstBeats)).toBeGreaterThan(lastSrc - 1)
    expect(Math.min(...dstBeats)).toBeLessThanOrEqual(lastSrc + 2)
    expect(dst.log()).not.toMatch(/SHOAL-READY/) // the same guest, not a new boot
    const after = await dst.check('after')
    expect(after).toMatchObject({ ok: true, pages, badPages: 0, badRecords: 0, firstBad: '-' })
    expect(after.writes).toBeGreaterThan(before.writes)
    expect(after.records).toBeGreaterThan(before.records)
    await dst.kill()

    // A copy with one zeroed page in the middle of the area and one zeroed record fails.
    const stamped = stampedPages(bad.ram)
    expect(stamped.size).toBe(pages)
    const middle = Math.floor(pages / 2)
    zeroAt(bad.ram, stamped.get(middle)!, PAGE)
    zeroAt(bad.disk, 0, PAGE) // slot 0: seq 1, still in the ring
    const broken = start(`${tag}-bad`, bad.ram, bad.disk, ['-incoming', 'defer'])
    await incoming(broken)
    const v = await broken.check('corrupt')
    expect(v).toMatchObject({ ok: false, badPages: 1, badRecords: 1, firstBad: `page:${middle}:magic` })
  }, 300_000)
})
