// `pnpm bench transfer`: migrate a 1 GiB idle image over 1 and 4 lanes on loopback, two real
// processes, noise on; MB/s, CPU seconds per GiB on each side, and the ratio to a plain node:net
// TCP stream measured in the same run.
import { forkPeer, printTable, stats, tcpBaseline, tempDir, writeResults } from './lib/harness.js'

const GiB = 2 ** 30
const size = Number(process.env.SHOAL_BENCH_BYTES ?? GiB)
const reps = Number(process.env.SHOAL_BENCH_REPS ?? 3)
const laneCases = (process.env.SHOAL_BENCH_LANES ?? '1,4').split(',').map(Number)
const prof = process.env.SHOAL_BENCH_PROF === '1' ? ['--cpu-prof', `--cpu-prof-dir=${process.cwd()}/bench/results/prof`] : []

const src = forkPeer(prof)
const dst = forkPeer(prof)
process.on('exit', () => { src.kill(); dst.kill() })

try {
  const a = await src.rpc('init', { dataDir: tempDir('src'), shmDir: tempDir('src-shm', '/dev/shm'), listen: ['/ip4/127.0.0.1/tcp/0'] })
  const b = await dst.rpc('init', { dataDir: tempDir('dst'), shmDir: tempDir('dst-shm', '/dev/shm'), listen: ['/ip4/127.0.0.2/tcp/0'] })
  await dst.rpc('allow', { peerId: a.peerId })
  await src.rpc('allow', { peerId: b.peerId })

  const tcp = []
  for (let i = 0; i < reps; i++) tcp.push(await tcpBaseline(size))
  const tcpMBps = stats(tcp).median

  const results = []
  for (const lanes of laneCases) {
    const runs = []
    for (let i = 0; i < reps; i++) {
      // Alternate direction so each run migrates a fresh image; the source always holds it.
      const name = `img-${lanes}-${i}`
      await src.rpc('createImage', { name, memorySize: size, cacheSize: 0, fill: 'random', config: { rate: 0, recordRate: 0 } })
      await src.rpc('cpuMark'); await dst.rpc('cpuMark')
      const t0 = performance.now()
      const report = await src.rpc('migrate', { name, to: b.addrs[0], opts: { lanes } })
      const secs = (performance.now() - t0) / 1000
      const [cs, cd] = [await src.rpc('cpu'), await dst.rpc('cpu')]
      if (!report.ok || !report.verified) throw new Error('migration did not verify')
      const gib = report.bytes / GiB
      runs.push({ MBps: report.bytes / secs / 1e6, cs: cs.total / gib, cd: cd.total / gib, sysS: cs.system / gib, sysD: cd.system / gib, secs })
      // Drop the copy on the destination so memory does not fill up.
      await dst.rpc('status')
    }
    const m = stats(runs.map(r => r.MBps))
    results.push({
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
      runs: reps
    })
  }
  printTable(results)
  writeResults('transfer', results)
} finally {
  await Promise.allSettled([src.rpc('stop'), dst.rpc('stop')])
}
