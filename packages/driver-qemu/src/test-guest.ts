import { execFile } from 'node:child_process'
import { connect } from 'node:net'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { WorkloadError } from '@shoal/core'
import { vmPaths } from './command-line.js'
import { logSize, waitForLine } from './serial-log.js'

/** The build script of Shoal's test guest (kernel + initramfs with a RAM/disk dirtier that checks itself). */
export const testGuestBuildScript = fileURLToPath(new URL('../guest/build.sh', import.meta.url))

/** A built test guest. */
export interface TestGuest {
  /** Directory holding the build (cached). */
  dir: string
  kernel: string
  initrd: string
  /** What `guest.json` says about the build (kernel version, packages, hashes). */
  info: Record<string, unknown>
}

/**
 * Builds the test guest from Debian packages (Debian's cloud kernel, busybox-static, a static C
 * program), or returns the cached build. Installs the packages it needs when run as root.
 */
export async function buildTestGuest (opts: { signal?: AbortSignal, log?: (line: string) => void } = {}): Promise<TestGuest> {
  const dir = await new Promise<string>((resolve, reject) => {
    const child = execFile('bash', [testGuestBuildScript], { signal: opts.signal, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err != null) { reject(new WorkloadError(`test guest build failed: ${stderr.trim().split('\n').slice(-5).join(' | ') || err.message}`)); return }
      const last = stdout.trim().split('\n').pop() ?? ''
      resolve(last)
    })
    child.stderr?.on('data', (d: Buffer) => { for (const l of d.toString().split('\n')) if (l !== '') opts.log?.(l) })
  })
  const kernel = join(dir, 'vmlinuz')
  const initrd = join(dir, 'initrd.img')
  if (!existsSync(kernel) || !existsSync(initrd)) throw new WorkloadError(`test guest build in ${dir} is incomplete`)
  return { dir, kernel, initrd, info: JSON.parse(readFileSync(join(dir, 'guest.json'), 'utf8')) as Record<string, unknown> }
}

/** Settings of the test guest's program (on the kernel command line). */
export interface TestGuestSettings {
  /** RAM it dirties, MiB (default: half the VM's memory). */
  memMiB?: number
  /** Page writes per second. */
  rate?: number
  /** Disk records per second. */
  records?: number
  /** Heartbeat interval, ms. */
  heartbeatMs?: number
}

/** The heartbeat line prefix of the test guest. */
export const TEST_GUEST_HEARTBEAT = 'SHOAL-HB'

/** A QEMU driver config that runs the test guest in a VM of `memorySize` bytes. */
export function testGuestConfig (guest: TestGuest, memorySize: number, s: TestGuestSettings = {}): Record<string, unknown> {
  const memMiB = s.memMiB ?? Math.max(4, Math.floor(memorySize / (2 * 1024 * 1024)))
  const append = ['console=ttyS0', 'quiet', `shoal.mem=${memMiB}`, `shoal.rate=${s.rate ?? 1000}`, `shoal.records=${s.records ?? 20}`, `shoal.hb=${s.heartbeatMs ?? 20}`].join(' ')
  return { kernel: guest.kernel, initrd: guest.initrd, append, heartbeat: TEST_GUEST_HEARTBEAT }
}

/** The test guest's answer to `check`: its own check of every RAM stamp and disk record. */
export interface GuestVerdict {
  ok: boolean
  pages: number
  writes: number
  records: number
  badPages: number
  badRecords: number
  firstBad: string
  /** The whole verdict line. */
  line: string
}

/**
 * Asks the test guest of a running VM (its run directory) to check itself: sends `check <nonce>`
 * on its serial console and waits for the `SHOAL-VERDICT` line with that nonce in the log.
 */
export async function checkTestGuest (runDir: string, timeoutMs = 60_000): Promise<GuestVerdict> {
  const p = vmPaths(runDir)
  const nonce = Math.random().toString(36).slice(2, 10)
  const from = logSize(p.serialLog)
  // QEMU's console stalls when a connected client does not read: read (and drop) everything
  // while connected, and hang up once the verdict is in the log.
  const sock = connect(p.serial)
  sock.resume()
  let line: string
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject)
      sock.once('connect', () => { sock.write(`check ${nonce}\n`, () => { resolve() }) })
    })
    line = await waitForLine(p.serialLog, from, `SHOAL-VERDICT nonce=${nonce}`, timeoutMs)
  } finally {
    sock.destroy()
  }
  const field = (k: string): string => new RegExp(`${k}=(\\S+)`).exec(line)?.[1] ?? ''
  return {
    ok: field('ok') === '1',
    pages: Number(field('pages')),
    writes: Number(field('writes')),
    records: Number(field('records')),
    badPages: Number(field('bad_pages')),
    badRecords: Number(field('bad_records')),
    firstBad: /first_bad=(.*)$/.exec(line)?.[1] ?? '',
    line
  }
}
