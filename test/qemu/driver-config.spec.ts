// Unit tests of the QEMU driver's config checks and command line (no QEMU started).
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { InvalidDriverConfigError, InvalidArgumentError } from '@shoal/core'
import type { ImageSpec } from '@shoal/core'
import { findExecutable, isQemuStream, qemuArgs, validateQemuConfig, vmPaths } from '@shoal/driver-qemu'
import { tempDir } from '../fixtures/temp.js'

const MiB = 2 ** 20
const geometry = { memorySize: 128 * MiB, pageSize: 4096, cacheSize: 64 * MiB, blockSize: 256 * 1024 }
const cleanups: Array<() => unknown> = []
afterEach(() => { for (const c of cleanups.splice(0)) c() })

function kernelFile (): string {
  const d = tempDir('kernel')
  cleanups.push(d.cleanup)
  const k = join(d.path, 'vmlinuz')
  writeFileSync(k, 'not really a kernel')
  return k
}

// A stand-in binary that exists on every machine: the config check only needs an executable.
const binary = findExecutable('true')!

describe('validateQemuConfig', () => {
  it('fills in defaults', () => {
    const kernel = kernelFile()
    expect(validateQemuConfig({ kernel, binary }, geometry)).toEqual({
      kernel, append: 'console=ttyS0', cpus: 1, machine: 'pc', accel: 'auto', binary, heartbeat: null,
      heartbeatTimeoutMs: 5000, bootTimeoutMs: 120000, tracker: 'scan', diskTracker: 'dirty-bitmap'
    })
  })

  const cases: Array<[string, Record<string, unknown>, Partial<typeof geometry>, RegExp]> = [
    ['missing kernel', {}, {}, /kernel must be the absolute path/],
    ['relative kernel', { kernel: 'vmlinuz' }, {}, /absolute path/],
    ['absent kernel', { kernel: '/nonexistent/vmlinuz' }, {}, /cannot be read on this node \(ENOENT\)/],
    ['unknown field', { bogus: 1 }, {}, /unknown config field "bogus"/],
    ['cooperative tracker', { tracker: 'cooperative' }, {}, /tracker must be scan/],
    ['bad accel', { accel: 'hvf' }, {}, /accel must be tcg, kvm or auto/],
    ['bad cpus', { cpus: 0 }, {}, /cpus must be an integer in 1..64/],
    ['fractional cpus', { cpus: 1.5 }, {}, /cpus must be an integer/],
    ['missing binary', { binary: 'qemu-system-nonexistent' }, {}, /not found on this node/],
    ['binary with a relative path', { binary: './qemu' }, {}, /binary must be/],
    ['multi-line append', { append: 'a\nb' }, {}, /append must be one line/],
    ['bad machine', { machine: 'pc;rm -rf' }, {}, /machine must be/],
    ['empty heartbeat', { heartbeat: '' }, {}, /heartbeat must be/],
    ['odd memory', {}, { memorySize: 100 * MiB + 4096 }, /multiple of 2 MiB/],
    ['tiny memory', {}, { memorySize: 8 * MiB }, /at least 16 MiB/],
    ['huge pages', {}, { pageSize: 2 * MiB }, /page size must be 4096/]
  ]
  for (const [what, cfg, geo, msg] of cases) {
    it(`refuses ${what} with a clear error`, () => {
      const full = what === 'missing kernel' || what.includes('kernel') ? { binary, ...cfg } : { kernel: kernelFile(), binary, ...cfg }
      const err = (() => { try { validateQemuConfig(full, { ...geometry, ...geo }); return undefined } catch (e) { return e } })()
      expect(err).toBeInstanceOf(InvalidDriverConfigError)
      expect((err as InvalidDriverConfigError).code).toBe('ERR_INVALID_DRIVER_CONFIG')
      expect((err as Error).message).toMatch(msg)
    })
  }
})

