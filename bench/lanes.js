// `pnpm bench lanes`: on a network-namespace cluster (2 hosts x 4 NICs, each NIC's egress shaped
// to 200 Mbit/s), migrate a 1 GiB memory image from host 1 to host 2 over K = 1, 2, 4 lanes (one
// NIC each), without and with 5 ms delay per link. In the same run, iperf3 measures the raw
// capacity of the same K links in parallel. Needs root (namespaces); installs iperf3 if missing.
import { call } from '@shoal/cli'
import { printTable, writeResults } from './lib/harness.js'
import { clusterUp, cpuSeconds, ensureTool, iperfCapacity, netemUnavailable } from './lib/netns.js'

const GiB = 2 ** 30
const size = Number(process.env.SHOAL_BENCH_BYTES ?? GiB)
const rateMbit = Number(process.env.SHOAL_BENCH_RATE_MBIT ?? 200)
const laneCases = (process.env.SHOAL_BENCH_LANES ?? '1,2,4').split(',').map(Number)
const delays = (process.env.SHOAL_BENCH_DELAYS ?? '0,5').split(',').map(Number)
const NICS = 4

if (process.getuid?.() !== 0) { console.error('bench lanes needs root (network namespaces)'); process.exit(2) }
ensureTool('iperf3')

const results = []
const skipped = []
const noNetem = netemUnavailable()
for (const delay of delays) {
  if (delay > 0 && noNetem != null) {
    // Recorded, not silently dropped: the delay cases cannot run on this kernel.
    for (const lanes of laneCases) skipped.push({ lanes, rate_mbit: rateMbit, delay_ms: delay, skipped: noNetem })
    console.log(`skipping delay ${delay} ms: ${noNetem}`)
    continue
  }
  const c = clusterUp('sbl', ['--hosts', '2', '--nics', String(NICS), '--rate', `${rateMbit}mbit`, '--delay', String(delay)])
  try {
    const dst = c.info(2)
    for (const lanes of laneCases) {
      const pairs = Array.from({ length: lanes }, (_, k) => [`198.18.${k + 1}.1`, `198.18.${k + 1}.2`])
      const raw = await iperfCapacity(c.ns(1), c.ns(2), pairs)
      const name = `img-${lanes}-${delay}`
      await call(c.socket(1), 'POST', '/images', { name, memorySize: size, cacheSize: 0, fill: 'random', config: { rate: 0, recordRate: 0 } })
      const to = dst.addrs.find(a => a.includes('/198.18.1.2/'))
      const cpu0 = [cpuSeconds(c.pid(1)), cpuSeconds(c.pid(2))]
      const t0 = performance.now()
      const res = await call(c.socket(1), 'POST', '/migrate', { image: name, to, lanes }, () => {})
      const secs = (performance.now() - t0) / 1000
      if (res.type !== 'report' || !res.report.ok) throw new Error(`migration failed: ${JSON.stringify(res.error)}`)
      const gib = res.report.bytes / GiB
      const goodput = res.report.bytes / secs / 1e6
      const row = {
        lanes,
        rate_mbit: rateMbit,
        delay_ms: delay,
        goodput_MBps: +goodput.toFixed(1),
        raw_capacity_MBps: +raw.toFixed(1),
        efficiency: +(goodput / raw).toFixed(3),
        cpu_s_per_GiB_source: +((cpuSeconds(c.pid(1)) - cpu0[0]) / gib).toFixed(2),
        cpu_s_per_GiB_dest: +((cpuSeconds(c.pid(2)) - cpu0[1]) / gib).toFixed(2),
        total_s: +secs.toFixed(1),
        // Where the time beyond bytes / capacity went: per round scan and send, and the pause.
        rounds: res.report.rounds.map(r => ({ scan_ms: Math.round(r.scanMs), send_ms: Math.round(r.sendMs), MB: +(r.bytes / 1e6).toFixed(1), ...(r.final === true ? { final: true } : {}) })),
        downtime_ms: Math.round(res.report.downtimeMs),
        report_total_ms: Math.round(res.report.totalMs),
        lanes_used: res.report.lanes.map(l => `${l.localAddress}>${l.remoteAddress}`).join(' ')
      }
      results.push(row)
      console.log(JSON.stringify(row))
    }
  } finally {
    c.down()
  }
}
printTable(results.map(({ lanes_used: _, rounds: __, ...r }) => r))
for (const s of skipped) console.log(`not measured: ${s.lanes} lanes, ${s.delay_ms} ms delay: ${s.skipped}`)
writeResults('lanes', [...results, ...skipped])
