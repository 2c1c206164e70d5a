// `pnpm bench interference`: how much does a migration slow the workload it moves? On a
// network-namespace cluster (2 hosts x 4 NICs, each NIC's egress shaped to 200 Mbit/s; both
// hosts, their nodes and the workload share this machine's cores), a 1 GiB memory image with the
// cooperative tracker and a synthetic workload writing 2000 pages/s runs on host 1. Its ops file
// (rewritten every second: page writes in the last second and the p99 latency of a page write —
// its syscall plus how late its tick of the rate loop ran, so CPU contention shows) is sampled
// every second:
//   - baseline: ~5 s before the migration starts;
//   - during: while the migration runs on the source (progress phase `precopy`, before the
//     switchover), skipping the first second (a sample covers the second before it).
// Runs: one unbudgeted migration (adaptivePacing off, no caps), then for each budget a new image
// and a budgeted migration (maxRate, scanCpuShare, adaptivePacing on).
// ops/s of a window = mean of the per-second opsPerSec samples; p99 of a window = mean of the
// per-second p99 samples (their max is reported too). The target (reported, not asserted): the
// workload keeps >= 95% of its baseline ops/s during a budgeted migration.
//
// The same runs are repeated with a CPU-hungrier workload (SHOAL_BENCH_STRESS_RATE, default 40000
// pages/s, 0 = skip), reported under `stress`.
// Env: SHOAL_BENCH_BUDGETS ("maxRate:scanCpuShare,..."; default "50000000:0.5,25000000:0.25"),
// SHOAL_BENCH_WORKLOAD_RATE (default 2000), SHOAL_BENCH_BYTES (default 1 GiB).
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { call } from '@shoal/cli'
import { printTable, writeResults } from './lib/harness.js'
import { clusterUp, cpuSeconds } from './lib/netns.js'

const GiB = 2 ** 30
const size = Number(process.env.SHOAL_BENCH_BYTES ?? GiB)
const rateMbit = Number(process.env.SHOAL_BENCH_RATE_MBIT ?? 200)
const workloadRate = Number(process.env.SHOAL_BENCH_WORKLOAD_RATE ?? 2000)
// A second, CPU-hungrier workload rate run the same way (0 = skip): at 2000 pages/s the write
// loop needs little CPU and absorbs scheduling delays (it catches up one missed tick, 10 ms).
const stressRate = Number(process.env.SHOAL_BENCH_STRESS_RATE ?? 40000)
const budgets = (process.env.SHOAL_BENCH_BUDGETS ?? '50000000:0.5,25000000:0.25').split(',').map(s => {
  const [maxRate, scanCpuShare] = s.split(':').map(Number)
  return { maxRate, scanCpuShare, adaptivePacing: true }
})
const NICS = 4
const LANES = 4
const BASELINE_S = 5
const SETTLE_MS = 3000
const PREFIX = 'sbi'
const TARGET = 0.95

if (process.getuid?.() !== 0) { console.error('bench interference needs root (network namespaces)'); process.exit(2) }

const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))
const opsPath = (h, name) => join(`/tmp/${PREFIX}-cluster/h${h}/data`, 'images', name, 'ops.json')
const readOps = (h, name) => { try { return JSON.parse(readFileSync(opsPath(h, name), 'utf8')) } catch { return undefined } }
const mean = (xs) => xs.length > 0 ? xs.reduce((a, b) => a + b, 0) / xs.length : null
const r1 = (v) => v == null ? null : +v.toFixed(1)
const r2 = (v) => v == null ? null : +v.toFixed(2)
const r4 = (v) => v == null ? null : +v.toFixed(4)

/** Summary of ops.json samples: mean ops/s, ops/s from the op counter, mean and max p99. */
function summarize (samples) {
  const first = samples[0]
  const last = samples[samples.length - 1]
  return {
    samples: samples.length,
    ops_s: r1(mean(samples.map(s => s.opsPerSec))),
    ops_s_from_counter: samples.length > 1 && last.t > first.t ? r1((last.ops - first.ops) / ((last.t - first.t) / 1000)) : null,
    ops_s_min: samples.length > 0 ? r1(Math.min(...samples.map(s => s.opsPerSec))) : null,
    p99_ms: r4(mean(samples.map(s => s.p99Ms))),
    p99_ms_max: samples.length > 0 ? r4(Math.max(...samples.map(s => s.p99Ms))) : null
  }
}

