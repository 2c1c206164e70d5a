// `pnpm bench fuzz`: a hostile, allow-listed peer against a real `shoal node` process.
//
// ≥ 10^5 inputs by default (SHOAL_FUZZ_INPUTS), reproducible from SHOAL_FUZZ_SEED: generated and
// mutated frames on the wire protocols (migrate, lane, blocks, capacity, capacity-announce), over several connections with many streams each,
// then hostile requests to the control API. Phases:
//   refusal  — migrate / lane / blocks streams carrying nothing a node may accept (invalid or
//              absurd HELLOs, frames out of order, truncated, huge length prefixes, random bytes),
//              plus absurd-size HELLOs (512 GiB memory, 1 TiB cache) one at a time;
//   sessions — small HELLOs a node may accept, then hostile data and control frames on them;
//   control  — HTTP on <dataDir>/control.sock.
// Sampled throughout: the node's RSS (/proc/<pid>/status), its process tree's RSS, the bytes
// under its data and shm dirs (du, apparent and allocated) and the latency of GET /status.
// Targets: 0 crashes, 0 bytes written by refused sessions, RSS never above 2x idle.
// Writes bench/results/fuzz.json. Not part of CI.
import '@shoal/libp2p'
import { createShoalLibp2p } from '@shoal/libp2p'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { decodeFrame, FrameDecoder, FrameType } from '@shoal/core'
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { printTable, writeResults, resultsDir } from './lib/harness.js'
import { createPrng } from './lib/fuzz-prng.js'
import {
  absurdHello, acceptableHello, blocksScript, FUZZ_VOLUME, laneRefusalScript, migrateRefusalScript,
  sessionControlFrame, sessionDataFrame, volumeContent, capacityScript
} from './lib/fuzz-frames.js'
import { controlRequest, sendControl, sendRawHttp } from './lib/fuzz-control.js'
import { descendants, diskUsage, procStatusMb, startTarget } from './lib/fuzz-target.js'

const MIGRATE = '/shoal/migrate/1.0.0'
const LANE = '/shoal/lane/1.0.0'
const BLOCKS = '/shoal/blocks/1.0.0'
const CAPACITY = '/shoal/capacity/1.0.0'
const ANNOUNCE = '/shoal/capacity-announce/1.0.0'
const TiB = 2 ** 40

const seed = Number(process.env.SHOAL_FUZZ_SEED ?? 1) >>> 0
const totalInputs = Number(process.env.SHOAL_FUZZ_INPUTS ?? 100_000)
const connections = Number(process.env.SHOAL_FUZZ_CONNECTIONS ?? 4)
const streamsPerConnection = Math.min(24, Number(process.env.SHOAL_FUZZ_STREAMS ?? 24)) // < libp2p's 32 inbound per connection
const absurdCount = Number(process.env.SHOAL_FUZZ_ABSURD ?? 12)
// Largest absurd HELLO (memory + cache). Today's node allocates ~3 GB for 1 TiB: more could take
// this shared machine down. Raise it once admission control refuses such HELLOs up front.
const absurdMax = Number(process.env.SHOAL_FUZZ_ABSURD_MAX ?? 1.5 * TiB)
// Stop sending absurd HELLOs if the node's RSS passes this (MB): a guard for the machine.
const rssGuardMb = Number(process.env.SHOAL_FUZZ_RSS_GUARD_MB ?? 6000)
const share = { migrate: 0.25, lane: 0.15, blocks: 0.20, capacity: 0.01, announce: 0.04, session: 0.15, control: 0.20 }

process.on('SIGINT', () => process.exit(130))
process.on('SIGTERM', () => process.exit(143))

/** Deterministic per-script generator: script i of a phase depends only on (seed, phase, i). */
const scriptRng = (phase, i) => createPrng((seed * 0x9e3779b1 + [...phase].reduce((h, c) => (h * 31 + c.charCodeAt(0)) >>> 0, 7) * 0x85ebca6b + i * 0xc2b2ae35) >>> 0)
const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms).unref?.())

