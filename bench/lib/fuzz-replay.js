#!/usr/bin/env node
// Replays inputs from a fuzz run against a fresh `shoal node`, to turn a finding into a reproducer:
//   node bench/lib/fuzz-replay.js <migrate|lane|blocks> <hex> [<hex> ...]   (one stream, parts in order)
//   REPEAT=n  sends the same stream n times, one after another.
// Prints the node's answers, its RSS (idle, max over ~3 s after, VmHWM), whether it survived, and
// how long GET /status took meanwhile.
import '@shoal/libp2p'
import { createShoalLibp2p } from '@shoal/libp2p'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { decodeFrame, FrameDecoder, FrameType } from '@shoal/core'
import { procStatusMb, startTarget } from './fuzz-target.js'
import { sendControl } from './fuzz-control.js'

const protocols = { migrate: '/shoal/migrate/1.0.0', lane: '/shoal/lane/1.0.0', blocks: '/shoal/blocks/1.0.0' }
const [which, ...hex] = process.argv.slice(2)
if (protocols[which] == null || hex.length === 0) {
  console.error('usage: node bench/lib/fuzz-replay.js <migrate|lane|blocks> <hex> [<hex> ...]')
  process.exit(2)
}
const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))
const privateKey = await generateKeyPair('Ed25519')
let exited
const target = await startTarget({ allow: peerIdFromPrivateKey(privateKey).toString(), onExit: (e) => { exited = e } })
try {
  const libp2p = await createShoalLibp2p({ privateKey, listen: [] })
  await libp2p.start()
  const conn = await libp2p.dial(multiaddr(`${target.addrs[0]}`))
  await sleep(1500)
  const idle = procStatusMb(target.pid)
  let max = idle
  let statusMs = 0
  const answers = []
  const sampler = setInterval(() => { max = Math.max(max, procStatusMb(target.pid) ?? 0) }, 20)
  const probe = (async () => { const t = performance.now(); await sendControl(target.controlSocket, { method: 'GET', path: '/status', body: '' }); statusMs = performance.now() - t })()
  for (let r = 0; r < Number(process.env.REPEAT ?? 1); r++) {
    const stream = await conn.newStream(protocols[which])
    const dec = new FrameDecoder({ maxFrameSize: 2 ** 26 })
    stream.addEventListener('message', (evt) => {
      const d = evt.data
      if (d instanceof Uint8Array) dec.push(d); else for (const c of d) dec.push(c)
      for (let f = dec.next(); f != null; f = dec.next()) {
        try { const fr = decodeFrame(f); answers.push(fr.type === FrameType.Abort ? `ABORT ${fr.code}: ${fr.message}` : FrameType[fr.type]) } catch (err) { answers.push(`undecodable: ${err.message}`) }
      }
    })
    for (const h of hex) stream.send(Buffer.from(h, 'hex'))
    await sleep(500)
    await Promise.race([stream.close().catch(() => {}), sleep(1000)])
  }
  await Promise.race([probe, sleep(10_000)])
  await sleep(2500)
  clearInterval(sampler)
  console.log(JSON.stringify({
    answers, rss_idle_mb: idle, rss_max_mb: max, rss_hwm_mb: procStatusMb(target.pid, 'VmHWM'), status_ms: Math.round(statusMs),
    node: exited == null ? 'alive' : `exited ${exited.code ?? exited.signal}`, stderr: exited?.stderr?.slice(-5)
  }, null, 2))
  await libp2p.stop()
} finally {
  target.cleanup()
}
process.exit(0)