describe('qemuArgs', () => {
  const spec: ImageSpec = {
    name: 'vm1', driver: 'qemu', driverConfig: {},
    memory: { path: '/dev/shm/x/vm1.mem', size: 128 * MiB, pageSize: 4096 },
    cache: { path: '/data/images/vm1,odd/cache.img', size: 64 * MiB, blockSize: 256 * 1024 }
  }
  const cfg = { kernel: '/k/vmlinuz', initrd: '/k/initrd.img', append: 'console=ttyS0 quiet', cpus: 2, machine: 'pc', accel: 'auto' as const, binary: 'qemu-system-x86_64', heartbeat: 'HB', heartbeatTimeoutMs: 5000, bootTimeoutMs: 1000, tracker: 'scan' as const }

  it('puts RAM in the shared memory file and the cache file on virtio (through links in the run dir), and escapes commas', () => {
    const args = qemuArgs(spec, cfg, '/run/vm1,odd', { accel: 'tcg', incoming: false })
    const joined = args.join(' ')
    expect(joined).toContain('-machine pc,accel=tcg,memory-backend=ram0')
    expect(joined).toContain('-m 128M')
    expect(joined).toContain('-smp 2')
    expect(joined).toContain('memory-backend-file,id=ram0,size=128M,mem-path=/run/vm1,,odd/ram,share=on')
    expect(joined).toContain('file=/run/vm1,,odd/disk,format=raw')
    expect(joined).toContain('virtio-blk-pci,drive=cache0')
    expect(joined).toContain('-initrd /k/initrd.img')
    expect(args[args.indexOf('-append') + 1]).toBe('console=ttyS0 quiet')
    expect(joined).toContain('logfile=/run/vm1,,odd/serial.log')
    expect(joined).toContain('-qmp unix:/run/vm1,,odd/qmp.sock,server=on,wait=off')
    expect(args).not.toContain('-incoming')
  })

  it('starts a destination VM paused, waiting for its device state', () => {
    const args = qemuArgs(spec, cfg, '/run/vm1', { accel: 'kvm', incoming: true })
    expect(args.slice(-3)).toEqual(['-S', '-incoming', 'defer'])
    expect(args.join(' ')).toContain('accel=kvm')
  })

  it('leaves the disk out when the image has no cache', () => {
    const args = qemuArgs({ ...spec, cache: { ...spec.cache, size: 0 } }, cfg, '/run/vm1', { accel: 'tcg', incoming: false })
    expect(args.join(' ')).not.toContain('virtio-blk')
  })

  it('refuses a run directory too long for unix sockets', () => {
    expect(() => vmPaths('/' + 'x'.repeat(120))).toThrow(InvalidArgumentError)
  })
})

describe('isQemuStream', () => {
  it('recognises the QEVM header only', () => {
    expect(isQemuStream(Buffer.from([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3, 1]))).toBe(true)
    expect(isQemuStream(Buffer.from('{"writes":1}'))).toBe(false)
    expect(isQemuStream(new Uint8Array(0))).toBe(false)
  })
})

describe('a QEMU config that arrives from a migrating peer', () => {
  const qemu = findExecutable('qemu-system-x86_64')
  it.skipIf(qemu == null)('may name neither the program this node runs nor files outside its trusted directories', async () => {
    const { createQemuDriver } = await import('@shoal/driver-qemu')
    const kernel = kernelFile()
    const trusted = join(kernel, '..')
    const driver = createQemuDriver({ trustedDirs: [trusted] })
    // Accepted as this node's own config, and from a peer when the kernel is in a trusted dir.
    expect(driver.validateConfig({ kernel, binary: 'qemu-system-x86_64' }, geometry, 'local')).toMatchObject({ kernel })
    expect(driver.validateConfig({ kernel }, geometry, 'peer')).toMatchObject({ kernel })
    // A peer naming a program to run: refused, even though it exists here.
    expect(() => driver.validateConfig({ kernel, binary }, geometry, 'peer')).toThrow(InvalidDriverConfigError)
    expect(() => driver.validateConfig({ kernel, binary }, geometry, 'peer')).toThrow(/cannot choose the program/)
    // A peer pointing QEMU at a file of this host outside the trusted dirs (also through a symlink).
    expect(() => driver.validateConfig({ kernel: '/etc/passwd' }, geometry, 'peer')).toThrow(/not in a directory this node trusts/)
    const { symlinkSync } = await import('node:fs')
    symlinkSync('/etc/passwd', join(trusted, 'sneaky'))
    expect(() => driver.validateConfig({ kernel: join(trusted, 'sneaky') }, geometry, 'peer')).toThrow(/not in a directory this node trusts/)
    expect(() => driver.validateConfig({ kernel, initrd: '/etc/hostname' }, geometry, 'peer')).toThrow(/initrd/)
  })
})