// ---- the node and its fuzzer peer -------------------------------------------------------------

const privateKey = await generateKeyPair('Ed25519')
const fuzzerId = peerIdFromPrivateKey(privateKey).toString()
const crashes = []
let phase = 'setup'
const recent = { migrate: [], lane: [], blocks: [], capacity: [], announce: [], session: [], control: [] }
const remember = (proto, item) => { const r = recent[proto]; r.push(item); if (r.length > 32) r.shift() }
let restarting

const target = await startTarget({
  allow: fuzzerId,
  onExit: ({ code, signal, stderr }) => {
    // A crash: keep what was last sent as the reproducer, then start the node again on the same dirs.
    const n = crashes.length + 1
    const file = join(resultsDir, `fuzz-crash-${n}.json`)
    const last = Object.fromEntries(Object.entries(recent).map(([k, v]) => [k, v.map(s => ({ ...s, parts: s.parts?.map(p => Buffer.from(p).toString('hex')) }))]))
    crashes.push({ phase, code, signal, at_s: +((performance.now() - t0) / 1000).toFixed(1), stderr: stderr.slice(-15), reproducer: file })
    try { writeFileSync(file, JSON.stringify({ seed, phase, code, signal, stderr, last }, null, 2)) } catch {}
    console.error(`node exited during ${phase} (${code ?? signal}); last inputs in ${file}; restarting`)
    restarting = target.restart().then((info) => { Object.assign(nodeInfo, info) }).catch((err) => { console.error(`restart failed: ${err.message}`) }).finally(() => { restarting = undefined })
  }
})
const nodeInfo = { pid: target.pid, peerId: target.peerId, addrs: target.addrs }
const t0 = performance.now()

const libp2p = await createShoalLibp2p({ privateKey, listen: [] })
await libp2p.start()
process.on('exit', () => { void libp2p.stop() })

/** Connection i (of `connections`), dialled again when it died; dials are serialized (forced dials to one peer merge). */
const pool = []
let dialing = Promise.resolve()
async function conn (i) {
  const c = pool[i]
  if (c != null && c.status === 'open') return c
  if (restarting != null) await restarting
  const next = dialing.then(async () => {
    if (pool[i] != null && pool[i].status === 'open') return pool[i]
    pool[i] = await libp2p.dial(multiaddr(`${nodeInfo.addrs[0].replace(/\/p2p\/.*$/, '')}/p2p/${nodeInfo.peerId}`), { force: true, signal: AbortSignal.timeout(10_000) })
    return pool[i]
  })
  dialing = next.catch(() => {})
  return await next
}

// ---- measurements -------------------------------------------------------------------------------

const dirs = [target.dataDir, target.shmDir]
const samples = { rss: [], disk: [] }
const byPhase = {}
const phaseStat = (p) => (byPhase[p] ??= { rss_max_mb: 0, tree_rss_max_mb: 0, disk_peak_apparent: 0, disk_peak_allocated: 0 })
let diskBase = { apparent: 0, allocated: 0 }
let statusMaxMs = 0
let stopSampling = false
const sampler = (async () => {
  let tick = 0
  while (!stopSampling) {
    const rss = procStatusMb(nodeInfo.pid)
    if (rss != null) {
      samples.rss.push(rss)
      const s = phaseStat(phase)
      if (rss > s.rss_max_mb) {
        // What the peak is made of: the heap and buffers (anon), mapped tmpfs files (shmem), code (file).
        s.rss_max_mb = rss
        s.rss_max_parts_mb = Object.fromEntries(['RssAnon', 'RssShmem', 'RssFile'].map(f => [f, +(procStatusMb(nodeInfo.pid, f) ?? 0).toFixed(1)]))
      }
    }
    if (tick++ % 10 === 0) {
      const tree = [nodeInfo.pid, ...descendants(nodeInfo.pid)].reduce((n, p) => n + (procStatusMb(p) ?? 0), 0)
      const d = await diskUsage(dirs)
      samples.disk.push({ phase, ...d })
      const s = phaseStat(phase)
      s.tree_rss_max_mb = Math.max(s.tree_rss_max_mb, tree)
      s.disk_peak_apparent = Math.max(s.disk_peak_apparent, d.apparent - diskBase.apparent)
      s.disk_peak_allocated = Math.max(s.disk_peak_allocated, d.allocated - diskBase.allocated)
    }
    await sleep(100)
  }
})()
// The event loop's responsiveness: GET /status once a second (not counted as an input).
const statusProbe = (async () => {
  while (!stopSampling) {
    const t = performance.now()
    await sendControl(target.controlSocket, { method: 'GET', path: '/status', body: '' }, 60_000)
    statusMaxMs = Math.max(statusMaxMs, performance.now() - t)
    await sleep(1000)
  }
})()

