// `node bench/qemu-disk-tracker.js`: how to find the changed blocks of a QEMU VM's raw cache disk
// between pre-copy rounds (and in the final round, inside the pause), two ways:
//   (A) scan  Shoal's scan tracker (createDirtyTracker on a 2-worker pool, 256 KiB units; shadow
//             mode for areas <= 2 GiB, hash mode above, as the node picks): cost of a scan round
//             when nothing changed, after the first full scan (warm page cache, median of 3; plus
//             one round with the file dropped from the page cache).
//   (B) bitmap  QEMU's block dirty bitmaps (granularity 256 KiB) on the running VM's disk: per
//             round a QMP transaction (add the next bitmap, disable the current one), an NBD export
//             of the disk carrying the disabled bitmap, `qemu-img map` with x-dirty-bitmap to read
//             its dirty extents, then the export and the old bitmap are removed. 0, 100 and 10,000
//             scattered dirty blocks (at most half the disk's blocks), written through QEMU's block
//             layer with HMP `qemu-io`; every round checks that exactly the written blocks are reported.
// Disks: raw files of random bytes under /tmp, 2 GiB and 16 GiB. Writes
// bench/results/qemu-disk-tracker.json. Needs qemu-system-x86_64, qemu-img, /usr/bin/time (TCG, no guest).
//
// Env: SHOAL_QDT_SIZES (2048,16384) in MiB, SHOAL_QDT_REPS (3), SHOAL_QDT_MANY (10000).
import { spawn, spawnSync } from 'node:child_process'
import { createCipheriv, randomBytes } from 'node:crypto'
import { closeSync, fsyncSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { createDirtyTracker, createWorkerPool } from '@shoal/core'
import { QmpClient } from '@shoal/driver-qemu'
import { printTable, stats, writeResults } from './lib/harness.js'

const MiB = 2 ** 20
const GiB = 2 ** 30
const UNIT = 256 * 1024
const sizes = (process.env.SHOAL_QDT_SIZES ?? '2048,16384').split(',').map(s => Number(s) * MiB)
const reps = Number(process.env.SHOAL_QDT_REPS ?? 3)
const many = Number(process.env.SHOAL_QDT_MANY ?? 10000)
const HARD_LIMIT_MS = 30 * 60 * 1000

const started = performance.now()
const work = mkdtempSync('/tmp/shoal-qdt-')
/** @type {import('node:child_process').ChildProcess | undefined} */
let qemu
let cleaned = false

function cleanup () {
  if (cleaned) return
  cleaned = true
  if (qemu != null && qemu.exitCode == null && qemu.signalCode == null) { try { qemu.kill('SIGKILL') } catch {} }
  rmSync(work, { recursive: true, force: true })
}
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { cleanup(); process.exit(130) })
process.on('exit', cleanup)
const watchdog = setTimeout(() => { console.error('hard time limit reached: stopping'); cleanup(); process.exit(2) }, HARD_LIMIT_MS)
watchdog.unref()

const label = (size) => size >= GiB ? `${size / GiB}GiB` : `${size / MiB}MiB`
const ms = (x) => Math.round(x * 10) / 10
const cpuNow = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6 } // whole process: main + workers
const procCpu = (pid) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) / 100 }
const log = (...a) => console.log(`[${((performance.now() - started) / 1000).toFixed(0).padStart(4)} s]`, ...a)

