// `pnpm bench converge`: does pre-copy converge, and what pause does it leave, as the workload
// dirties memory faster? On a network-namespace cluster (2 hosts x 4 NICs, each NIC's egress
// shaped to 200 Mbit/s), for each tracker (cooperative, scan), dirty rate (0 .. 50k pages/s) and
// auto-converge off/on: a 1 GiB memory image with a running synthetic workload on host 1 migrates
// to host 2 over 4 lanes, aiming at a pause of 30 ms (cooperative) / 150 ms (scan), at most 30
// rounds. In the same run iperf3 measures the raw capacity of the 4 links (in the JSON setup).
// Writes bench/results/converge.json ({ setup, cases }) and bench/results/converge.svg (downtime
// against dirty rate; hollow markers: pre-copy did not converge). Needs root; installs iperf3.
//
// Env: SHOAL_BENCH_REPS (default 1) repetitions per case, SHOAL_BENCH_REPS_AT (e.g. "5000:3")
// repetitions for some dirty rates, SHOAL_BENCH_RATES, SHOAL_BENCH_TRACKERS, SHOAL_BENCH_AUTO
// ("false,true") to run a subset, SHOAL_BENCH_BYTES (default 1 GiB).
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { call } from '@shoal/cli'
import { printTable, resultsDir, stats, writeResults } from './lib/harness.js'
import { clusterUp, ensureTool, iperfCapacity } from './lib/netns.js'
import { lineChart } from './lib/svg-chart.js'

const GiB = 2 ** 30
const size = Number(process.env.SHOAL_BENCH_BYTES ?? GiB)
const rateMbit = Number(process.env.SHOAL_BENCH_RATE_MBIT ?? 200)
const reps = Number(process.env.SHOAL_BENCH_REPS ?? 1)
const repsAt = new Map((process.env.SHOAL_BENCH_REPS_AT ?? '').split(',').filter(Boolean).map(s => s.split(':').map(Number)))
const dirtyRates = (process.env.SHOAL_BENCH_RATES ?? '0,1000,5000,20000,50000').split(',').map(Number)
const trackers = (process.env.SHOAL_BENCH_TRACKERS ?? 'cooperative,scan').split(',')
const autos = (process.env.SHOAL_BENCH_AUTO ?? 'false,true').split(',').map(s => s === 'true')
const targets = { cooperative: 30, scan: 150 }
const issueTargets = { cooperative: 'p50 <= 30 ms at 5k pages/s', scan: 'p50 <= 150 ms (1 GiB, 2 cores)' }
const NICS = 4
const LANES = 4
const MAX_ROUNDS = 30
const SETTLE_MS = 3000
const CASE_TIMEOUT_MS = Number(process.env.SHOAL_BENCH_CASE_TIMEOUT_S ?? 600) * 1000
const PREFIX = 'sbc'
const clusterArgs = ['--hosts', '2', '--nics', String(NICS), '--rate', `${rateMbit}mbit`]

if (process.getuid?.() !== 0) { console.error('bench converge needs root (network namespaces)'); process.exit(2) }
ensureTool('iperf3')

const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))
const dataDir = (h) => `/tmp/${PREFIX}-cluster/h${h}/data`
const readOps = (h, name) => { try { return JSON.parse(readFileSync(join(dataDir(h), 'images', name, 'ops.json'), 'utf8')) } catch { return undefined } }

