// Raw lane throughput: two processes on loopback (sender 127.0.0.1, receiver 127.0.0.2) push
// 1 MiB DATA frames over N lanes; prints MB/s and CPU-seconds per GiB for each side, and the same
// for a plain node:net baseline.
//
//   node bench/lanes-raw/raw-lanes.mjs [--gib 1] [--lanes 1,4] [--modes tcp,libp2p] [--spc 1]
//        [--frame 1048576] [--window 16777216] [--runs 1] [--prof] [--node-flags '--max-semi-space-size=64']
//        [--gather true|false] [--json out.json]
//
// --prof writes .cpuprofile files to bench/lanes-raw/prof/ (read them with prof-top.mjs).
// Build first: npx tsc -b packages/libp2p
import { fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { parseArgs } from 'node:util'
import { Area, decodeFrame, encodeFrame, FrameDecoder, FrameType } from '@shoal/core'
import { measurePair } from './measure-pair.mjs'

const GIB = 1024 ** 3
const PROTOCOL = '/shoal-bench/lane/1'
const { values: opts } = parseArgs({
  options: {
    role: { type: 'string' },
    gib: { type: 'string', default: '1' },
    lanes: { type: 'string', default: '1,4' },
    modes: { type: 'string', default: 'tcp,libp2p' },
    spc: { type: 'string', default: '1' },
    frame: { type: 'string', default: String(1024 * 1024) },
    window: { type: 'string', default: String(16 * 1024 * 1024) },
    runs: { type: 'string', default: '1' },
    workers: { type: 'string', default: '0' },
    prof: { type: 'boolean', default: false },
    gather: { type: 'string', default: 'true' },
    'node-flags': { type: 'string', default: '' },
    json: { type: 'string' }
  }
})

if (opts.role == null) await main()
else await child(opts.role)

// ---------------------------------------------------------------- coordinator

async function main () {
  const rows = []
  for (const mode of opts.modes.split(',')) {
    for (const lanes of opts.lanes.split(',').map(Number)) {
      const samples = []
      for (let r = 0; r < Number(opts.runs); r++) samples.push(await runOnce(mode, lanes))
      samples.sort((a, b) => a.mbps - b.mbps)
      const med = samples[Math.floor(samples.length / 2)]
      rows.push({ mode, lanes, ...med, spread: samples.map(s => s.mbps.toFixed(0)).join('/') })
    }
  }
  const base = rows.find(r => r.mode === 'tcp')
  console.log('\nmode      lanes   MB/s  (runs)        send CPU-s/GiB  recv CPU-s/GiB  total  ratio-to-tcp')
  for (const r of rows) {
    console.log(`${r.mode.padEnd(9)} ${String(r.lanes).padStart(5)} ${r.mbps.toFixed(0).padStart(6)}  (${r.spread})`.padEnd(35) +
      `${r.sendCpu.toFixed(2).padStart(14)}  ${r.recvCpu.toFixed(2).padStart(14)}  ${(r.sendCpu + r.recvCpu).toFixed(2).padStart(5)}  ${base != null ? (r.mbps / base.mbps).toFixed(2) : '-'}`)
  }
  if (opts.json != null) writeFileSync(opts.json, JSON.stringify({ opts, rows }, null, 2))
}

function spawn (role, extra = []) {
  const execArgv = ['--max-old-space-size=4096', ...opts['node-flags'].split(' ').filter(Boolean)]
  if (opts.prof) {
    mkdirSync('bench/lanes-raw/prof', { recursive: true })
    execArgv.push('--cpu-prof', '--cpu-prof-dir=bench/lanes-raw/prof', `--cpu-prof-name=${role}-${Date.now()}.cpuprofile`)
  }
  const argv = process.argv.slice(2).filter(a => !a.startsWith('--role'))
  const p = fork(new URL(import.meta.url), [...argv, '--role', role, ...extra], { execArgv })
  const msgs = []
  const waiters = []
  p.on('message', m => { const w = waiters.shift(); if (w != null) w(m); else msgs.push(m) })
  p.next = () => msgs.length > 0 ? Promise.resolve(msgs.shift()) : new Promise(resolve => waiters.push(resolve))
  p.exited = new Promise(resolve => p.on('exit', resolve))
  return p
}

async function runOnce (mode, lanes) {
  const row = await measurePair(spawn(`recv-${mode}`), spawn(`send-${mode}`), ({ addr, peerId }) => ({ addr, peerId, lanes }))
  console.log(`${mode} lanes=${lanes}: ${row.mbps.toFixed(0)} MB/s, send ${row.sendCpu.toFixed(2)} + recv ${row.recvCpu.toFixed(2)} CPU-s/GiB`)
  return row
}

// ---------------------------------------------------------------- children

function cpuSeconds (since) {
  const u = process.cpuUsage(since)
  return (u.user + u.system) / 1e6
}

function onParent () {
  const msgs = []
  const waiters = []
  process.on('message', m => { const w = waiters.shift(); if (w != null) w(m); else msgs.push(m) })
  return () => msgs.length > 0 ? Promise.resolve(msgs.shift()) : new Promise(resolve => waiters.push(resolve))
}

async function child (role) {
  const next = onParent()
  const [side, mode] = role.split('-')
  const total = Math.round(Number(opts.gib) * GIB)
  const frameSize = Number(opts.frame)
  if (side === 'recv') {
    let received = 0
    let cpu0
    let finish
    const done = new Promise(resolve => { finish = resolve })
    const count = (frame) => {
      const f = decodeFrame(frame)
      received += f.payload.byteLength
      if (received >= total) finish()
    }
    let addr, peerId, stop
    if (mode === 'tcp') {
      const server = net.createServer(sock => {
        const dec = new FrameDecoder()
        sock.on('data', buf => { dec.push(buf); for (let f = dec.next(); f != null; f = dec.next()) count(f) })
      })
      await new Promise(resolve => server.listen(0, '127.0.0.2', resolve))
      addr = `127.0.0.2:${server.address().port}`
      stop = async () => { server.close() }
    } else {
      const lib = await import('@shoal/libp2p')
      const { generateKeyPair } = await import('@libp2p/crypto/keys')
      const node = await lib.createShoalLibp2p({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.2/tcp/0'], streamWindow: Number(opts.window), gatherWrites: opts.gather === 'true' })
      await lib.handleLanes(node, PROTOCOL, lane => {
        void (async () => { for await (const f of lane) count(f) })().catch(err => { if (received < total) { console.error('recv lane error', err); process.exit(1) } })
      }, { isAllowed: () => true })
      await node.start()
      addr = node.getMultiaddrs()[0].toString()
      peerId = node.peerId.toString()
      stop = async () => { await node.stop() }
    }
    process.send({ addr, peerId })
    await next() // go
    cpu0 = process.cpuUsage()
    await done
    process.send({ bytes: received, cpu: cpuSeconds(cpu0) })
    await next() // exit
    await stop()
    process.exit(0)
  }

  // sender
  const { addr, peerId, lanes } = await next()
  const pool = Array.from({ length: 8 }, () => randomBytes(frameSize))
  let sinks, stop
  if (mode === 'tcp') {
    const [host, port] = addr.split(':')
    const socks = await Promise.all(Array.from({ length: lanes }, () => new Promise((resolve, reject) => {
      const s = net.connect({ host, port: Number(port), localAddress: '127.0.0.1', noDelay: true }, () => resolve(s))
      s.on('error', reject)
    })))
    sinks = socks.map(s => async (parts) => {
      let ok = true
      for (const p of parts) ok = s.write(p)
      if (!ok) await new Promise(resolve => s.once('drain', resolve))
    })
    stop = async () => { for (const s of socks) s.destroy() }
  } else {
    const lib = await import('@shoal/libp2p')
    const { generateKeyPair } = await import('@libp2p/crypto/keys')
    const { multiaddr } = await import('@multiformats/multiaddr')
    const { peerIdFromString } = await import('@libp2p/peer-id')
    const node = await lib.createShoalLibp2p({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], localAddress: '127.0.0.1', streamWindow: Number(opts.window), gatherWrites: opts.gather === 'true' })
    await node.start()
    const ls = await lib.openLanes(node, { peerId: peerIdFromString(peerId), addrs: [multiaddr(addr)] }, PROTOCOL, lanes, { streamsPerConnection: Number(opts.spc) })
    sinks = ls.map(l => async (parts) => l.send(parts))
    stop = async () => { await node.stop() }
  }
  process.send('ready')
  await next() // go
  const cpu0 = process.cpuUsage()
  const perLane = Math.ceil(total / lanes / frameSize)
  let chunkId = 0
  await Promise.all(sinks.map(async (sink, li) => {
    for (let i = 0; i < perLane; i++) {
      const payload = pool[(i + li) % pool.length]
      await sink(encodeFrame({ type: FrameType.Data, round: 1, chunkId: chunkId++, area: Area.Memory, runs: [{ start: i * 256, count: 256 }], payload }))
    }
  }))
  await next() // report
  process.send({ cpu: cpuSeconds(cpu0) })
  await next() // exit
  await stop()
  process.exit(0)
}