// ---- streams ------------------------------------------------------------------------------------

const proto = {}
const protoStat = (name) => (proto[name] ??= { streams: 0, inputs: 0, delivered: 0, open_failed: 0, replies: {}, examples: {} })
/** Counts an answer; keeps the first script that drew each unusual answer as its reproducer. */
const tally = (st, key, script) => {
  st.replies[key] = (st.replies[key] ?? 0) + 1
  if (script != null && st.examples[key] == null && /INTERNAL|undecodable|bad-reply/.test(key)) {
    st.examples[key] = { label: script.label, parts_hex: script.parts.map(p => Buffer.from(p).subarray(0, 512).toString('hex')) }
  }
}

/**
 * Runs one script on a new stream: sends its parts in order (each part one input), watches what
 * the node answers, then ends the stream as the script says. Resolves with the frames received.
 */
async function runStream (connection, protocol, script, st, { answerMs = 250, onFrame } = {}) {
  st.streams++
  st.inputs += script.parts.length
  let stream
  try {
    stream = await connection.newStream(protocol, { maxOutboundStreams: 256, signal: AbortSignal.timeout(10_000) })
  } catch {
    st.open_failed++
    return { frames: [] }
  }
  const dec = new FrameDecoder({ maxFrameSize: 64 * 2 ** 20 })
  const frames = []
  let closed = false
  let wake
  stream.addEventListener('message', (evt) => {
    const data = evt.data
    try {
      if (data instanceof Uint8Array) dec.push(data); else for (const c of data) dec.push(c)
      for (let f = dec.next(); f != null; f = dec.next()) {
        let frame
        try { frame = decodeFrame(f) } catch { tally(st, 'undecodable-reply'); continue }
        frames.push(frame)
        tally(st, frame.type === FrameType.Abort ? `ABORT ${frame.code}` : FrameType[frame.type], script)
        onFrame?.(frame)
      }
    } catch { tally(st, 'bad-reply-framing') }
    wake?.()
  })
  stream.addEventListener('close', () => { closed = true; wake?.() })
  for (const p of script.parts) {
    if (closed || stream.writeStatus !== 'writable') break
    try {
      const ok = stream.send(p)
      st.delivered++
      if (!ok) await Promise.race([stream.onDrain({ signal: AbortSignal.timeout(5000) }).catch(() => {}), sleep(5000)])
    } catch { break }
  }
  const until = performance.now() + answerMs
  while (!closed && frames.length === 0 && performance.now() < until) {
    await Promise.race([new Promise(resolve => { wake = resolve }), sleep(Math.max(1, until - performance.now()))])
  }
  if (frames.length === 0) tally(st, closed ? 'closed-without-frame' : 'no-answer')
  if (!closed) {
    if (script.end === 'abort') stream.abort(new Error('fuzz'))
    else {
      await Promise.race([stream.close().catch(() => {}), sleep(1000)])
      if (stream.status !== 'closed') stream.abort(new Error('fuzz: close timed out'))
    }
  }
  return { frames, stream }
}

