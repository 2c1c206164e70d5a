// `pnpm bench multisource`: on a network-namespace cluster (host 1 = destination, hosts 2..4 =
// replicas, one NIC each, every host's egress shaped to 200 Mbit/s, so each replica's uplink is
// 200 Mbit/s and the destination's downlink is unshaped), a 1 GiB volume of random (cold) blocks
// held by R = 1, 2, 3 replicas is pulled by the destination with `POST /volumes/pull` (multi-source,
// hash-verified). In the same run aria2c, in the destination's namespace, downloads the same bytes
// from the same R hosts over HTTP as one segmented multi-mirror download (each replica serves the
// volume file with bench/lib/range-server.js). iperf3 measures each replica's uplink in parallel.
// Reports, does not assert, the targets: efficiency (Shoal / summed nominal uplinks) >= 0.9 at
// R = 3 and Shoal >= aria2 at every R. Needs root; installs aria2 and iperf3 if missing.
//
// Env: SHOAL_BENCH_BYTES (1 GiB), SHOAL_BENCH_REPLICAS ('1,2,3'), SHOAL_BENCH_RATE_MBIT ('200,1000':
// each replica's uplink; every R runs at each rate, each case records its uplink_mbit),
// SHOAL_BENCH_REPS (3, medians; the bench takes ~9 min with 3, ~3.5 min with 1),
// SHOAL_BENCH_BLOCK (volume block size in bytes; default: the node's), SHOAL_BENCH_IPERF (0 skips
// iperf3), SHOAL_BENCH_SKIP_SHOAL / SHOAL_BENCH_SKIP_ARIA2 (=1 skips that half), and for trying
// aria2 settings: SHOAL_BENCH_ARIA2_PER_SERVER (2), SHOAL_BENCH_ARIA2_MIN_SPLIT ('1M'),
// SHOAL_BENCH_ARIA2_SELECTOR ('inorder').
import { spawn, spawnSync } from 'node:child_process'
import { createHash, randomFillSync } from 'node:crypto'
import { closeSync, createReadStream, mkdirSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { call } from '@shoal/cli'
import { printTable, stats, writeResults } from './lib/harness.js'
import { clusterUp, cpuSeconds, ensureTool, iperfFanIn } from './lib/netns.js'

const GiB = 2 ** 30
const MiB = 2 ** 20
const size = Number(process.env.SHOAL_BENCH_BYTES ?? GiB)
const replicaCases = (process.env.SHOAL_BENCH_REPLICAS ?? '1,2,3').split(',').map(Number)
// Every replica's uplink, per case: '200,1000' runs each R at 200 Mbit/s and again at 1 Gbit/s.
const rates = (process.env.SHOAL_BENCH_RATE_MBIT ?? '200,1000').split(',').map(Number)
if (rates.some(r => !(r > 0))) { console.error('SHOAL_BENCH_RATE_MBIT: positive Mbit/s, comma-separated'); process.exit(2) }
/** The uplink rate of the cluster that is up now (the cases loop over `rates`). */
let rateMbit = rates[0]
const reps = Number(process.env.SHOAL_BENCH_REPS ?? 3)
const blockSize = process.env.SHOAL_BENCH_BLOCK != null ? Number(process.env.SHOAL_BENCH_BLOCK) : undefined
const doIperf = process.env.SHOAL_BENCH_IPERF !== '0'
const skipShoal = process.env.SHOAL_BENCH_SKIP_SHOAL === '1'
const skipAria2 = process.env.SHOAL_BENCH_SKIP_ARIA2 === '1'
const maxR = Math.max(...replicaCases)

const PREFIX = 'sbm'
const DEST = 1
const replicaHost = (i) => i + 2 // replica i (0-based) is host i + 2
const ip = (h) => `198.18.1.${h}`
const HTTP_PORT = 8080
const volFile = `/dev/shm/${PREFIX}-vol.bin`
const ariaDir = `/dev/shm/${PREFIX}-aria`
const RANGE_SERVER = fileURLToPath(new URL('./lib/range-server.js', import.meta.url))

// aria2c: one invocation with the R mirror URLs of one file, so aria2 splits it across all of them.
// --split is the total number of connections for the file and --max-connection-per-server caps
// each mirror; split = R x perServer with --uri-selector=inorder fills every mirror up to its cap.
// Tried at R = 3 with 1 GiB (MB/s, summed nominal uplinks 75, iperf3 ~71.8): per-server 1/2/4/8
// connections with --min-split-size 1M: 71.5/71.4/71.4, with 8M: 71.0/70-71/70.3/70.9, 20M: 68.6;
// uri-selector feedback 67.9, adaptive 70.2 (vs inorder 70.3 at 4 x 8M). Everything within ~1 MB/s
// of the link: aria2 is link-bound here. Chosen: 2 connections per mirror (one can start its
// next segment while the other still fills the tbf queue) and 1M segments, aria2's minimum, which
// was consistently a little ahead (finer pieces even out the tail; the default 20M was slowest).
// With it aria2 reached 23.9 / 47.7 / 71.4 MB/s at R = 1 / 2 / 3, ~99.5% of iperf3 on the links.
const perServer = Number(process.env.SHOAL_BENCH_ARIA2_PER_SERVER ?? 2)
const minSplit = process.env.SHOAL_BENCH_ARIA2_MIN_SPLIT ?? '1M'
const aria2Options = (r) => [
  `--split=${typeof r === 'number' ? r * perServer : `R*${perServer}`}`,
  `--max-connection-per-server=${perServer}`,
  `--min-split-size=${minSplit}`,
  `--uri-selector=${process.env.SHOAL_BENCH_ARIA2_SELECTOR ?? 'inorder'}`,
  '--file-allocation=none',
  '--allow-overwrite=true',
  '--auto-file-renaming=false',
  '--no-conf=true',
  '--disable-ipv6=true',
  '--max-tries=3',
  '--retry-wait=1',
  '--connect-timeout=5',
  '--timeout=30',
  '--summary-interval=0',
  '--show-console-readout=false',
  '--download-result=hide',
  '--console-log-level=warn'
]

if (process.getuid?.() !== 0) { console.error('bench multisource needs root (network namespaces)'); process.exit(2) }
if (maxR < 1 || replicaCases.some(r => !Number.isInteger(r) || r < 1 || r > 8)) { console.error('SHOAL_BENCH_REPLICAS: replica counts 1..8'); process.exit(2) }
if (!skipAria2) ensureTool('aria2c', 'aria2')
if (doIperf) ensureTool('iperf3')

// Everything this benchmark starts or creates is undone on exit, also on failure and on Ctrl-C
// (the cluster's own `down` is registered by clusterUp and kills whatever is left in its namespaces).
const children = new Set()
const cleanup = () => {
  for (const ch of children) if (ch.exitCode == null && ch.signalCode == null) ch.kill('SIGKILL')
  children.clear()
  rmSync(volFile, { force: true })
  rmSync(ariaDir, { recursive: true, force: true })
}
process.on('exit', cleanup)
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.once(sig, () => process.exit(130))

/** Spawns a child that is killed at exit; resolves its exit. */
function track (child) {
  children.add(child)
  child.on('exit', () => children.delete(child))
  return child
}

function withTimeout (promise, ms, what) {
  let t
  return Promise.race([promise, new Promise((_resolve, reject) => { t = setTimeout(() => reject(new Error(`${what} took longer than ${ms / 1000} s`)), ms) })]).finally(() => clearTimeout(t))
}

function createVolumeFile () {
  const fd = openSync(volFile, 'w')
  const hash = createHash('sha256')
  const buf = Buffer.allocUnsafe(64 * MiB)
  try {
    for (let off = 0; off < size; off += buf.length) {
      const n = Math.min(buf.length, size - off)
      randomFillSync(buf, 0, n)
      writeSync(fd, buf, 0, n)
      hash.update(buf.subarray(0, n))
    }
  } finally { closeSync(fd) }
  return hash.digest('hex')
}

/** Busy and total CPU jiffies of the whole machine (all cores), from /proc/stat. */
function machineCpu () {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
  const idle = f[3] + f[4] // idle + iowait
  const total = f.reduce((a, b) => a + b, 0)
  return { busy: total - idle, total }
}

async function sha256File (path) {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MiB })) hash.update(chunk)
  return hash.digest('hex')
}

