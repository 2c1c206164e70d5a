// `pnpm bench qemu-throttle`: what the QEMU driver's auto-converge throttle does to a guest.
// QEMU's own cpu-throttle-percentage acts only inside QEMU's migration, so the driver throttles a
// VM with a QMP stop/cont duty cycle (run 20 ms, stop 20·f/(1−f) ms). A VM runs Shoal's test guest
// (TCG, 256 MiB, dirtying 5000 pages/s); for each throttle fraction f, the guest's page writes per
// second (from its heartbeat counters) over 6 s, against the unthrottled rate measured in the
// same run. Target: the dirty rate falls to about (1 − f) of it. Writes bench/results/qemu-throttle.json.
import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildTestGuest, createQemuDriver, testGuestConfig, validateQemuConfig } from '@shoal/driver-qemu'
import { printTable, writeResults } from './lib/harness.js'

const MiB = 2 ** 20
const memorySize = 256 * MiB
const rate = Number(process.env.SHOAL_BENCH_RATE ?? 5000)
const fractions = (process.env.SHOAL_BENCH_FRACTIONS ?? '0,0.2,0.5,0.8,0.9,0.99').split(',').map(Number)
const WINDOW_MS = 6000
const guest = await buildTestGuest()
const dir = mkdtempSync(join(tmpdir(), 'shoal-bench-throttle-'))
const shm = mkdtempSync(join('/dev/shm', 'shoal-bench-throttle-'))
const spec = { name: 'thr', driver: 'qemu', driverConfig: {}, memory: { path: join(shm, 'ram'), size: memorySize, pageSize: 4096 }, cache: { path: join(dir, 'cache.img'), size: 16 * MiB, blockSize: 262144 } }
for (const [p, s] of [[spec.memory.path, memorySize], [spec.cache.path, 16 * MiB]]) { const fd = openSync(p, 'w'); ftruncateSync(fd, s); closeSync(fd) }
spec.driverConfig = validateQemuConfig({ ...testGuestConfig(guest, memorySize, { memMiB: 64, rate, records: 0 }), accel: 'tcg' }, { memorySize, pageSize: 4096, cacheSize: 16 * MiB, blockSize: 262144 })
const driver = createQemuDriver()
const removeFiles = () => { rmSync(dir, { recursive: true, force: true }); rmSync(shm, { recursive: true, force: true }) }
const w = await driver.launch({ spec, runDir: dir }).catch((err) => { removeFiles(); throw err })
const log = join(dir, 'serial.log')
const lastWrites = () => {
  const lines = readFileSync(log, 'latin1').split('\n').filter(l => l.includes('SHOAL-HB'))
  return Number(/writes=(\d+)/.exec(lines[lines.length - 1] ?? '')?.[1] ?? NaN)
}
const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))
const rows = []
try {
  await sleep(2000)
  let base
  for (const f of fractions) {
    await w.controller.throttle(f)
    await sleep(1000)
    const w0 = lastWrites()
    const t0 = performance.now()
    await sleep(WINDOW_MS)
    // The last heartbeat may be up to one interval old at either end: the window is long enough.
    const perS = (lastWrites() - w0) / ((performance.now() - t0) / 1000)
    base ??= perS
    rows.push({ throttle: f, 'pages/s': Math.round(perS), 'of unthrottled': +(perS / base).toFixed(3), 'expected (1−f)': +(1 - f).toFixed(3) })
    console.log(JSON.stringify(rows[rows.length - 1]))
  }
} finally {
  await w.controller.throttle(0)
  await w.terminate()
  removeFiles()
}
printTable(rows)
writeResults('qemu-throttle', { setup: { memory_bytes: memorySize, accel: 'tcg', guest_pages_per_s: rate, window_ms: WINDOW_MS, duty_cycle: 'QMP stop/cont, run 20 ms, stop 20·f/(1−f) ms' }, rows })
