// `pnpm bench transfer`: migrate a 1 GiB idle image over 1 and 4 lanes on loopback, two real
// processes, with and without data workers (TLS 1.3 by default); MB/s, CPU seconds per GiB on each side, and the ratio to a plain node:net
// TCP stream measured in the same run. Then the same migration again with both peers under
// `--cpu-prof` (every thread, worker_threads included) for the CPU breakdown per side and
// category (lib/cpu-breakdown.js), and the throughput lost to profiling.
//
// SHOAL_BENCH_PROF=0 skips the profiled pass; SHOAL_BENCH_PIN=1 pins the source to core 0 and the
// destination to core 1 (taskset) and writes transfer-pinned.json instead.
// SHOAL_BENCH_DATA_WORKERS ('0,1'): data worker counts to compare, each case with both peers at
// that count (0 = data lanes as libp2p streams on the main thread); the profiled pass uses
// SHOAL_BENCH_PROF_DATA_WORKERS (default: the node's default).
import { execFileSync } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { forkPeer, printTable, resultsDir, stats, tcpBaseline, tempDir, writeResults } from './lib/harness.js'
import { DEFAULT_DATA_WORKERS } from '@shoal/node'
import { breakdownTable, calibratePageFault, CATEGORIES, DATA_WORKER_RULES, MAIN_RULES, sideBreakdown, WORKER_RULES } from './lib/cpu-breakdown.js'

const GiB = 2 ** 30
const size = Number(process.env.SHOAL_BENCH_BYTES ?? GiB)
const reps = Number(process.env.SHOAL_BENCH_REPS ?? 3)
const laneCases = (process.env.SHOAL_BENCH_LANES ?? '1,4').split(',').map(Number)
const profile = process.env.SHOAL_BENCH_PROF !== '0'
const profLanes = Number(process.env.SHOAL_BENCH_PROF_LANES ?? 4)
const profReps = Number(process.env.SHOAL_BENCH_PROF_REPS ?? reps)
const pin = process.env.SHOAL_BENCH_PIN === '1'
const dataWorkerCases = (process.env.SHOAL_BENCH_DATA_WORKERS ?? '0,1').split(',').map(Number)
const profDataWorkers = process.env.SHOAL_BENCH_PROF_DATA_WORKERS != null ? Number(process.env.SHOAL_BENCH_PROF_DATA_WORKERS) : undefined
const profDir = join(resultsDir, 'prof', pin ? 'transfer-pinned' : 'transfer')
// In every peer (and every worker_thread of it): lets /proc threads be matched to profiles.
const importBreakdown = ['--import', pathToFileURL(fileURLToPath(new URL('./lib/cpu-breakdown.js', import.meta.url))).href]

const peers = []
// Every temp dir of every pair registers an exit hook.
process.setMaxListeners(64)
process.on('exit', () => { for (const p of peers) p.kill() })

/** Two peers that allow each other; pinned to cores 0 and 1 with SHOAL_BENCH_PIN=1. */
async function startPair (execArgv, dataWorkers) {
  const src = forkPeer(execArgv)
  const dst = forkPeer(execArgv)
  peers.push(src, dst)
  if (pin) {
    // After a round trip the peer has booted; -a covers its threads so far, later ones inherit.
    await src.rpc('cpuMark'); await dst.rpc('cpuMark')
    execFileSync('taskset', ['-a', '-c', '-p', '0', String(src.child.pid)], { stdio: 'ignore' })
    execFileSync('taskset', ['-a', '-c', '-p', '1', String(dst.child.pid)], { stdio: 'ignore' })
  }
  const dirs = [tempDir('src'), tempDir('src-shm', '/dev/shm'), tempDir('dst'), tempDir('dst-shm', '/dev/shm')]
  const a = await src.rpc('init', { dataDir: dirs[0], shmDir: dirs[1], listen: ['/ip4/127.0.0.1/tcp/0'], dataWorkers })
  const b = await dst.rpc('init', { dataDir: dirs[2], shmDir: dirs[3], listen: ['/ip4/127.0.0.2/tcp/0'], dataWorkers })
  await dst.rpc('allow', { peerId: a.peerId })
  await src.rpc('allow', { peerId: b.peerId })
  return { src, dst, to: b.addrs[0], dirs }
}

/** Stops both peers and waits for their processes to end (profiles are written at exit). */
async function stopPair ({ src, dst, dirs }) {
  const exited = (p) => p.child.exitCode != null ? Promise.resolve() : new Promise(resolve => p.child.once('exit', resolve))
  await Promise.allSettled([src.rpc('stop'), dst.rpc('stop')])
  await Promise.race([Promise.all([exited(src), exited(dst)]), new Promise(resolve => setTimeout(resolve, 30_000).unref())])
  src.kill(); dst.kill()
  // The next pair needs the memory (tempDir also removes them at exit, on failure too).
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
}