let c = clusterUp(PREFIX, clusterArgs)
const started = performance.now()
const results = []
try {
  const pairs = Array.from({ length: NICS }, (_, k) => [`198.18.${k + 1}.1`, `198.18.${k + 1}.2`])
  const raw = await iperfCapacity(c.ns(1), c.ns(2), pairs)
  console.log(`raw capacity of ${NICS} links (iperf3, in parallel): ${raw.toFixed(1)} MB/s`)
  const setup = {
    hosts: 2,
    nics: NICS,
    lanes: LANES,
    rate_mbit_per_nic: rateMbit,
    raw_capacity_MBps: +raw.toFixed(1),
    raw_capacity_note: 'iperf3, one TCP stream per link, all 4 links at once for 5 s, summed received rate (MB = 1e6 bytes)',
    memory_bytes: size,
    cache_bytes: 2 ** 20,
    fill: 'random',
    record_rate: 0,
    arrival_check: 'quick',
    max_rounds: MAX_ROUNDS,
    downtime_target_ms: targets,
    issue_targets: issueTargets,
    settle_ms_before_migrating: SETTLE_MS,
    reps_default: reps,
    reps_at: Object.fromEntries(repsAt),
    downtime_ms_p50: 'median of the reps of a case (see each case\'s `reps`)',
    cores: 2
  }

  const runOnce = async (tracker, rate, autoConverge, rep) => {
    const name = `cv-${tracker}-${rate}-${autoConverge ? 'ac' : 'noac'}-${rep}`
    await call(c.socket(1), 'POST', '/images', {
      name, memorySize: size, cacheSize: 2 ** 20, fill: 'random', tracker,
      config: { rate, recordRate: 0, arrivalCheck: 'quick' }
    })
    try {
      await call(c.socket(1), 'POST', `/images/${name}/start`)
      await sleep(SETTLE_MS)
      const before = readOps(1, name)
      const to = c.info(2).addrs.find(a => a.includes('/198.18.1.2/'))
      const t0 = performance.now()
      let timer
      const res = await Promise.race([
        call(c.socket(1), 'POST', '/migrate', { image: name, to, lanes: LANES, downtimeTargetMs: targets[tracker], maxRounds: MAX_ROUNDS, autoConverge }, () => {}),
        new Promise((resolve, reject) => { timer = setTimeout(() => reject(new Error(`migration did not finish in ${CASE_TIMEOUT_MS / 1000} s`)), CASE_TIMEOUT_MS) })
      ]).finally(() => clearTimeout(timer))
      const wallS = (performance.now() - t0) / 1000
      if (res == null) throw new Error('migrate answered no NDJSON (request refused?)')
      const report = res.report
      if (res.type !== 'report' || report?.ok !== true) {
        return { ok: false, error: res.error ?? report?.error ?? res, report, before, wallS }
      }
      return { ok: true, report, before, wallS }
    } finally {
      // The image lives on host 2 after a migration, on host 1 after a failure; DELETE stops its workload.
      for (const h of [2, 1]) await call(c.socket(h), 'DELETE', `/images/${name}`).catch(() => {})
    }
  }

  for (const tracker of trackers) {
    for (const rate of dirtyRates) {
      for (const autoConverge of autos) {
        const n = repsAt.get(rate) ?? reps
        const runs = []
        for (let rep = 0; rep < n; rep++) {
          let r
          try {
            r = await runOnce(tracker, rate, autoConverge, rep)
          } catch (err) {
            r = { ok: false, error: { message: err.message } }
            // A hung or broken cluster: start from a fresh one.
            console.log(`  ${tracker} ${rate} ac=${autoConverge} rep ${rep}: ${err.message}; restarting the cluster`)
            c.down()
            c = clusterUp(PREFIX, clusterArgs)
          }
          runs.push(r)
          const rp = r.report
          console.log(`  ${tracker} ${rate}/s ac=${autoConverge} rep ${rep}: ${r.ok ? 'ok' : 'FAILED'} downtime ${rp?.downtimeMs?.toFixed(1)} ms, ${rp?.rounds?.length} rounds, converged ${rp?.convergence?.converged} (${rp?.convergence?.reason}), total ${(rp?.totalMs / 1000).toFixed(1)} s${r.ok ? '' : ` error ${JSON.stringify(r.error)}`}`)
        }
        const okRuns = runs.filter(r => r.ok)
        // Details come from the rep with the median downtime (the middle one for odd reps).
        const sorted = [...okRuns].sort((a, b) => a.report.downtimeMs - b.report.downtimeMs)
        const mid = sorted[Math.floor((sorted.length - 1) / 2)]
        const rp = mid?.report
        const last = rp?.rounds?.[rp.rounds.length - 1]
        const row = {
          tracker,
          dirty_pages_per_s: rate,
          auto_converge: autoConverge,
          converged: okRuns.length > 0 && okRuns.every(r => r.report.convergence?.converged === true),
          downtime_ms_p50: okRuns.length > 0 ? +stats(okRuns.map(r => r.report.downtimeMs)).median.toFixed(1) : null,
          total_s: okRuns.length > 0 ? +stats(okRuns.map(r => r.report.totalMs / 1000)).median.toFixed(1) : null,
          rounds: okRuns.length > 0 ? stats(okRuns.map(r => r.report.rounds.length)).median : null,
          downtime_target_ms: targets[tracker],
          reps: n,
          ok_reps: okRuns.length,
          converged_reps: okRuns.filter(r => r.report.convergence?.converged === true).length,
          target_met_reps: okRuns.filter(r => r.report.downtimeMs <= targets[tracker]).length,
          reason: rp?.convergence?.reason ?? null,
          max_throttle: rp?.convergence?.maxThrottle ?? null,
          final_round_pages: last?.final === true ? last.pages : null,
          final_round_bytes: last?.final === true ? last.bytes : null,
          downtime_breakdown: rp?.downtime ?? null,
          workload_ops_s_before: mid?.before?.opsPerSec ?? null,
          workload_p99_ms_before: mid?.before?.p99Ms ?? null,
          bytes_sent: rp?.bytes ?? null,
          downtime_ms_all: okRuns.map(r => +r.report.downtimeMs.toFixed(1)),
          round_details: rp?.rounds?.map(x => ({
            round: x.round, final: x.final, pages: x.pages, bytes: x.bytes, scan_ms: +x.scanMs.toFixed(1), send_ms: +x.sendMs.toFixed(1),
            dirty_MBps: x.dirtyRate != null ? +(x.dirtyRate / 1e6).toFixed(1) : null,
            bandwidth_MBps: x.bandwidth != null ? +(x.bandwidth / 1e6).toFixed(1) : null,
            predicted_pause_ms: x.predictedPauseMs != null ? +x.predictedPauseMs.toFixed(1) : null,
            throttle: x.throttle ?? 0
          })) ?? null,
          errors: runs.filter(r => !r.ok).map(r => r.error)
        }
        results.push(row)
      }
    }
  }

  const elapsed = (performance.now() - started) / 1000
  setup.bench_wall_s = +elapsed.toFixed(0)
  const bd = (r) => r.downtime_breakdown
  printTable(results.map(r => ({
    tracker: r.tracker,
    dirty_pages_per_s: r.dirty_pages_per_s,
    auto_converge: r.auto_converge,
    converged: r.converged ? 'yes' : '** NO **',
    downtime_ms_p50: r.downtime_ms_p50 ?? 'FAILED',
    target_ms: r.downtime_target_ms,
    total_s: r.total_s ?? '-',
    rounds: r.rounds ?? '-',
    reason: r.reason ?? '-',
    max_throttle: r.max_throttle ?? '-',
    final_pages: r.final_round_pages ?? '-',
    'scan/send/verify/commit_ms': bd(r) != null ? [bd(r).finalScanMs, bd(r).finalSendMs, bd(r).verifyMs, bd(r).commitMs].map(v => v.toFixed(0)).join('/') : '-',
    reps: `${r.ok_reps}/${r.reps}`
  })))
  console.log(`\nraw capacity (iperf3, ${NICS} links): ${raw.toFixed(1)} MB/s; bench took ${elapsed.toFixed(0)} s`)
  writeResults('converge', { setup, cases: results })

  const series = []
  for (const tracker of trackers) {
    for (const autoConverge of autos) {
      series.push({
        name: `${tracker}, auto-converge ${autoConverge ? 'on' : 'off'} (target ${targets[tracker]} ms)`,
        color: tracker === 'cooperative' ? (autoConverge ? '#1f77b4' : '#7fb5dd') : (autoConverge ? '#d62728' : '#f0a0a0'),
        marker: autoConverge ? 'circle' : 'square',
        dash: autoConverge ? undefined : '6 4',
        points: results.filter(r => r.tracker === tracker && r.auto_converge === autoConverge).map(r => ({
          x: r.dirty_pages_per_s,
          y: r.downtime_ms_p50,
          hollow: !r.converged,
          label: `${tracker} ac=${autoConverge} ${r.dirty_pages_per_s}/s: ${r.downtime_ms_p50} ms, ${r.rounds} rounds, ${r.reason}`
        }))
      })
    }
  }
  const svg = lineChart({
    title: `Downtime vs dirty rate (1 GiB, ${LANES} x ${rateMbit} Mbit/s, p50 of reps)`,
    xLabel: 'dirty rate (pages/s, 4 KiB pages)',
    yLabel: 'downtime (ms, log scale)',
    x: { scale: 'category', values: dirtyRates },
    y: { scale: 'log' },
    series,
    notes: ['hollow marker: pre-copy did not converge', 'solid: converged (pause fit the target)'],
    width: 900,
    height: 500
  })
  const svgPath = join(resultsDir, 'converge.svg')
  writeFileSync(svgPath, svg)
  console.log(`wrote ${svgPath}`)
} finally {
  c.down()
}
