// A Shoal node in its own process, driven over IPC by a benchmark (so CPU is measured per side).
import '@shoal/libp2p'
import { createShoalNode } from '@shoal/node'
import { createSyntheticDriver } from '@shoal/driver-synthetic'
import { createQemuDriver } from '@shoal/driver-qemu'

let node
let cpuMark = process.cpuUsage()

const handlers = {
  async init ({ dataDir, shmDir, listen, workers }) {
    node = await createShoalNode({ dataDir, shmDir, listen, workers, controlSocket: false, drivers: [createSyntheticDriver(), createQemuDriver()] })
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
  async cpuMark () { cpuMark = process.cpuUsage(); return true },
  async cpu () { const u = process.cpuUsage(cpuMark); return { total: (u.user + u.system) / 1e6, user: u.user / 1e6, system: u.system / 1e6 } },
  async stop () { await node?.stop(); setImmediate(() => process.exit(0)); return true }
}

process.on('message', async ({ id, cmd, args }) => {
  try {
    process.send({ id, ok: true, value: await handlers[cmd](args ?? {}) })
  } catch (err) {
    process.send({ id, ok: false, error: `${err.name}: ${err.message}` })
  }
})