/** Starts range-server.js in host h's namespace on ip(h):HTTP_PORT; resolves once it listens. */
async function startRangeServer (c, h) {
  const child = track(spawn('ip', ['netns', 'exec', c.ns(h), process.execPath, RANGE_SERVER, '--file', volFile, '--host', ip(h), '--port', String(HTTP_PORT), '--path', '/vol'], { stdio: ['pipe', 'pipe', 'inherit'] }))
  await withTimeout(new Promise((resolve, reject) => {
    let out = ''
    child.stdout.on('data', d => { out += d; if (out.includes('listening')) resolve() })
    child.on('exit', code => reject(new Error(`range server on host ${h} exited ${code}`)))
  }), 10_000, `range server on host ${h}`)
  return child
}

/** One aria2c download of the volume from the first r replicas; MB/s by wall time. */
async function runAria2 (c, r, sha) {
  rmSync(ariaDir, { recursive: true, force: true })
  mkdirSync(ariaDir, { recursive: true })
  const urls = Array.from({ length: r }, (_, i) => `http://${ip(replicaHost(i))}:${HTTP_PORT}/vol`)
  const args = ['netns', 'exec', c.ns(DEST), 'aria2c', ...aria2Options(r), '-d', ariaDir, '-o', 'vol', ...urls]
  const t0 = performance.now()
  const child = track(spawn('ip', args, { stdio: ['ignore', 'inherit', 'inherit'] }))
  const code = await withTimeout(new Promise(resolve => child.on('exit', (code, sig) => resolve(code ?? sig))), Math.max(120_000, 20 * size / (r * rateMbit * 1e6 / 8) * 1000), 'aria2c')
  const secs = (performance.now() - t0) / 1000
  try {
    if (code !== 0) throw new Error(`aria2c exited ${code}`)
    const got = statSync(`${ariaDir}/vol`).size
    if (got !== size) throw new Error(`aria2c downloaded ${got} bytes, expected ${size}`)
    const digest = await sha256File(`${ariaDir}/vol`)
    if (digest !== sha) throw new Error('aria2c download does not match the volume (sha256)')
  } finally {
    rmSync(ariaDir, { recursive: true, force: true })
  }
  return { MBps: size / secs / 1e6, secs }
}

