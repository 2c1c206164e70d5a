// `pnpm bench sparse-cache`: issue 10's large, mostly empty cache. A 16 GiB cache of which 1% holds
// data (a sparse file: 1% of its 256 KiB blocks written, scattered), 64 MiB of memory, the scan
// tracker, a running synthetic workload (pages and cache records), migrated between two peers on
// loopback with the default 300 ms downtime target. The same image, in the same run, migrates with
// hole skipping (SEEK_DATA/SEEK_HOLE, today) and without it (every byte read, as before): the
// baseline. Reports total time, downtime, rounds, how pre-copy ended, the highest throttle, the
// warnings raised, and the CPU seconds of the two peers (this process and its worker threads; the
// workload process is not counted). Writes bench/results/sparse-cache.json.
//
// Env: SHOAL_BENCH_CACHE (bytes, default 16 GiB), SHOAL_BENCH_WRITTEN (share, default 0.01),
// SHOAL_BENCH_CASES ("skip,read-all"), SHOAL_BENCH_REPS (default 1).
import { openSync, writeSync, closeSync, rmSync } from 'node:fs'
import { randomFillSync } from 'node:crypto'
import { join } from 'node:path'
import { createShoalNode } from '@shoal/node'
import { createSyntheticDriver } from '@shoal/driver-synthetic'
import { printTable, stats, tempDir, writeResults } from './lib/harness.js'

const GiB = 2 ** 30
const MiB = 2 ** 20
const cacheSize = Number(process.env.SHOAL_BENCH_CACHE ?? 16 * GiB)
const written = Number(process.env.SHOAL_BENCH_WRITTEN ?? 0.01)
const cases = (process.env.SHOAL_BENCH_CASES ?? 'skip,read-all').split(',')
const reps = Number(process.env.SHOAL_BENCH_REPS ?? 1)
const blockSize = 256 * 1024
const memorySize = 64 * MiB

const dirs = []
const mkdir = (p, base) => { const d = tempDir(p, base); dirs.push(d); return d }
const nodes = []
async function node (ip, allow = []) {
  const n = await createShoalNode({
    dataDir: mkdir('sc-data'), shmDir: mkdir('sc-shm', '/dev/shm'), listen: [`/ip4/${ip}/tcp/0`], allow, drivers: [createSyntheticDriver()]
  })
  nodes.push(n)
  await n.start()
  return n
}

/** Writes random data into `share` of the cache's blocks, spread evenly (the rest stay holes). */
function writeScattered (path) {
  const blocks = cacheSize / blockSize
  const every = Math.max(1, Math.round(1 / written))
  const buf = Buffer.allocUnsafe(blockSize)
  const fd = openSync(path, 'r+')
  let n = 0
  try {
    for (let b = every - 1; b < blocks; b += every) { randomFillSync(buf); writeSync(fd, buf, 0, blockSize, b * blockSize); n++ }
  } finally { closeSync(fd) }
  return n
}

const rows = []
const results = []
try {
  for (let rep = 0; rep < reps; rep++) {
    for (const c of cases) {
      const a = await node('127.0.0.1')
      const b = await node('127.0.0.2', [a.peerId])
      const name = `sparse-${c}-${rep}`
      const rec = await a.createImage({ name, memorySize, cacheSize, blockSize, fill: 'zero', tracker: 'scan', config: { rate: 2000, recordRate: 100 } })
      const dataBlocks = writeScattered(rec.spec.cache.path)
      await a.startImage(name)
      await new Promise(resolve => setTimeout(resolve, 1000))
      const cpu0 = process.cpuUsage()
      const t0 = performance.now()
      let report
      try {
        report = await a.migrate(name, b.addrs()[0], { skipHoles: c !== 'read-all' })
      } catch (err) {
        report = err.report ?? { ok: false, error: { code: err.code, message: err.message }, rounds: [] }
      }
      const cpu = process.cpuUsage(cpu0)
      const r = {
        case: c, rep, cache_bytes: cacheSize, data_blocks: dataBlocks, ok: report.ok === true, verified: report.verified === true,
        total_s: (performance.now() - t0) / 1000, downtime_ms: report.downtimeMs, rounds: report.rounds.length,
        reason: report.convergence?.reason, max_throttle: report.convergence?.maxThrottle ?? 0,
        final_scan_ms: report.downtime?.finalScanMs, warnings: (report.warnings ?? []).map(w => w.code),
        pause_met: report.pause?.met, cpu_s: (cpu.user + cpu.system) / 1e6, bytes: report.bytes
      }
      results.push(r)
      console.error(`${c}: ${JSON.stringify(r)}`)
      for (const n of nodes.splice(0)) await n.stop()
    }
  }
  for (const c of cases) {
    const rs = results.filter(r => r.case === c)
    const total = stats(rs.map(r => r.total_s))
    const down = stats(rs.filter(r => r.downtime_ms != null).map(r => r.downtime_ms))
    rows.push({
      case: c === 'skip' ? 'holes skipped' : 'every byte read',
      verified: `${rs.filter(r => r.verified).length}/${rs.length}`,
      total_s: total.median?.toFixed(1),
      downtime_ms: down.median?.toFixed(0),
      rounds: rs.map(r => r.rounds).join(','),
      ended: rs.map(r => r.reason).join(','),
      max_throttle: rs.map(r => r.max_throttle).join(','),
      final_scan_ms: rs.map(r => r.final_scan_ms?.toFixed(0)).join(','),
      cpu_s: stats(rs.map(r => r.cpu_s)).median?.toFixed(1),
      warnings: [...new Set(rs.flatMap(r => r.warnings))].join(' ')
    })
  }
  const base = results.find(r => r.case === 'read-all')
  const skip = results.find(r => r.case === 'skip')
  if (base != null && skip != null) rows.push({ case: 'ratio (skip / read-all)', total_s: (skip.total_s / base.total_s).toFixed(3), downtime_ms: skip.downtime_ms != null && base.downtime_ms != null ? (skip.downtime_ms / base.downtime_ms).toFixed(3) : '', cpu_s: (skip.cpu_s / base.cpu_s).toFixed(3) })
  printTable(rows.map(r => ({ ...Object.fromEntries(Object.keys(rows[0]).map(k => [k, ''])), ...r })))
  writeResults('sparse-cache', { setup: { cache_bytes: cacheSize, written_share: written, block_size: blockSize, memory_bytes: memorySize, tracker: 'scan', downtime_target_ms: 300, link: 'loopback' }, results })
} finally {
  for (const n of nodes.splice(0)) await n.stop().catch(() => {})
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
}
