// Network-namespace cluster helpers for benchmarks (wrapping examples/netns-cluster/cluster.sh).
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const SCRIPT = fileURLToPath(new URL('../../examples/netns-cluster/cluster.sh', import.meta.url))

/** Installs a Debian package when its command is missing (benchmarks run as root here). */
export function ensureTool (cmd, pkg = cmd) {
  if (spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0) return
  console.log(`installing ${pkg} ...`)
  execFileSync('sh', ['-c', `apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${pkg} >/dev/null`], { stdio: 'inherit' })
}

/** Brings a cluster up; returns helpers. `down()` is also registered for process exit. */
export function clusterUp (prefix, args) {
  const down = () => spawnSync('bash', [SCRIPT, 'down', '--prefix', prefix], { stdio: 'ignore' })
  process.on('exit', down)
  for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => { down(); process.exit(130) })
  execFileSync('bash', [SCRIPT, 'up', '--prefix', prefix, ...args], { stdio: ['ignore', 'ignore', 'inherit'] })
  const state = `/tmp/${prefix}-cluster`
  return {
    info: (h) => JSON.parse(readFileSync(`${state}/h${h}/info`, 'utf8')),
    socket: (h) => `${state}/h${h}/data/control.sock`,
    pid: (h) => Number(readFileSync(`${state}/h${h}/pid`, 'utf8')),
    ns: (h) => `${prefix}-h${h}`,
    down
  }
}

/** Why `tc netem` (link delay) cannot be used here, or undefined when it can. */
export function netemUnavailable () {
  const probe = `sbprobe${process.pid % 10000}`
  if (spawnSync('ip', ['link', 'add', probe, 'type', 'veth', 'peer', 'name', `${probe}b`]).status !== 0) return 'cannot create a veth pair'
  const r = spawnSync('tc', ['qdisc', 'add', 'dev', probe, 'root', 'netem', 'delay', '1ms'], { encoding: 'utf8' })
  spawnSync('ip', ['link', 'del', probe])
  return r.status === 0 ? undefined : `this kernel has no netem qdisc (tc: ${r.stderr.trim()})`
}

/** CPU seconds (user + system) a process has used, from /proc. */
export function cpuSeconds (pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(f[11]) + Number(f[12])) / 100 // utime, stime in clock ticks (100 Hz)
}

/** The received rate (MB/s) from iperf3's JSON output, or a clear error. */
function iperfReceived (code, out) {
  if (code !== 0) throw new Error(`iperf3 exited ${code}`)
  try {
    return JSON.parse(out).end.sum_received.bits_per_second / 8 / 1e6
  } catch {
    throw new Error(`iperf3 printed no result (${JSON.stringify(out.slice(0, 200))})`)
  }
}

/**
 * Raw capacity of links: one iperf3 server per link in `serverNs`, one client per link in
 * `clientNs`, all at once for `secs`; returns the summed received rate in MB/s.
 */
export async function iperfCapacity (clientNs, serverNs, pairs, secs = 5) {
  const servers = pairs.map(([, dst], i) => spawn('ip', ['netns', 'exec', serverNs, 'iperf3', '-s', '-1', '-B', dst, '-p', String(5301 + i)], { stdio: 'ignore' }))
  await new Promise(resolve => setTimeout(resolve, 500))
  try {
    const runs = pairs.map(([src, dst], i) => new Promise((resolve, reject) => {
      const c = spawn('ip', ['netns', 'exec', clientNs, 'iperf3', '-c', dst, '-B', src, '-p', String(5301 + i), '-t', String(secs), '-J'], { stdio: ['ignore', 'pipe', 'inherit'] })
      let out = ''
      c.stdout.on('data', d => { out += d })
      // 'close', not 'exit': the output may still be in the pipe when the process has exited.
      c.on('close', code => { try { resolve(iperfReceived(code, out)) } catch (err) { reject(err) } })
    }))
    return (await Promise.all(runs)).reduce((a, b) => a + b, 0)
  } finally {
    for (const s of servers) s.kill()
  }
}

/**
 * Raw capacity into one host from several: one iperf3 server per sender in `serverNs` (bound to
 * `dst`), and a client in each sender's namespace (`[clientNs, src]`), all at once for `secs`;
 * returns the per-sender received rates in MB/s (each sender's uplink, measured in parallel).
 */
export async function iperfFanIn (serverNs, dst, senders, secs = 5) {
  const servers = senders.map((_, i) => spawn('ip', ['netns', 'exec', serverNs, 'iperf3', '-s', '-1', '-B', dst, '-p', String(5301 + i)], { stdio: 'ignore' }))
  await new Promise(resolve => setTimeout(resolve, 500))
  try {
    return await Promise.all(senders.map(([ns, src], i) => new Promise((resolve, reject) => {
      const c = spawn('ip', ['netns', 'exec', ns, 'iperf3', '-c', dst, '-B', src, '-p', String(5301 + i), '-t', String(secs), '-J'], { stdio: ['ignore', 'pipe', 'inherit'] })
      let out = ''
      c.stdout.on('data', d => { out += d })
      // 'close', not 'exit': the output may still be in the pipe when the process has exited.
      c.on('close', code => { try { resolve(iperfReceived(code, out)) } catch (err) { reject(err) } })
    })))
  } finally {
    for (const s of servers) s.kill()
  }
}