const c = clusterUp(PREFIX, ['--hosts', '2', '--nics', String(NICS), '--rate', `${rateMbit}mbit`])
const started = performance.now()
const runs = []
try {
  const to = c.info(2).addrs.find(a => a.includes('/198.18.1.2/'))

  const runCase = async (label, migrateOpts, rate = workloadRate) => {
    const name = `if-${rate}-${label}`
    await call(c.socket(1), 'POST', '/images', {
      name, memorySize: size, cacheSize: 2 ** 20, fill: 'random', tracker: 'cooperative',
      config: { rate, recordRate: 0, arrivalCheck: 'quick' }
    })
    try {
      await call(c.socket(1), 'POST', `/images/${name}/start`)
      await sleep(SETTLE_MS)
      // Baseline: one sample per new snapshot (the file is rewritten every second).
      const sampleUntil = async (samples, done) => {
        let lastT = readOps(1, name)?.t ?? 0
        while (!done()) {
          await sleep(200)
          const s = readOps(1, name)
          if (s != null && s.t > lastT) { lastT = s.t; samples.push({ ...s, at: Date.now() }) }
        }
      }
      const base = []
      await sampleUntil(base, () => base.length >= BASELINE_S)

      // During: samples whose whole second lies inside the pre-copy phase on the source.
      let phase = 'handshake'
      let switchAt
      const t0 = Date.now()
      const cpu0 = [cpuSeconds(c.pid(1)), cpuSeconds(c.pid(2))]
      let finished = false
      const during = []
      const migration = call(c.socket(1), 'POST', '/migrate', { image: name, to, lanes: LANES, ...migrateOpts }, (l) => {
        if (l.type === 'progress') {
          phase = l.phase
          if (switchAt == null && l.phase !== 'precopy' && l.phase !== 'handshake') switchAt = Date.now()
        }
      }).finally(() => { finished = true })
      const sampler = sampleUntil(during, () => finished || switchAt != null)
      const res = await migration
      await sampler
      const secs = (Date.now() - t0) / 1000
      const cpu = [cpuSeconds(c.pid(1)) - cpu0[0], cpuSeconds(c.pid(2)) - cpu0[1]]
      void phase
      if (res == null || res.type !== 'report' || res.report?.ok !== true) throw new Error(`migration ${label} failed: ${JSON.stringify(res?.error ?? res)}`)
      const end = switchAt ?? Date.now()
      const inside = during.filter(s => s.t - 1000 >= t0 && s.t <= end)
      const b = summarize(base)
      const d = summarize(inside)
      const rp = res.report
      // After the switchover the workload runs on host 2: one sample there shows it resumed.
      await sleep(1500)
      const after = readOps(2, name)
      const run = {
        label,
        workload_pages_per_s: rate,
        options: migrateOpts,
        baseline: b,
        during: d,
        ops_ratio: b.ops_s > 0 && d.ops_s != null ? +(d.ops_s / b.ops_s).toFixed(3) : null,
        meets_95pct: b.ops_s > 0 && d.ops_s != null ? d.ops_s / b.ops_s >= TARGET : null,
        total_s: r1(rp.totalMs / 1000),
        wall_s: r1(secs),
        downtime_ms: r1(rp.downtimeMs),
        rounds: rp.rounds.length,
        bytes: rp.bytes,
        goodput_MBps: r1(rp.bytes / (rp.totalMs / 1000) / 1e6),
        pacing: rp.pacing ?? null,
        convergence: rp.convergence ?? null,
        cpu_s_source_node: r1(cpu[0]),
        cpu_s_dest_node: r1(cpu[1]),
        dest_ops_after: after != null ? { opsPerSec: r1(after.opsPerSec), p99Ms: r4(after.p99Ms) } : null
      }
      runs.push(run)
      console.log(JSON.stringify({ label, baseline: b, during: d, ratio: run.ops_ratio, total_s: run.total_s, pacing: run.pacing }))
      return run
    } finally {
      for (const h of [2, 1]) await call(c.socket(h), 'DELETE', `/images/${name}`).catch(() => {})
    }
  }

  const runSet = async (rate) => {
    const unbudgeted = await runCase('unbudgeted', { adaptivePacing: false }, rate)
    const budgeted = []
    for (const [i, bud] of budgets.entries()) budgeted.push(await runCase(`budgeted-${i}`, bud, rate))
    return { unbudgeted, budgeted }
  }
  const { unbudgeted, budgeted } = await runSet(workloadRate)
  const main = budgeted[0]
  const stress = stressRate > 0 ? await runSet(stressRate) : undefined
  const elapsed = (performance.now() - started) / 1000

  printTable(runs.map(r => ({
    run: r.label,
    pages_s: r.workload_pages_per_s,
    maxRate_MBps: r.options.maxRate != null ? r.options.maxRate / 1e6 : '-',
    scanCpuShare: r.options.scanCpuShare ?? '-',
    adaptivePacing: r.options.adaptivePacing,
    baseline_ops_s: r.baseline.ops_s,
    during_ops_s: r.during.ops_s,
    ratio: r.ops_ratio,
    '>=95%': r.meets_95pct ? 'yes' : 'NO',
    baseline_p99_ms: r.baseline.p99_ms,
    during_p99_ms: r.during.p99_ms,
    during_p99_max_ms: r.during.p99_ms_max,
    samples: `${r.baseline.samples}/${r.during.samples}`,
    total_s: r.total_s,
    downtime_ms: r.downtime_ms,
    backoffs: r.pacing?.backoffs ?? '-',
    lowest_rate_MBps: r.pacing?.lowestRate != null ? r1(r.pacing.lowestRate / 1e6) : '-'
  })))
  const keeping = budgeted.filter(r => r.meets_95pct).map(r => r.label)
  const stressKeeping = stress?.budgeted.filter(r => r.meets_95pct).map(r => r.label)
  console.log(`\nbudgets keeping >= 95% of baseline ops/s at ${workloadRate} pages/s: ${keeping.length > 0 ? keeping.join(', ') : 'none'}`)
  if (stress != null) console.log(`budgets keeping >= 95% of baseline ops/s at ${stressRate} pages/s: ${stressKeeping.length > 0 ? stressKeeping.join(', ') : 'none'}`)
  console.log(`bench took ${elapsed.toFixed(0)} s`)
  writeResults('interference', {
    baseline_ops_s: unbudgeted.baseline.ops_s,
    unbudgeted_ops_s: unbudgeted.during.ops_s,
    budgeted_ops_s: main.during.ops_s,
    baseline_p99_ms: unbudgeted.baseline.p99_ms,
    unbudgeted_p99_ms: unbudgeted.during.p99_ms,
    budgeted_p99_ms: main.during.p99_ms,
    budgeted_total_s: main.total_s,
    unbudgeted_total_s: unbudgeted.total_s,
    budget: main.options,
    budgeted_baseline_ops_s: main.baseline.ops_s,
    budgeted_ratio: main.ops_ratio,
    unbudgeted_ratio: unbudgeted.ops_ratio,
    target: `budgeted during-migration ops/s >= ${TARGET * 100}% of baseline (reported, not asserted)`,
    budgets_meeting_target: keeping,
    budgets_tried: budgets,
    stress: stress == null
      ? null
      : {
          workload_pages_per_s: stressRate,
          baseline_ops_s: stress.unbudgeted.baseline.ops_s,
          unbudgeted_ops_s: stress.unbudgeted.during.ops_s,
          budgeted_ops_s: stress.budgeted[0].during.ops_s,
          baseline_p99_ms: stress.unbudgeted.baseline.p99_ms,
          unbudgeted_p99_ms: stress.unbudgeted.during.p99_ms,
          budgeted_p99_ms: stress.budgeted[0].during.p99_ms,
          budgeted_total_s: stress.budgeted[0].total_s,
          unbudgeted_total_s: stress.unbudgeted.total_s,
          unbudgeted_ratio: stress.unbudgeted.ops_ratio,
          budgeted_ratio: stress.budgeted[0].ops_ratio,
          budgets_meeting_target: stressKeeping
        },
    method: {
      workload: `cooperative tracker, ${workloadRate} page writes/s, recordRate 0, 1 GiB memory (fill random), 1 MiB cache`,
      sampling: 'ops.json read every 200 ms, one sample per new snapshot (rewritten every second by the workload)',
      baseline: `${BASELINE_S} snapshots before the migration of the same image (baseline_* fields: the unbudgeted run's image)`,
      during: 'snapshots whose one-second window lies inside the migration before the switchover (progress phase leaves precopy)',
      ops_s: 'mean of per-second opsPerSec (ops_s_from_counter: op-counter delta over the window)',
      p99_ms: 'mean of per-second p99 of one page-write syscall (p99_ms_max: the worst second); it times the pwrite only, not scheduling delay of the write loop',
      stress: 'the same runs with a CPU-hungrier workload rate (SHOAL_BENCH_STRESS_RATE)',
      cluster: `2 hosts x ${NICS} NICs, tbf ${rateMbit} Mbit/s per NIC egress, ${LANES} lanes; everything on one 2-core machine`
    },
    bench_wall_s: +elapsed.toFixed(0),
    runs
  })
} finally {
  c.down()
}