/** One migration of a fresh image; MB/s and CPU per GiB on each side, with the raw windows. */
async function migrateOnce ({ src, dst, to }, name, lanes) {
  await src.rpc('createImage', { name, memorySize: size, cacheSize: 0, fill: 'random', config: { rate: 0, recordRate: 0 } })
  await src.rpc('cpuMark'); await dst.rpc('cpuMark')
  const t0 = performance.now()
  const report = await src.rpc('migrate', { name, to, opts: { lanes } })
  const secs = (performance.now() - t0) / 1000
  const [cs, cd] = [await src.rpc('cpu'), await dst.rpc('cpu')]
  if (!report.ok || !report.verified) throw new Error('migration did not verify')
  const gib = report.bytes / GiB
  // Drop the copy on the destination so memory does not fill up.
  await dst.rpc('status')
  return { MBps: report.bytes / secs / 1e6, cs: cs.total / gib, cd: cd.total / gib, sysS: cs.system / gib, sysD: cd.system / gib, secs, gib, src: cs, dst: cd }
}

/** Profiles of one process from --cpu-prof-dir: 'main' (thread 0) and 'worker:<threadId>'. */
function loadProfiles (pid) {
  const out = {}
  for (const f of readdirSync(profDir)) {
    const m = /^CPU\.\d+\.\d+\.(\d+)\.(\d+)\.\d+\.cpuprofile$/.exec(f)
    if (m == null || Number(m[1]) !== pid) continue
    out[m[2] === '0' ? 'main' : `worker:${m[2]}`] = JSON.parse(readFileSync(join(profDir, f), 'utf8'))
  }
  return out
}

