// Prototype: lanes whose libp2p node lives in a worker thread (one node per lane, same key on
// every node of a side). Two processes on loopback as in raw-lanes.mjs; the main thread of each
// process produces / consumes the frames and moves them to / from the workers (transferred).
//
//   node bench/lanes-raw/worker-lanes.mjs [--gib 1] [--lanes 2,4] [--runs 1]
import { fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'
import { Area, decodeFrame, encodeFrame, FrameType } from '@shoal/core'
import { measurePair } from './measure-pair.mjs'

const GIB = 1024 ** 3
const PROTOCOL = '/shoal-bench/wlane/1'
const CREDITS = 8 // frames in flight between a main thread and one worker

if (!isMainThread) await workerMain()
else {
  const { values: opts } = parseArgs({
    options: {
      role: { type: 'string' },
      gib: { type: 'string', default: '1' },
      lanes: { type: 'string', default: '2,4' },
      runs: { type: 'string', default: '1' },
      frame: { type: 'string', default: String(1024 * 1024) }
    }
  })
  if (opts.role == null) await coordinator(opts)
  else await processMain(opts)
}

// ---------------------------------------------------------------- coordinator

async function coordinator (opts) {
  for (const lanes of opts.lanes.split(',').map(Number)) {
    for (let r = 0; r < Number(opts.runs); r++) {
      const row = await measurePair(spawn('recv', opts), spawn('send', opts), ({ addrs, peerId }) => ({ addrs, peerId, lanes }))
      console.log(`libp2p-in-workers lanes=${lanes}: ${row.mbps.toFixed(0)} MB/s, send ${row.sendCpu.toFixed(2)} + recv ${row.recvCpu.toFixed(2)} = ${(row.sendCpu + row.recvCpu).toFixed(2)} CPU-s/GiB`)
    }
  }
}

function spawn (role, opts) {
  const p = fork(new URL(import.meta.url), ['--role', role, '--gib', opts.gib, '--frame', opts.frame, '--lanes', opts.lanes])
  const msgs = []
  const waiters = []
  p.on('message', m => { const w = waiters.shift(); if (w != null) w(m); else msgs.push(m) })
  p.next = () => msgs.length > 0 ? Promise.resolve(msgs.shift()) : new Promise(resolve => waiters.push(resolve))
  p.exited = new Promise(resolve => p.on('exit', resolve))
  return p
}

// ---------------------------------------------------------------- one side (process main thread)

async function processMain (opts) {
  const msgs = []
  const waiters = []
  process.on('message', m => { const w = waiters.shift(); if (w != null) w(m); else msgs.push(m) })
  const next = () => msgs.length > 0 ? Promise.resolve(msgs.shift()) : new Promise(resolve => waiters.push(resolve))
  const total = Math.round(Number(opts.gib) * GIB)
  const frameSize = Number(opts.frame)
  const { generateKeyPair, privateKeyToProtobuf } = await import('@libp2p/crypto/keys')
  const key = privateKeyToProtobuf(await generateKeyPair('Ed25519'))
  const maxLanes = Math.max(...opts.lanes.split(',').map(Number))

  if (opts.role === 'recv') {
    // One worker node per possible lane, each on its own port, all with the same peer ID.
    const workers = Array.from({ length: maxLanes }, () => new Worker(new URL(import.meta.url), { workerData: { role: 'recv', key } }))
    const infos = await Promise.all(workers.map(w => new Promise(resolve => w.once('message', resolve))))
    process.send({ addrs: infos.map(i => i.addr), peerId: infos[0].peerId })
    await next()
    const cpu0 = process.cpuUsage()
    let received = 0
    await new Promise(resolve => {
      for (const w of workers) {
        w.on('message', (frame) => {
          const f = decodeFrame(frame)
          received += f.payload.byteLength
          w.postMessage('credit')
          if (received >= total) resolve()
        })
      }
    })
    const u = process.cpuUsage(cpu0)
    process.send({ bytes: received, cpu: (u.user + u.system) / 1e6 })
    await next()
    process.exit(0)
  }

  const { addrs, peerId, lanes } = await next()
  const workers = Array.from({ length: lanes }, (_, i) => new Worker(new URL(import.meta.url), { workerData: { role: 'send', key, addr: addrs[i % addrs.length], peerId } }))
  await Promise.all(workers.map(w => new Promise(resolve => w.once('message', resolve))))
  process.send('ready')
  await next()
  const cpu0 = process.cpuUsage()
  const perLane = Math.ceil(total / lanes / frameSize)
  const payload = randomBytes(frameSize)
  let chunkId = 0
  await Promise.all(workers.map(async (w) => {
    let credits = CREDITS
    let wake
    w.on('message', () => { credits++; wake?.() })
    for (let i = 0; i < perLane; i++) {
      while (credits === 0) await new Promise(resolve => { wake = resolve })
      credits--
      // The frame must own its buffer to be transferred: one copy, like a real producer would make.
      const parts = encodeFrame({ type: FrameType.Data, round: 1, chunkId: chunkId++, area: Area.Memory, runs: [{ start: i, count: 256 }], payload })
      const frame = new Uint8Array(parts[0].byteLength + parts[1].byteLength)
      frame.set(parts[0]); frame.set(parts[1], parts[0].byteLength)
      w.postMessage(frame, [frame.buffer])
    }
    while (credits < CREDITS) await new Promise(resolve => { wake = resolve })
  }))
  await next()
  const u = process.cpuUsage(cpu0)
  process.send({ cpu: (u.user + u.system) / 1e6 })
  await next()
  process.exit(0)
}

// ---------------------------------------------------------------- worker: one libp2p node, one lane

async function workerMain () {
  const lib = await import('@shoal/libp2p')
  const { privateKeyFromProtobuf } = await import('@libp2p/crypto/keys')
  const privateKey = privateKeyFromProtobuf(workerData.key)
  if (workerData.role === 'recv') {
    const node = await lib.createShoalLibp2p({ privateKey, listen: ['/ip4/127.0.0.2/tcp/0'] })
    let credits = CREDITS
    let wake
    parentPort.on('message', () => { credits++; wake?.() })
    await lib.handleLanes(node, PROTOCOL, lane => {
      void (async () => {
        for await (const frame of lane) {
          while (credits === 0) await new Promise(resolve => { wake = resolve })
          credits--
          // Frames assembled by the decoder own their buffer; small ones may be views: copy those.
          const own = frame.byteOffset === 0 && frame.byteLength === frame.buffer.byteLength ? frame : frame.slice()
          parentPort.postMessage(own, [own.buffer])
        }
      })().catch(() => {})
    }, { isAllowed: () => true })
    await node.start()
    parentPort.postMessage({ addr: node.getMultiaddrs()[0].toString(), peerId: node.peerId.toString() })
    return
  }
  const { multiaddr } = await import('@multiformats/multiaddr')
  const { peerIdFromString } = await import('@libp2p/peer-id')
  const node = await lib.createShoalLibp2p({ privateKey, listen: [], localAddress: '127.0.0.1' })
  await node.start()
  const [lane] = await lib.openLanes(node, { peerId: peerIdFromString(workerData.peerId), addrs: [multiaddr(workerData.addr)] }, PROTOCOL, 1)
  parentPort.on('message', (frame) => {
    lane.send(frame).then(() => parentPort.postMessage('credit'), () => {})
  })
  parentPort.postMessage('ready')
}