/**
 * Runs jobs i = 0, 1, ... until `budget` inputs are planned, `workers` at a time spread over the connections.
 * `make(i)` is synchronous (it reserves the job's inputs before anything is awaited, so the
 * budget holds under concurrency) and returns `{ n, run(connectionIndex) }`.
 */
async function runPhase (budget, workers, make) {
  let planned = 0
  let next = 0
  const worker = async (w) => {
    while (planned < budget) {
      const job = make(next++)
      planned += job.n
      await job.run(w % connections)
    }
  }
  await Promise.all(Array.from({ length: workers }, (_, w) => worker(w)))
  return planned
}

// ---- setup: a replica volume the blocks protocol can serve -------------------------------------

const scratch = mkdtempSync(join(tmpdir(), 'shoal-fuzz-scratch-'))
process.on('exit', () => rmSync(scratch, { recursive: true, force: true }))
const volume = volumeContent(createPrng(seed), 16, 4096)
const volumeFile = join(scratch, 'volume.img')
writeFileSync(volumeFile, volume.data)
const imported = await sendControl(target.controlSocket, { method: 'POST', path: '/volumes', body: JSON.stringify({ id: FUZZ_VOLUME, path: volumeFile, blockSize: 4096 }) })
if (imported.status !== 200) console.error(`could not import the fuzz volume (${imported.status} ${imported.code}): block requests hit an unknown volume`)

for (let i = 0; i < connections; i++) await conn(i)
await sleep(2000)
const idle = []
for (let i = 0; i < 10; i++) { idle.push(procStatusMb(nodeInfo.pid)); await sleep(100) }
const rssIdle = idle.sort((a, b) => a - b)[5]
diskBase = await diskUsage(dirs)
console.log(`node pid ${nodeInfo.pid}, idle RSS ${rssIdle.toFixed(1)} MB, seed ${seed}, ${totalInputs} inputs over ${connections} connections x ${streamsPerConnection} streams`)

// ---- phase 1: refusal ------------------------------------------------------------------------------

const absurd = { sent: 0, accepted: 0, refused: 0, no_answer: 0, max_answer_ms: 0, skipped_rss_guard: 0, answers: {} }
async function absurdWorker () {
  for (let i = 0; i < absurdCount && phase === 'refusal'; i++) {
    if ((procStatusMb(nodeInfo.pid) ?? 0) > rssGuardMb) { absurd.skipped_rss_guard++; await sleep(2000); continue }
    const rng = scriptRng('absurd', i)
    const h = absurdHello(rng, absurdMax)
    const script = { label: h.label, parts: [h.bytes], end: 'close' }
    remember('migrate', script)
    const t = performance.now()
    let c
    try { c = await conn(i % connections) } catch { continue }
    const { frames } = await runStream(c, MIGRATE, script, protoStat('migrate-absurd'), { answerMs: 30_000 })
    absurd.sent++
    absurd.max_answer_ms = Math.max(absurd.max_answer_ms, Math.round(performance.now() - t))
    const f = frames[0]
    const key = f == null ? 'none' : f.type === FrameType.Abort ? `ABORT ${f.code}` : FrameType[f.type]
    absurd.answers[`${h.label}: ${key}`] = (absurd.answers[`${h.label}: ${key}`] ?? 0) + 1
    if (f?.type === FrameType.Accept) absurd.accepted++
    else if (f?.type === FrameType.Abort) absurd.refused++
    else absurd.no_answer++
    await sleep(500)
  }
}

