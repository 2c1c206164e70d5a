// A Shoal node in its own process, driven over IPC by a benchmark (so CPU is measured per side).
import '@shoal/libp2p'
import { createShoalNode } from '@shoal/node'
import { createSyntheticDriver } from '@shoal/driver-synthetic'
import { createQemuDriver } from '@shoal/driver-qemu'
import { TID_CHANNEL, threadDelta, threadTimes } from './cpu-breakdown.js'

let node
let cpuMark = process.cpuUsage()

// Which OS thread is which, so /proc counters can be matched to CPU profiles (cpu-breakdown.js):
// the main thread is the pid; worker_threads report their tid (cpu-breakdown.js, loaded with
// --import, runs in each); of the threads present now, the last UV_THREADPOOL_SIZE are libuv's
// threadpool (created lazily after V8's platform threads and the profiler's) and the rest V8's.
const roles = { [process.pid]: 'main' }
{
  const boot = Object.entries(threadTimes().threads).filter(([tid, t]) => Number(tid) !== process.pid && t.comm !== 'v8:ProfEvntProc').map(([tid]) => Number(tid)).sort((a, b) => a - b)
  const pool = Number(process.env.UV_THREADPOOL_SIZE ?? 4)
  boot.forEach((tid, i) => { roles[tid] = i >= boot.length - pool ? 'threadpool' : 'v8' })
  const ch = new BroadcastChannel(TID_CHANNEL)
  ch.onmessage = ({ data }) => { roles[data.tid] = `worker:${data.threadId}` }
  ch.unref()
}
let mark = { times: threadTimes(), us: 0 }

const handlers = {
  async init ({ dataDir, shmDir, listen, workers, dataWorkers }) {
    node = await createShoalNode({ dataDir, shmDir, listen, workers, controlSocket: false, ...(dataWorkers != null ? { dataWorkers } : {}), drivers: [createSyntheticDriver(), createQemuDriver()], ...(process.env.SHOAL_BENCH_ENCRYPTERS != null ? { encrypters: process.env.SHOAL_BENCH_ENCRYPTERS.split(',') } : {}) })
    await node.start()
    return { peerId: node.peerId, addrs: node.addrs() }
  },
  async allow ({ peerId }) { node.allowPeer(peerId); return true },
  async createImage (opts) { return await node.createImage(opts) },
  async startImage ({ name }) { return await node.startImage(name) },
  async migrate ({ name, to, opts }) {
    const report = await node.migrate(name, to, opts)
    return report
  },
  async status () { return node.status() },
  async cpuMark () { mark = { times: threadTimes(), us: Number(process.hrtime.bigint() / 1000n) }; cpuMark = process.cpuUsage(); return true },
  async cpu () {
    const u = process.cpuUsage(cpuMark)
    // The window in CLOCK_MONOTONIC µs, the clock V8's profile timestamps use.
    const window = { fromUs: mark.us, toUs: Number(process.hrtime.bigint() / 1000n), delta: threadDelta(mark.times, threadTimes()), roles: { ...roles } }
    return { total: (u.user + u.system) / 1e6, user: u.user / 1e6, system: u.system / 1e6, pid: process.pid, window }
  },
  async stop () { await node?.stop(); setImmediate(() => process.exit(0)); return true }
}

process.on('message', async ({ id, cmd, args }) => {
  try {
    process.send({ id, ok: true, value: await handlers[cmd](args ?? {}) })
  } catch (err) {
    process.send({ id, ok: false, error: `${err.name}: ${err.message}` })
  }
})