function mulberry32 (seed) {
  return () => {
    seed = (seed + 0x6D2B79F5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** `n` distinct block numbers in [0, units), scattered at random, sorted. */
function pickBlocks (units, n, rnd) {
  const all = new Uint32Array(units)
  for (let i = 0; i < units; i++) all[i] = i
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(rnd() * (units - i))
    const t = all[i]; all[i] = all[j]; all[j] = t
  }
  return Array.from(all.subarray(0, n)).sort((a, b) => a - b)
}

/** Fills `path` with `size` random bytes (AES-CTR keystream), first 4 KiB zero (no boot sector). */
function fillRandom (path, size) {
  const fd = openSync(path, 'w')
  const chunk = 16 * MiB
  const zeros = Buffer.alloc(chunk)
  const cipher = createCipheriv('aes-128-ctr', randomBytes(16), randomBytes(16))
  try {
    for (let off = 0; off < size; off += chunk) {
      const buf = cipher.update(zeros)
      if (off === 0) buf.fill(0, 0, 4096)
      let done = 0
      while (done < chunk) done += writeSync(fd, buf, done, chunk - done, off + done)
    }
    fsyncSync(fd)
  } finally { closeSync(fd) }
}

/** Drops the file's pages from the page cache (this file only). */
function dropCache (path) {
  spawnSync('dd', [`if=${path}`, 'iflag=nocache', 'count=0'], { stdio: 'ignore' })
}

// ---------------------------------------------------------------- (A) scan tracker

async function measureScan (path, size, mode) {
  const pool = createWorkerPool({ workers: 2 })
  const tracker = createDirtyTracker({ path, size, unitSize: UNIT, mode }, pool)
  const out = { mode, baseline_bytes: mode === 'shadow' ? size : (size / UNIT) * 32 }
  try {
    let t = performance.now(); let c = cpuNow()
    const first = await tracker.scan({ digest: true, paused: true })
    out.first_scan = { ms: ms(performance.now() - t), cpu_s: cpuNow() - c, dirty: first.dirty.count() }
    if (mode === 'hash') {
      // Hash mode learns what the destination holds when the bytes are loaded for sending.
      t = performance.now(); c = cpuNow()
      const step = 256
      for (let s = 0; s < tracker.units; s += step) await tracker.load([{ start: s, count: Math.min(step, tracker.units - s) }])
      out.load_all = { ms: ms(performance.now() - t), cpu_s: cpuNow() - c }
    }
    const warm = []
    for (let i = 0; i < reps; i++) {
      t = performance.now(); c = cpuNow()
      const r = await tracker.scan({ digest: true, paused: true })
      warm.push({ ms: performance.now() - t, cpu_s: cpuNow() - c, dirty: r.dirty.count() })
    }
    out.steady_warm = warm.map(w => ({ ms: ms(w.ms), cpu_s: w.cpu_s, dirty: w.dirty }))
    out.steady_warm_ms = stats(warm.map(w => w.ms))
    out.steady_warm_cpu_s = stats(warm.map(w => w.cpu_s))
    dropCache(path)
    t = performance.now(); c = cpuNow()
    const cold = await tracker.scan({ digest: true, paused: true })
    out.steady_cold = { ms: ms(performance.now() - t), cpu_s: cpuNow() - c, dirty: cold.dirty.count() }
    out.rss_bytes_after = process.memoryUsage().rss
    if (warm.some(w => w.dirty !== 0) || cold.dirty.count() !== 0) throw new Error(`steady scan reported dirty units on an unchanged file (${mode})`)
  } finally {
    await tracker.close()
    await pool.stop()
  }
  return out
}

// ---------------------------------------------------------------- (B) QEMU dirty bitmaps

async function startQemu (path) {
  const qmpSock = join(work, 'qmp.sock')
  rmSync(qmpSock, { force: true })
  qemu = spawn('qemu-system-x86_64', [
    '-machine', 'pc,accel=tcg', '-m', '128M', '-nodefaults', '-no-user-config', '-display', 'none',
    '-drive', `file=${path},format=raw,if=none,id=cache0,cache=writeback,aio=threads`,
    '-device', 'virtio-blk-pci,drive=cache0',
    '-qmp', `unix:${qmpSock},server=on,wait=off`
  ], { stdio: ['ignore', 'pipe', 'pipe'] })
  const proc = qemu
  const io = { wrote: 0, errors: [] }
  // HMP qemu-io prints to QEMU's stdout: count the writes it reports, keep anything else.
  let tail = ''
  proc.stdout.setEncoding('utf8')
  proc.stdout.on('data', (s) => {
    tail += s
    const lines = tail.split('\n'); tail = lines.pop()
    for (const l of lines) {
      if (l.startsWith('wrote ')) io.wrote++
      else if (!/^\d+(\.\d+)? [KMG]?i?B, \d+ ops/.test(l) && l.trim() !== '') io.errors.push(l)
    }
  })
  proc.stderr.setEncoding('utf8')
  proc.stderr.on('data', (s) => { io.errors.push(s.trim()) })
  const qmp = await QmpClient.connect(qmpSock, { commandTimeoutMs: 120000 })
  return { qmp, proc, io }
}

async function stopQemu ({ qmp, proc }) {
  const exited = new Promise(resolve => { if (proc.exitCode != null || proc.signalCode != null) resolve(); else proc.once('exit', resolve) })
  try { await qmp.execute('quit') } catch {}
  qmp.close()
  const t = setTimeout(() => proc.kill('SIGKILL'), 5000)
  await exited
  clearTimeout(t)
  qemu = undefined
}

/** Runs `qemu-img map` on the NBD export through /usr/bin/time; returns extents and CPU seconds. */
function imgMap (sock, exportName, bitmap) {
  const r = spawnSync('/usr/bin/time', ['-f', 'CPU %U %S', 'qemu-img', 'map', '--output=json', '--image-opts',
    `driver=nbd,server.type=unix,server.path=${sock},export=${exportName},x-dirty-bitmap=qemu:dirty-bitmap:${bitmap}`],
  { encoding: 'utf8', maxBuffer: 256 * MiB })
  const m = /CPU ([\d.]+) ([\d.]+)\s*$/.exec(r.stderr)
  if (r.status !== 0) throw new Error(`qemu-img map failed: ${r.stderr}`)
  return { extents: JSON.parse(r.stdout), cpu_s: m != null ? Number(m[1]) + Number(m[2]) : NaN }
}

/** Dirty blocks from x-dirty-bitmap extents: dirty extents are reported as "data": false. */
function dirtyBlocks (extents) {
  const out = []
  let covered = 0
  for (const e of extents) {
    if (e.start !== covered) throw new Error(`map extents not contiguous at ${e.start}`)
    covered = e.start + e.length
    if (e.data === false) {
      if (e.start % UNIT !== 0 || e.length % UNIT !== 0) throw new Error(`dirty extent not block aligned: ${JSON.stringify(e)}`)
      for (let u = e.start / UNIT; u < (e.start + e.length) / UNIT; u++) out.push(u)
    }
  }
  return { blocks: out, covered, dirtyExtents: extents.filter(e => e.data === false).length }
}

function compare (got, want) {
  const g = new Set(got); const w = new Set(want)
  const missed = want.filter(u => !g.has(u))
  const extra = got.filter(u => !w.has(u))
  return { missed: missed.length, extra: extra.length, missedSample: missed.slice(0, 5), extraSample: extra.slice(0, 5) }
}

/** Writes the blocks through QEMU's block layer (HMP qemu-io on the drive), pipelined. */
async function writeBlocks (vm, blocks, pattern, small, rnd) {
  const before = vm.io.wrote
  const cmds = blocks.map(u => small
    ? `qemu-io cache0 "write -P ${pattern} ${u * UNIT + Math.floor(rnd() * (UNIT / 4096)) * 4096} 4k"`
    : `qemu-io cache0 "write -P ${pattern} ${u * UNIT} 256k"`)
  for (let i = 0; i < cmds.length; i += 256) {
    await Promise.all(cmds.slice(i, i + 256).map(c => vm.qmp.execute('human-monitor-command', { 'command-line': c })))
  }
  // Let QEMU's stdout reach us before counting.
  for (let k = 0; k < 100 && vm.io.wrote - before < blocks.length; k++) await new Promise(resolve => setTimeout(resolve, 10))
  if (vm.io.wrote - before !== blocks.length) throw new Error(`qemu-io reported ${vm.io.wrote - before} writes of ${blocks.length}: ${vm.io.errors.slice(-3).join(' | ')}`)
}

async function measureBitmap (path, size) {
  const units = size / UNIT
  const vm = await startQemu(path)
  const out = { qemu: vm.qmp.version }
  const rnd = mulberry32(0x5eed ^ units)
  try {
    const { qmp, proc } = vm
    const blk = await qmp.execute('query-block')
    const node = blk.find(b => b.device === 'cache0')?.inserted?.['node-name']
    if (node == null) throw new Error('cache0 has no node name')
    out.node_name = node
    const nbdSock = join(work, 'nbd.sock')
    // QEMU's vCPU (sitting in the BIOS under TCG) burns some CPU by itself: measure it.
    let c0 = procCpu(proc.pid); await new Promise(resolve => setTimeout(resolve, 2000))
    out.qemu_idle_cpu_per_s = (procCpu(proc.pid) - c0) / 2
    let t = performance.now()
    await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: nbdSock } } })
    out.nbd_server_start_ms = ms(performance.now() - t)
    await qmp.execute('block-dirty-bitmap-add', { node: 'cache0', name: 'b0', granularity: UNIT })
    const deleted = new Set()
    qmp.onEvent(e => { if (e.event === 'BLOCK_EXPORT_DELETED') deleted.add(e.data?.id) })
    let k = 0

    /** One round: returns the dirty blocks of bitmap b<k> and the time of each step. */
    const round = async (between) => {
      const cur = `b${k}`; const next = `b${k + 1}`; const exp = `e${k}`
      const q0 = procCpu(proc.pid)
      const t0 = performance.now()
      await qmp.execute('transaction', {
        actions: [
          { type: 'block-dirty-bitmap-add', data: { node: 'cache0', name: next, granularity: UNIT } },
          { type: 'block-dirty-bitmap-disable', data: { node: 'cache0', name: cur } }
        ]
      })
      const t1 = performance.now()
      if (between != null) await between()
      const t1b = performance.now()
      await qmp.execute('block-export-add', { type: 'nbd', id: exp, 'node-name': node, name: exp, writable: false, bitmaps: [cur] })
      const t2 = performance.now()
      const map = imgMap(nbdSock, exp, cur)
      const t3 = performance.now()
      await qmp.execute('block-export-del', { id: exp })
      for (let i = 0; i < 500 && !deleted.has(exp); i++) await new Promise(resolve => setTimeout(resolve, 2))
      if (!deleted.has(exp)) throw new Error(`export ${exp} not deleted`)
      const t4 = performance.now()
      await qmp.execute('block-dirty-bitmap-remove', { node: 'cache0', name: cur })
      const t5 = performance.now()
      k++
      const d = dirtyBlocks(map.extents)
      if (d.covered !== size) throw new Error(`map covered ${d.covered} of ${size} bytes`)
      return {
        blocks: d.blocks,
        extents: map.extents.length,
        dirty_extents: d.dirtyExtents,
        ms: t5 - t0 - (t1b - t1),
        steps_ms: { transaction: ms(t1 - t0), export_add: ms(t2 - t1b), qemu_img_map: ms(t3 - t2), export_del: ms(t4 - t3), bitmap_remove: ms(t5 - t4) },
        qemu_img_cpu_s: map.cpu_s,
        qemu_cpu_s: procCpu(proc.pid) - q0
      }
    }

    // Warm-up round (not counted): the bitmap was just added, nothing written.
    const w = await round()
    if (w.blocks.length !== 0) throw new Error(`warm-up round reported ${w.blocks.length} dirty blocks`)

    const counts = [0, 100, Math.min(many, Math.floor(units / 2))]
    out.cases = []
    let allExact = true
    for (const n of counts) {
      const runs = []
      for (let r = 0; r < reps; r++) {
        const blocks = pickBlocks(units, n, rnd)
        const small = n <= 100 && n > 0 // the 100-block case writes 4 KiB somewhere inside each block
        const tw = performance.now()
        await writeBlocks(vm, blocks, `0x${(0x11 + r + n % 200).toString(16)}`, small, rnd)
        const writeMs = performance.now() - tw
        const res = await round()
        const cmp = compare(res.blocks, blocks)
        if (cmp.missed !== 0 || cmp.extra !== 0) allExact = false
        runs.push({ ...res, blocks: undefined, written: n, write_kib: small ? 4 : 256, write_ms: ms(writeMs), reported: res.blocks.length, ...cmp, ms: ms(res.ms) })
        log(`  bitmap ${label(size)} n=${n} rep ${r + 1}: ${ms(res.ms)} ms (${JSON.stringify(res.steps_ms)}), reported ${res.blocks.length}, missed ${cmp.missed}, extra ${cmp.extra}`)
      }
      out.cases.push({
        dirty_blocks: n,
        runs,
        ms: stats(runs.map(x => x.ms)),
        qemu_img_cpu_s: stats(runs.map(x => x.qemu_img_cpu_s)),
        qemu_cpu_s: stats(runs.map(x => x.qemu_cpu_s))
      })
    }

    // Hand-over check: a write landing right after the transaction must be missing from the
    // bitmap being read and present in the next one (nothing lost, nothing counted twice).
    const before = pickBlocks(units, 50, rnd)
    const after = pickBlocks(units, 50, rnd)
    await writeBlocks(vm, before, '0x77', false, rnd)
    const h1 = await round(async () => { await writeBlocks(vm, after, '0x78', false, rnd) })
    const h2 = await round()
    out.handover = { first: compare(h1.blocks, before), second: compare(h2.blocks, after) }
    if (out.handover.first.missed + out.handover.first.extra + out.handover.second.missed + out.handover.second.extra !== 0) allExact = false
    out.all_rounds_exact = allExact
    await qmp.execute('block-dirty-bitmap-remove', { node: 'cache0', name: `b${k}` })
    await qmp.execute('nbd-server-stop')
    out.qemu_messages = vm.io.errors.slice(0, 10)
  } finally {
    await stopQemu(vm)
  }
  return out
}