const faultCost = calibratePageFault()
const results = []
let output = results
try {
  const tcp = []
  for (let i = 0; i < reps; i++) tcp.push(await tcpBaseline(size))
  const tcpMBps = stats(tcp).median

  for (const dataWorkers of dataWorkerCases) {
    const pair = await startPair(importBreakdown, dataWorkers)
    for (const lanes of laneCases) {
      const runs = []
      for (let i = 0; i < reps; i++) runs.push(await migrateOnce(pair, `img-${dataWorkers}-${lanes}-${i}`, lanes))
      const m = stats(runs.map(r => r.MBps))
      results.push({
        data_workers: dataWorkers,
        lanes,
        MBps: +m.median.toFixed(1),
        MBps_min: +m.min.toFixed(1),
        MBps_max: +m.max.toFixed(1),
        cpu_s_per_GiB_source: +stats(runs.map(r => r.cs)).median.toFixed(2),
        cpu_s_per_GiB_dest: +stats(runs.map(r => r.cd)).median.toFixed(2),
        sys_s_per_GiB_source: +stats(runs.map(r => r.sysS)).median.toFixed(2),
        sys_s_per_GiB_dest: +stats(runs.map(r => r.sysD)).median.toFixed(2),
        tcp_baseline_MBps: +tcpMBps.toFixed(1),
        ratio_to_tcp: +(m.median / tcpMBps).toFixed(3),
        runs: reps,
        // In order: the first run of a node pair makes fresh shadows, later ones reuse them.
        per_run: runs.map(r => ({ MBps: +r.MBps.toFixed(1), cpu_s_per_GiB_source: +r.cs.toFixed(2), cpu_s_per_GiB_dest: +r.cd.toFixed(2), sys_s_per_GiB_source: +r.sysS.toFixed(2), sys_s_per_GiB_dest: +r.sysD.toFixed(2) })),
        ...(pin ? { pinned: 'source core 0, destination core 1' } : {})
      })
    }
    await stopPair(pair)
  }
  printTable(results.map(({ per_run: _, ...r }) => r))
  for (const r of results) console.log(`data workers ${r.data_workers}, ${r.lanes} lanes, per run (MB/s, CPU-s/GiB src+dst, of which kernel): ${r.per_run.map(x => `${x.MBps} ${x.cpu_s_per_GiB_source}+${x.cpu_s_per_GiB_dest} (${x.sys_s_per_GiB_source}+${x.sys_s_per_GiB_dest})`).join(' | ')}`)

  if (profile) {
    rmSync(profDir, { recursive: true, force: true })
    mkdirSync(profDir, { recursive: true })
    const ppair = await startPair([...importBreakdown, '--cpu-prof', `--cpu-prof-dir=${profDir}`], profDataWorkers)
    const pids = { src: ppair.src.child.pid, dst: ppair.dst.child.pid }
    const runs = []
    for (let i = 0; i < profReps; i++) runs.push(await migrateOnce(ppair, `img-prof-${profLanes}-${i}`, profLanes))
    await stopPair(ppair)

    const gib = runs.reduce((s, r) => s + r.gib, 0)
    const side = (k) => sideBreakdown(runs.map(r => r[k].window), loadProfiles(pids[k]), faultCost.s_per_fault)
    const s = side('src')
    const d = side('dst')
    const rows = breakdownTable(s, d, gib)
    const m = stats(runs.map(r => r.MBps))
    const plain = results.find(r => r.lanes === profLanes && r.data_workers === (profDataWorkers ?? DEFAULT_DATA_WORKERS))
    const acct = (x) => ({
      user_s_per_GiB: +(x.acct.user_s / gib).toFixed(3),
      system_s_per_GiB: +(x.acct.system_s / gib).toFixed(3),
      minflt_per_GiB: Math.round(x.acct.minflt / gib),
      majflt_per_GiB: Math.round(x.acct.majflt / gib),
      page_fault_est_s_per_GiB: +(x.pageFault_s / gib).toFixed(3),
      profiled_threads_cpu_s_per_GiB: +(x.acct.profiled_cpu_s / gib).toFixed(3),
      profiled_threads_samples_s_per_GiB: +(x.acct.profiled_busy_s / gib).toFixed(3),
      threadpool_s_per_GiB: +(x.acct.threadpool_s / gib).toFixed(3),
      v8_platform_s_per_GiB: +(x.acct.v8_platform_s / gib).toFixed(3),
      profiler_threads_s_per_GiB: +(x.acct.profiler_s / gib).toFixed(3),
      unknown_threads_s_per_GiB: +(x.acct.unknown_threads_s / gib).toFixed(3),
      by_thread_s_per_GiB: Object.fromEntries(Object.entries(x.threads).map(([k, v]) => [k.replace(/_s$/, ''), +(v / gib).toFixed(3)]))
    })
    const breakdown = {
      lanes: profLanes,
      data_workers: profDataWorkers ?? DEFAULT_DATA_WORKERS,
      runs: profReps,
      GiB: +gib.toFixed(3),
      command: `SHOAL_BENCH_PROF_LANES=${profLanes} SHOAL_BENCH_PROF_REPS=${profReps}${pin ? ' SHOAL_BENCH_PIN=1' : ''} pnpm bench transfer`,
      MBps_profiled: +m.median.toFixed(1),
      MBps_profiled_min: +m.min.toFixed(1),
      MBps_profiled_max: +m.max.toFixed(1),
      MBps_unprofiled: plain?.MBps ?? null,
      profiling_throughput_loss_pct: plain != null ? +(100 * (1 - m.median / plain.MBps)).toFixed(1) : null,
      cpu_s_per_GiB_source_profiled: +stats(runs.map(r => r.cs)).median.toFixed(2),
      cpu_s_per_GiB_dest_profiled: +stats(runs.map(r => r.cd)).median.toFixed(2),
      table: rows,
      sides: { source: acct(s), destination: acct(d) },
      page_fault_calibration: { us_per_fault: +(faultCost.s_per_fault * 1e6).toFixed(3), faults: faultCost.faults },
      profiles: `bench/results/prof/${pin ? 'transfer-pinned' : 'transfer'}/ (CPU.<date>.<time>.<pid>.<threadId>.<seq>.cpuprofile; source pid ${pids.src}, destination pid ${pids.dst})`,
      categories: Object.fromEntries(CATEGORIES),
      rules: {
        main_thread: MAIN_RULES.map(([c, what]) => `${c}: ${what}`),
        worker_threads: WORKER_RULES.map(([c, what]) => `${c}: ${what}`),
        data_workers: DATA_WORKER_RULES.map(([c, what]) => `${c}: ${what}`),
        unprofiled_threads: ['libuv threadpool -> file_io', 'V8 platform threads -> gc', 'v8:ProfEvntProc -> profiler', 'main-thread CPU the profile did not see -> event_loop']
      }
    }
    console.log(`\nCPU breakdown, ${profLanes} lanes, ${profReps} profiled run(s), ${gib.toFixed(2)} GiB; profiled ${breakdown.MBps_profiled} MB/s vs unprofiled ${breakdown.MBps_unprofiled} MB/s (${breakdown.profiling_throughput_loss_pct}% lost to profiling)\n`)
    printTable(rows)
    // What stays serial (the main thread) against what runs on workers: the scaling model's inputs.
    const threadRows = Object.keys(s.threads).map(k => ({ thread: k.replace(/_s$/, '').replace(/_/g, ' '), source_cpu_s_per_GiB: +(s.threads[k] / gib).toFixed(3), dest_cpu_s_per_GiB: +(d.threads[k] / gib).toFixed(3) }))
    console.log('\nCPU by thread kind (per GiB)\n')
    printTable(threadRows)
    breakdown.by_thread = threadRows
    if (plain != null) plain.breakdown = breakdown
    else output = [...results, { lanes: profLanes, breakdown }]
  }
  writeResults(pin ? 'transfer-pinned' : 'transfer', output)
} finally {
  for (const p of peers) p.kill()
}