phase = 'refusal'
const tRefusal = performance.now()
const scriptRunner = (protoName, protocol, gen) => (i) => {
  const script = gen(scriptRng(protoName, i))
  return {
    n: script.parts.length,
    async run (ci) {
      remember(protoName, script)
      let c
      try { c = await conn(ci) } catch { protoStat(protoName).open_failed++; await sleep(200); return }
      await runStream(c, protocol, script, protoStat(protoName))
    }
  }
}
const absurdDone = absurdWorker()
const streamsEach = Math.max(1, Math.floor(streamsPerConnection / 3))
await Promise.all([
  runPhase(totalInputs * share.migrate, connections * streamsEach, scriptRunner('migrate', MIGRATE, migrateRefusalScript)),
  runPhase(totalInputs * share.lane, connections * streamsEach, scriptRunner('lane', LANE, laneRefusalScript)),
  runPhase(totalInputs * share.blocks, connections * streamsEach, scriptRunner('blocks', BLOCKS, (rng) => blocksScript(rng, volume))),
  // Two streams per connection at most on each (the node's bound): one runner per connection.
  runPhase(totalInputs * share.capacity, connections, scriptRunner('capacity', CAPACITY, capacityScript)),
  runPhase(totalInputs * share.announce, connections, scriptRunner('announce', ANNOUNCE, capacityScript))
])
await absurdDone
const refusalSecs = (performance.now() - tRefusal) / 1000
await sleep(3000) // refused sessions end and clean up
const afterRefusal = await diskUsage(dirs)

// ---- phase 2: accepted sessions, then hostile frames on them ------------------------------------

phase = 'sessions'
const tSessions = performance.now()
const sessions = { attempted: 0, accepted: 0, refused: {}, lanes: 0 }
const sessionWidth = Number(process.env.SHOAL_FUZZ_SESSIONS ?? 2)
await runPhase(totalInputs * share.session, sessionWidth, (i) => {
  // The whole session is planned up front (deterministic from the seed): HELLO, data lanes, control frames.
  const rng = scriptRng('session', i)
  const { frame: hello, bytes } = acceptableHello(rng)
  let chunk = 1
  const lanes = Array.from({ length: rng.range(0, 3) }, (_, l) => {
    const parts = [Buffer.from(encodeLaneHello(hello.sessionId, l))]
    for (let k = rng.int(20); k > 0; k--) parts.push(sessionDataFrame(rng, hello, chunk++).bytes)
    return { label: 'session-lane', parts, end: rng.chance(0.7) ? 'close' : 'abort' }
  })
  const control = Array.from({ length: rng.int(6) }, () => sessionControlFrame(rng, hello).bytes)
  const endAbort = rng.chance(0.5)
  const n = 1 + control.length + lanes.reduce((k, l) => k + l.parts.length, 0)
  return {
    n,
    async run (ci) {
      const st = protoStat('session')
      sessions.attempted++
      let c
      try { c = await conn(ci) } catch { return }
      remember('session', { label: 'session', parts: [bytes, ...control, ...lanes.flatMap(l => l.parts)] })
      let answered
      const gotAnswer = new Promise(resolve => { answered = resolve })
      const opened = await openControl(c, bytes, st, (f) => { if (f.type === FrameType.Accept || f.type === FrameType.Abort) answered(f) })
      if (opened == null) return
      const first = await Promise.race([gotAnswer, sleep(15_000)])
      if (first?.type !== FrameType.Accept) {
        const why = first == null ? 'no answer' : `ABORT ${first.code}`
        sessions.refused[why] = (sessions.refused[why] ?? 0) + 1
        opened.abort(new Error('fuzz'))
        if (first?.code === 'ERR_BUSY') await sleep(500)
        return
      }
      sessions.accepted++
      sessions.lanes += lanes.length
      st.inputs += control.length
      await Promise.all([
        ...lanes.map(async (l, k) => { try { await runStream(await conn((ci + k + 1) % connections), LANE, l, protoStat('session-lane'), { answerMs: 500 }) } catch {} }),
        (async () => {
          for (const p of control) {
            if (opened.writeStatus !== 'writable') break
            try { opened.send(p); st.delivered++ } catch { break }
            await sleep(rng.int(20))
          }
        })()
      ])
      await sleep(200)
      if (endAbort) opened.abort(new Error('fuzz')); else await Promise.race([opened.close().catch(() => {}), sleep(1000)])
    }
  }
})
const sessionsSecs = (performance.now() - tSessions) / 1000
await sleep(3000)
const afterSessions = await diskUsage(dirs)