// ---------------------------------------------------------------- main

const results = { unit_bytes: UNIT, reps, machine: { cores: 2, note: 'Debian 12, QEMU 7.2 TCG, disks on the local disk under /tmp' }, sizes: [] }
const rows = []
try {
  for (const size of sizes) {
    const path = join(work, `cache-${label(size)}.raw`)
    const entry = { size_bytes: size, label: label(size) }
    results.sizes.push(entry)
    log(`filling ${label(size)} with random bytes`)
    let t = performance.now()
    fillRandom(path, size)
    entry.fill_ms = ms(performance.now() - t)
    log(`filled in ${(entry.fill_ms / 1000).toFixed(1)} s`)

    const modes = size <= 2 * GiB ? ['shadow', 'hash'] : ['hash']
    entry.scan = {}
    for (const mode of modes) {
      log(`scan ${label(size)} ${mode}`)
      const s = await measureScan(path, size, mode)
      entry.scan[mode] = s
      log(`  first ${s.first_scan.ms} ms, steady ${ms(s.steady_warm_ms.median)} ms (warm), ${s.steady_cold.ms} ms (cold)`)
      const node = (size <= 2 * GiB ? 'shadow' : 'hash') === mode ? ' (node default)' : ''
      rows.push({ size: label(size), method: `scan ${mode}${node}`, dirty: 0, case: 'steady, warm cache', median_ms: ms(s.steady_warm_ms.median), 'min-max': `${ms(s.steady_warm_ms.min)}-${ms(s.steady_warm_ms.max)}`, cpu_s: s.steady_warm_cpu_s.median.toFixed(2), ram: `${(s.baseline_bytes / MiB).toFixed(s.baseline_bytes < MiB ? 2 : 0)} MiB` })
      rows.push({ size: label(size), method: `scan ${mode}${node}`, dirty: 0, case: 'steady, cold cache (1 run)', median_ms: s.steady_cold.ms, 'min-max': '', cpu_s: s.steady_cold.cpu_s.toFixed(2), ram: '' })
      rows.push({ size: label(size), method: `scan ${mode}${node}`, dirty: 'all', case: 'first scan (1 run)', median_ms: s.first_scan.ms, 'min-max': '', cpu_s: s.first_scan.cpu_s.toFixed(2), ram: '' })
    }

    log(`bitmap ${label(size)}: QEMU on the disk`)
    entry.bitmap = await measureBitmap(path, size)
    for (const c of entry.bitmap.cases) {
      rows.push({ size: label(size), method: 'QEMU dirty bitmap', dirty: c.dirty_blocks, case: `round, ${c.runs.every(r => r.missed === 0 && r.extra === 0) ? 'exact' : 'MISMATCH'}`, median_ms: ms(c.ms.median), 'min-max': `${ms(c.ms.min)}-${ms(c.ms.max)}`, cpu_s: `${c.qemu_img_cpu_s.median.toFixed(2)} + ${c.qemu_cpu_s.median.toFixed(2)}`, ram: '' })
    }
    rmSync(path, { force: true })
  }

  results.scan_round_ms = Object.fromEntries(results.sizes.map(e => {
    const mode = e.size_bytes <= 2 * GiB ? 'shadow' : 'hash'
    return [e.label, { mode, warm: ms(e.scan[mode].steady_warm_ms.median), cold: e.scan[mode].steady_cold.ms, cpu_s: e.scan[mode].steady_warm_cpu_s.median, ram_bytes: e.scan[mode].baseline_bytes }]
  }))
  results.bitmap_round_ms = Object.fromEntries(results.sizes.map(e => [e.label, Object.fromEntries(e.bitmap.cases.map(c => [String(c.dirty_blocks), ms(c.ms.median)]))]))
  results.bitmap_exact = results.sizes.every(e => e.bitmap.all_rounds_exact)
  results.total_s = Math.round((performance.now() - started) / 1000)

  console.log()
  printTable(rows)
  console.log('\nCPU-s: scan = whole process (main + 2 workers); bitmap = qemu-img + QEMU process (QEMU includes its idle TCG vCPU:',
    results.sizes.map(e => `${e.label} ${e.bitmap.qemu_idle_cpu_per_s.toFixed(2)} CPU-s/s`).join(', ') + ')')
  console.log('bitmap reads exact (every written block reported, no others, hand-over ok):', results.bitmap_exact)
  writeResults('qemu-disk-tracker', results)
} finally {
  clearTimeout(watchdog)
  cleanup()
}