/** One Shoal pull of volume `id` into the destination from the first r replicas. */
async function runShoal (c, r, id, peerIds, addrs) {
  const from = addrs.slice(0, r)
  const replicaCpu = () => Array.from({ length: r }, (_, i) => cpuSeconds(c.pid(replicaHost(i)))).reduce((a, b) => a + b, 0)
  const cpu0 = cpuSeconds(c.pid(DEST))
  const rcpu0 = replicaCpu()
  const m0 = machineCpu()
  const t0 = performance.now()
  const res = await withTimeout(call(c.socket(DEST), 'POST', '/volumes/pull', { id, from }), Math.max(120_000, 20 * size / (r * rateMbit * 1e6 / 8) * 1000), 'POST /volumes/pull')
  const secs = (performance.now() - t0) / 1000
  const cpu = cpuSeconds(c.pid(DEST)) - cpu0
  const replicasCpu = replicaCpu() - rcpu0
  const m1 = machineCpu()
  // Random blocks: nothing may be deduplicated or left over, every byte must cross the network.
  if (res.bytes !== size || res.leftover !== 0) throw new Error(`pull moved ${res.bytes} bytes, expected ${size}: ${JSON.stringify(res)}`)
  const hostOf = (peer) => { const i = peerIds.indexOf(peer); return i >= 0 ? `h${replicaHost(i)}` : peer }
  const perSource = Object.fromEntries(Object.entries(res.sources ?? {}).map(([p, s]) => [hostOf(p), s.bytes]))
  const corrupt = Object.values(res.sources ?? {}).reduce((a, s) => a + (s.corrupt ?? 0), 0)
  return {
    MBps: res.bytes / (res.ms / 1000) / 1e6, // as the node reports it
    callMBps: size / secs / 1e6, // as seen by this process, HTTP call included
    secs,
    nodeMs: res.ms,
    cpu,
    replicasCpu,
    machineBusy: (m1.busy - m0.busy) / (m1.total - m0.total), // 0..1 of all cores
    perSource,
    corrupt,
    dedupBytes: res.dedupBytes,
    leftover: res.leftover,
    dropped: res.dropped
  }
}