function encodeLaneHello (sessionId, lane) {
  const b = Buffer.alloc(24)
  b.writeUInt32LE(20, 0); b[4] = 1; b[5] = FrameType.LaneHello
  Buffer.from(sessionId).copy(b, 6); b.writeUInt16LE(lane, 22)
  return b
}

/** Opens a control stream, sends the HELLO, and leaves it open; frames received go to `onFrame`. */
async function openControl (c, hello, st, onFrame) {
  st.streams++; st.inputs++
  let stream
  try { stream = await c.newStream(MIGRATE, { maxOutboundStreams: 256, signal: AbortSignal.timeout(10_000) }) } catch { st.open_failed++; return undefined }
  const dec = new FrameDecoder({ maxFrameSize: 64 * 2 ** 20 })
  stream.addEventListener('message', (evt) => {
    try {
      const data = evt.data
      if (data instanceof Uint8Array) dec.push(data); else for (const x of data) dec.push(x)
      for (let f = dec.next(); f != null; f = dec.next()) {
        try { const frame = decodeFrame(f); tally(st, frame.type === FrameType.Abort ? `ABORT ${frame.code}` : FrameType[frame.type]); onFrame(frame) } catch { tally(st, 'undecodable-reply') }
      }
    } catch { tally(st, 'bad-reply-framing') }
  })
  try { stream.send(hello); st.delivered++ } catch { return undefined }
  return stream
}

// ---- phase 3: control API ------------------------------------------------------------------------

phase = 'control'
const tControl = performance.now()
const controlStats = { requests: 0, raw: 0, status: {}, codes: {}, server_errors: {} }
const cstate = { small: [], absurd: [], volumeFile, selfPeerId: nodeInfo.peerId }
let cnext = 0
const controlBudget = totalInputs * share.control
await Promise.all(Array.from({ length: 8 }, async () => {
  while (cnext < controlBudget) {
    const i = cnext++
    const rng = scriptRng('control', i)
    if (rng.chance(0.02)) { controlStats.raw++; await sendRawHttp(target.controlSocket, rng); continue }
    const req = controlRequest(rng, cstate)
    remember('control', { label: `${req.method} ${req.path}`, body: req.body.slice(0, 2000) })
    const res = await sendControl(target.controlSocket, req)
    if (res.status === -1) { controlStats.client_refused = (controlStats.client_refused ?? 0) + 1; continue }
    controlStats.requests++
    controlStats.status[res.status] = (controlStats.status[res.status] ?? 0) + 1
    if (res.code != null) controlStats.codes[res.code] = (controlStats.codes[res.code] ?? 0) + 1
    if (res.status >= 500 || res.status === 0) {
      const k = `${req.route} ${res.status} ${res.code}`
      controlStats.server_errors[k] ??= { count: 0, example: { method: req.method, path: req.path.slice(0, 200), body: req.body.slice(0, 300) } }
      controlStats.server_errors[k].count++
    }
  }
}))
const controlSecs = (performance.now() - tControl) / 1000

// ---- wrap up ---------------------------------------------------------------------------------------

phase = 'settle'
await sleep(3000)
const final = await diskUsage(dirs)
const hwm = procStatusMb(nodeInfo.pid, 'VmHWM')
stopSampling = true
await Promise.all([sampler, statusProbe])
phase = 'stop'
const stopT = performance.now()
await target.stop()
const stopMs = Math.round(performance.now() - stopT)
await libp2p.stop()

const rssMax = Math.max(...samples.rss, 0)
const refusal = phaseStat('refusal')
const refusalDisk = {
  peak_apparent: refusal.disk_peak_apparent,
  peak_allocated: refusal.disk_peak_allocated,
  after_apparent: afterRefusal.apparent - diskBase.apparent,
  after_allocated: afterRefusal.allocated - diskBase.allocated
}
const bytesWrittenByRefused = Math.max(0, ...Object.values(refusalDisk))
const inputs = Object.entries(proto).reduce((n, [k, s]) => n + (k === 'migrate-absurd' ? s.inputs : s.inputs), 0) + controlStats.requests + controlStats.raw
const delivered = Object.values(proto).reduce((n, s) => n + s.delivered, 0) + controlStats.requests + controlStats.raw
const secs = (performance.now() - t0) / 1000

