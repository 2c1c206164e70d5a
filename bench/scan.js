// `pnpm bench scan`: the scan tracker's speed on this hardware, no network. A 1 GiB file of random
// bytes in /dev/shm; for each comparison mode (`shadow`: byte compare against a copy, `hash`:
// SHA-256 per 4 KiB page) and a worker pool of 1 and 2 threads, a fresh tracker scans the area
// twice: the first scan establishes the baseline (every page dirty), the second finds nothing
// changed, which is the steady-state cost of a final (paused) scan. Between the two scans the
// first scan's pages are loaded as a sender would (that records the hash-mode fingerprints).
// The second scan is timed: median of SHOAL_BENCH_REPS (default 5) fresh trackers, the
// configurations interleaved rep by rep. Reports GB/s in total and per worker and the scaling
// from 1 to 2 workers, so the comparison method can be chosen by measurement.
import { openSync, writeSync, closeSync, truncateSync } from 'node:fs'
import { randomFillSync } from 'node:crypto'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { createDirtyTracker, createWorkerPool } from '@shoal/core'
import { printTable, stats, tempDir, writeResults } from './lib/harness.js'

const GiB = 2 ** 30
const size = Number(process.env.SHOAL_BENCH_BYTES ?? GiB)
const reps = Number(process.env.SHOAL_BENCH_REPS ?? 5)
const modes = (process.env.SHOAL_BENCH_MODES ?? 'shadow,hash').split(',')
const workerCounts = (process.env.SHOAL_BENCH_WORKERS ?? '1,2').split(',').map(Number)
const unitSize = 4096

const dir = tempDir('scan', '/dev/shm')
const path = join(dir, 'area.mem')
{
  const fd = openSync(path, 'w')
  const chunk = Buffer.allocUnsafe(16 * 2 ** 20)
  for (let off = 0; off < size; off += chunk.byteLength) {
    const n = Math.min(chunk.byteLength, size - off)
    randomFillSync(chunk, 0, n)
    writeSync(fd, chunk, 0, n, off)
  }
  closeSync(fd)
}

const t = () => performance.now()
// Configurations are interleaved rep by rep (round robin), so drift on a shared VM (memory
// bandwidth, CPU steal) spreads over all of them instead of biasing whichever ran first.
const configs = modes.flatMap(mode => workerCounts.map(workers => ({ mode, workers, pool: createWorkerPool({ workers }), first: [], second: [] })))
try {
  for (let r = 0; r < reps; r++) {
    for (const c of configs) {
      const tracker = createDirtyTracker({ path, size, unitSize, mode: c.mode }, c.pool)
      try {
        // As in a final round: the workload is paused (no CPU budget) and the digest is taken.
        let t0 = t()
        const a = await tracker.scan({ digest: true, paused: true })
        c.first.push(t() - t0)
        // The round's chunks are loaded for sending: that records what the destination holds
        // (hash mode keeps a fingerprint per page only then; shadow mode already copied).
        const runs = [...a.dirty.runs(256)]
        for (let i = 0; i < runs.length; i += 64) await tracker.load(runs.slice(i, i + 64))
        t0 = t()
        const b = await tracker.scan({ digest: true, paused: true })
        c.second.push(t() - t0)
        if (b.dirty.count() > 0) throw new Error(`second scan found ${b.dirty.count()} dirty pages in an unchanged area`)
      } finally {
        await tracker.close()
      }
    }
  }
} finally {
  for (const c of configs) await c.pool.stop()
}
const cases = []
for (const { mode, workers, first, second } of configs) {
  const s = stats(second)
  const gbps = size / (s.median / 1000) / 1e9
  const row = {
    mode,
    workers,
    second_scan_ms_median: +s.median.toFixed(1),
    second_scan_ms_min: +s.min.toFixed(1),
    second_scan_ms_max: +s.max.toFixed(1),
    first_scan_ms_median: +stats(first).median.toFixed(1),
    GBps: +gbps.toFixed(2),
    GBps_per_worker: +(gbps / workers).toFixed(2),
    samples_ms: second.map(x => +x.toFixed(1))
  }
  cases.push(row)
  console.log(JSON.stringify(row))
}
for (const mode of modes) {
  const one = cases.find(c => c.mode === mode && c.workers === 1)
  for (const c of cases.filter(c => c.mode === mode)) c.scaling_vs_1_worker = one != null ? +(c.GBps / one.GBps).toFixed(2) : null
}
printTable(cases.map(({ samples_ms: _, ...r }) => r))
const best = [...cases].sort((a, b) => b.GBps - a.GBps)[0]
console.log(`\nfastest: ${best.mode} with ${best.workers} worker(s), ${best.GBps} GB/s (1 GiB final scan ≈ ${best.second_scan_ms_median} ms)`)
writeResults('scan', {
  setup: {
    bytes: size,
    unit_size: unitSize,
    file: '/dev/shm (tmpfs), random bytes',
    cores: availableParallelism(),
    reps,
    timed: 'second scan of a fresh tracker (nothing changed since the first), scan({ digest: true, paused: true }) as in a final round; median of reps',
    GB: '1e9 bytes'
  },
  cases,
  fastest: { mode: best.mode, workers: best.workers, GBps: best.GBps }
})