const t00 = performance.now()
const results = []
let c
let volumeBlockSize
try {
  console.log(`volume: ${size} random bytes in ${volFile}`)
  const sha = createVolumeFile()
  // One cluster per uplink rate (tbf is set when the links are made), replicas importing anew.
  for (const rate of rates) {
    rateMbit = rate
    c = clusterUp(PREFIX, ['--hosts', String(1 + maxR), '--nics', '1', '--rate', `${rateMbit}mbit`])
    const peerIds = Array.from({ length: maxR }, (_, i) => c.info(replicaHost(i)).peerId)

    // Replicas import the volume once (hashing it block by block). The destination pulls it and
    // drops it again after each run (DELETE /volumes/<id>) so that the next run pulls from scratch:
    // a pull copies blocks the node already holds in any volume instead of fetching them, so a
    // leftover copy (or the same bytes under a fresh id) would not measure the network at all.
    const volumeId = 'msvol'
    if (!skipShoal) {
      const t = performance.now()
      const infos = await Promise.all(Array.from({ length: maxR }, (_, i) => call(c.socket(replicaHost(i)), 'POST', '/volumes', { id: volumeId, path: volFile, ...(blockSize != null ? { blockSize } : {}) })))
      volumeBlockSize = infos[0].blockSize
      console.log(`${maxR} replicas imported the volume in ${((performance.now() - t) / 1000).toFixed(1)} s (block size ${volumeBlockSize})`)
    }
    // The destination knows the replicas only by peer ID (allow-list), not their addresses: name
    // them by multiaddr in `from`.
    const replicaAddrs = Array.from({ length: maxR }, (_, i) => {
      const h = replicaHost(i)
      const a = c.info(h).addrs.find(a => a.includes(`/${ip(h)}/`))
      if (a == null) throw new Error(`host ${h} has no address on ${ip(h)}`)
      return a.includes('/p2p/') ? a : `${a}/p2p/${peerIds[i]}`
    })

    const servers = []
    if (!skipAria2) for (let i = 0; i < maxR; i++) servers.push(await startRangeServer(c, replicaHost(i)))

    for (const r of replicaCases) {
      const iperf = doIperf ? await iperfFanIn(c.ns(DEST), ip(DEST), Array.from({ length: r }, (_, i) => [c.ns(replicaHost(i)), ip(replicaHost(i))])) : null
      const aria = []
      const shoal = []
      const ariaRun = async (rep) => {
        const a = await runAria2(c, r, sha)
        aria.push(a)
        console.log(JSON.stringify({ replicas: r, rep, tool: 'aria2c', MBps: +a.MBps.toFixed(1), secs: +a.secs.toFixed(1) }))
      }
      const shoalRun = async (rep) => {
        const s = await runShoal(c, r, volumeId, peerIds, replicaAddrs)
        shoal.push(s)
        console.log(JSON.stringify({ replicas: r, rep, tool: 'shoal', MBps: +s.MBps.toFixed(1), call_MBps: +s.callMBps.toFixed(1), secs: +s.secs.toFixed(1), cpu_s: +s.cpu.toFixed(1), replicas_cpu_s: +s.replicasCpu.toFixed(1), machine_busy: +s.machineBusy.toFixed(2), bytes_per_source: s.perSource, corrupt: s.corrupt, leftover: s.leftover, dropped: s.dropped }))
        await call(c.socket(DEST), 'DELETE', `/volumes/${encodeURIComponent(volumeId)}`)
      }
      for (let rep = 0; rep < reps; rep++) {
        // Alternate which tool goes first, so neither always runs right after the other.
        const order = rep % 2 === 0 ? [ariaRun, shoalRun] : [shoalRun, ariaRun]
        for (const run of order) {
          if ((run === ariaRun && skipAria2) || (run === shoalRun && skipShoal)) continue
          await run(rep)
        }
      }
      const nominal = r * rateMbit * 1e6 / 8 / 1e6
      const med = (xs) => xs.length > 0 ? stats(xs).median : null
      const fix = (v, d = 1) => v == null ? null : +v.toFixed(d)
      const shoalMBps = med(shoal.map(s => s.MBps))
      const ariaMBps = med(aria.map(a => a.MBps))
      // Per-source bytes and CPU of the run closest to the median.
      const mid = shoal.length > 0 ? shoal.reduce((b, s) => Math.abs(s.MBps - shoalMBps) < Math.abs(b.MBps - shoalMBps) ? s : b) : null
      results.push({
        replicas: r,
        rate_mbit: rateMbit,
        uplink_mbit: rateMbit,
        shoal_MBps: fix(shoalMBps),
        aria2_MBps: fix(ariaMBps),
        sum_uplinks_MBps: fix(nominal),
        efficiency: shoalMBps == null ? null : fix(shoalMBps / nominal, 3),
        aria2_efficiency: ariaMBps == null ? null : fix(ariaMBps / nominal, 3),
        shoal_vs_aria2: shoalMBps == null || ariaMBps == null ? null : fix(shoalMBps / ariaMBps, 3),
        iperf_MBps: iperf == null ? null : fix(iperf.reduce((a, b) => a + b, 0)),
        shoal_call_MBps: fix(med(shoal.map(s => s.callMBps))),
        shoal_s: fix(med(shoal.map(s => s.secs))),
        aria2_s: fix(med(aria.map(a => a.secs))),
        dest_cpu_s: mid == null ? null : fix(mid.cpu, 2),
        dest_cpu_s_per_GiB: mid == null ? null : fix(mid.cpu / (size / GiB), 2),
        replicas_cpu_s: mid == null ? null : fix(mid.replicasCpu, 2),
        machine_cpu_busy: mid == null ? null : fix(mid.machineBusy, 2),
        bytes_per_source: mid?.perSource ?? null,
        corrupt_blocks: mid?.corrupt ?? null,
        leftover: mid?.leftover ?? null,
        dropped: mid?.dropped ?? null,
        iperf_per_replica_MBps: iperf?.map(x => fix(x)) ?? null,
        runs: { shoal: shoal.map(s => fix(s.MBps)), aria2: aria.map(a => fix(a.MBps)) }
      })
    }
    for (const s of servers) s.kill('SIGTERM')
    c.down()
    c = undefined
  }

  const share = (m) => m == null ? '-' : Object.entries(m).map(([h, b]) => `${h}:${(b / MiB).toFixed(0)}M`).join(' ')
  console.log()
  printTable(results.map(r => ({
    uplink_mbit: r.uplink_mbit,
    R: r.replicas,
    shoal_MBps: r.shoal_MBps ?? '-',
    aria2_MBps: r.aria2_MBps ?? '-',
    sum_uplinks_MBps: r.sum_uplinks_MBps,
    iperf_MBps: r.iperf_MBps ?? '-',
    efficiency: r.efficiency ?? '-',
    aria2_eff: r.aria2_efficiency ?? '-',
    shoal_vs_aria2: r.shoal_vs_aria2 ?? '-',
    dest_cpu_s: r.dest_cpu_s ?? '-',
    cpu_busy: r.machine_cpu_busy ?? '-',
    bytes_per_source: share(r.bytes_per_source)
  })))
  for (const last of results.filter(r => r.replicas === 3)) {
    const vsIperf = last.iperf_MBps != null && last.shoal_MBps != null ? +(last.shoal_MBps / last.iperf_MBps).toFixed(3) : null
    last.shoal_vs_iperf = vsIperf
    console.log(`\nuplinks ${last.uplink_mbit} Mbit/s, R = 3: efficiency ${last.efficiency} of nominal (target >= 0.9: ${last.efficiency >= 0.9 ? 'met' : 'NOT met'}), ${vsIperf ?? '-'} of iperf3 (target >= 0.9: ${vsIperf != null && vsIperf >= 0.9 ? 'met' : 'NOT met'})`)
  }
  if (!skipShoal && !skipAria2) {
    const behind = results.filter(r => r.shoal_vs_aria2 < 1).map(r => `${r.replicas} (${((r.shoal_vs_aria2 - 1) * 100).toFixed(1)}%)`)
    console.log(`target Shoal >= aria2 at every R: ${behind.length === 0 ? 'met' : `NOT met at R = ${behind.join(', ')}`}`)
  }
  // Work stealing should give each replica a share in proportion to its uplink (equal uplinks here).
  for (const r of results) {
    if (r.bytes_per_source == null) continue
    const shares = Object.values(r.bytes_per_source).map(b => b / size)
    if (shares.length < r.replicas || Math.min(...shares) < 0.5 / r.replicas) console.log(`uneven split at R = ${r.replicas}: ${share(r.bytes_per_source)} (${shares.length} of ${r.replicas} replicas served)`)
  }
  const totalS = (performance.now() - t00) / 1000
  console.log(`bench took ${totalS.toFixed(0)} s`)
  writeResults('multisource', {
    setup: {
      date: new Date().toISOString(),
      volume_bytes: size,
      block_size: volumeBlockSize ?? blockSize ?? null,
      rate_mbit: rates,
      replicas: replicaCases,
      reps,
      topology: `${1 + maxR} hosts in network namespaces, 1 NIC each on one bridge; host 1 = destination, hosts 2..${1 + maxR} = replicas; tbf on every host's egress only`,
      aria2_version: skipAria2 ? null : spawnSync('aria2c', ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0],
      aria2_options: skipAria2 ? null : aria2Options('R'),
      http_server: 'bench/lib/range-server.js (node:http, single Range requests)',
      rates: 'MB/s = 1e6 bytes/s; shoal_MBps = bytes / ms reported by POST /volumes/pull; aria2_MBps = bytes / wall time of the aria2c process; sum_uplinks_MBps = R x rate/8 (nominal); efficiency = shoal_MBps / sum_uplinks_MBps',
      skipped: [...(skipShoal ? ['shoal'] : []), ...(skipAria2 ? ['aria2'] : [])],
      total_s: +totalS.toFixed(0)
    },
    cases: results
  })
} finally {
  cleanup()
  c?.down()
}