const result = {
  seed,
  inputs,
  inputs_delivered: delivered,
  crashes: crashes.length,
  rss_idle_mb: +rssIdle.toFixed(1),
  rss_max_mb: +rssMax.toFixed(1),
  rss_hwm_mb: hwm != null ? +hwm.toFixed(1) : null,
  rss_max_over_idle: +(rssMax / rssIdle).toFixed(2),
  bytes_written_by_refused: bytesWrittenByRefused,
  bytes_written_by_refused_detail: refusalDisk,
  bytes_left_after_sessions: { apparent: afterSessions.apparent - diskBase.apparent, allocated: afterSessions.allocated - diskBase.allocated },
  bytes_after_run: { apparent: final.apparent - diskBase.apparent, allocated: final.allocated - diskBase.allocated, note: 'includes images the control API created' },
  targets_met: { crashes: crashes.length === 0, bytes_written_by_refused: bytesWrittenByRefused === 0, rss: rssMax <= 2 * rssIdle },
  per_protocol: {
    migrate: { ...protoStat('migrate') },
    migrate_absurd: { ...protoStat('migrate-absurd'), ...absurd },
    lane: { ...protoStat('lane') },
    blocks: { ...protoStat('blocks') },
    capacity: { ...protoStat('capacity') },
    announce: { ...protoStat('announce') },
    session_control: { ...protoStat('session'), ...sessions },
    session_lanes: { ...protoStat('session-lane') },
    control_api: controlStats
  },
  by_phase: Object.fromEntries(Object.entries(byPhase).map(([k, v]) => [k, { ...v, rss_max_mb: +v.rss_max_mb.toFixed(1), tree_rss_max_mb: +v.tree_rss_max_mb.toFixed(1) }])),
  phase_seconds: { refusal: +refusalSecs.toFixed(1), sessions: +sessionsSecs.toFixed(1), control: +controlSecs.toFixed(1) },
  status_latency_max_ms: Math.round(statusMaxMs),
  stop_ms: stopMs,
  crash_details: crashes,
  duration_s: +secs.toFixed(1),
  inputs_per_s: Math.round(inputs / secs),
  config: { connections, streamsPerConnection, absurdCount, absurdMax, rssGuardMb, share }
}

const rows = [
  ...['migrate', 'migrate-absurd', 'lane', 'blocks', 'capacity', 'announce', 'session', 'session-lane'].map(k => {
    const s = protoStat(k)
    const top = Object.entries(s.replies).sort((a, b) => b[1] - a[1]).slice(0, 3).map(([r, n]) => `${r}:${n}`).join(' ')
    return { protocol: k, streams: s.streams, inputs: s.inputs, delivered: s.delivered, open_failed: s.open_failed, top_replies: top }
  }),
  { protocol: 'control-api', streams: '-', inputs: controlStats.requests + controlStats.raw, delivered: controlStats.requests + controlStats.raw, open_failed: controlStats.status[0] ?? 0, top_replies: Object.entries(controlStats.status).map(([s, n]) => `${s}:${n}`).join(' ') }
]
printTable(rows)
console.log('')
printTable([{
  seed, inputs, crashes: crashes.length, rss_idle_mb: result.rss_idle_mb, rss_max_mb: result.rss_max_mb, 'max/idle': result.rss_max_over_idle,
  bytes_written_by_refused: bytesWrittenByRefused, absurd_accepted: `${absurd.accepted}/${absurd.sent}`, status_max_ms: result.status_latency_max_ms, secs: result.duration_s
}])
writeResults('fuzz', result)
target.cleanup()
process.exit(0)