// Sparse case (SHOAL_BENCH_SPARSE_BYTES, default 4 GiB; 0 skips it): a mostly-empty cache file on
// the temp dir's disk filesystem, 1% of its 256 KiB blocks written at random, hash mode (as for
// caches over the shadow limit), 2 workers, final-round scans of an unchanged file. Timed: a scan
// that takes the hole map with lseek(SEEK_DATA) and skips holes (median of reps) against one
// that reads every byte (one run: it reads the whole file; the second of two, page cache warm).
const sparseBytes = Number(process.env.SHOAL_BENCH_SPARSE_BYTES ?? 4 * GiB)
if (sparseBytes > 0) {
  const block = 256 * 1024
  const sdir = tempDir('scan-sparse')
  const spath = join(sdir, 'cache.img')
  closeSync(openSync(spath, 'w'))
  truncateSync(spath, sparseBytes)
  const blocks = sparseBytes / block
  const fd = openSync(spath, 'r+')
  const buf = Buffer.allocUnsafe(block)
  for (let i = 0; i < blocks / 100; i++) { randomFillSync(buf); writeSync(fd, buf, 0, block, Math.floor(Math.random() * blocks) * block) }
  closeSync(fd)
  const pool = createWorkerPool({ workers: 2 })
  const timeScan = async (dataExtents) => {
    const tracker = createDirtyTracker({ path: spath, size: sparseBytes, unitSize: block, mode: 'hash', ...(dataExtents === false ? { dataExtents } : {}) }, pool)
    try {
      const a = await tracker.scan({ digest: true, paused: true })
      const runs = [...a.dirty.runs(16)]
      for (let i = 0; i < runs.length; i += 64) await tracker.load(runs.slice(i, i + 64))
      const t0 = t()
      const b = await tracker.scan({ digest: true, paused: true })
      return { ms: t() - t0, bytesRead: b.bytesRead }
    } finally {
      await tracker.close()
    }
  }
  try {
    const skip = []
    let read = 0
    for (let r = 0; r < reps; r++) { const x = await timeScan(undefined); skip.push(x.ms); read = x.bytesRead }
    const full = await timeScan(false)
    const row = {
      file_GiB: +(sparseBytes / GiB).toFixed(1),
      written: '1%',
      skip_holes_ms_median: +stats(skip).median.toFixed(1),
      skip_holes_bytes_read: read,
      read_all_ms: +full.ms.toFixed(1),
      ratio: +(full.ms / stats(skip).median).toFixed(1)
    }
    printTable([row])
    writeResults('scan-sparse', { setup: { bytes: sparseBytes, unit_size: block, mode: 'hash', workers: 2, file: 'temp dir (disk filesystem), sparse, 1% of blocks written', reps }, cases: [row], samples_ms: skip })
  } finally {
    await pool.stop()
  }
}
