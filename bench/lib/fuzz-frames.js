// Inputs for `pnpm bench fuzz`: generated frames (valid frames with hostile fields, frames out of
// order, truncated, with huge or short length prefixes, with a wrong version, random bytes) and
// byte-level mutations of valid frames, built with @shoal/core's codec. A "script" is what one
// stream carries: `parts` (each part one input, sent in order) and how the stream ends.
import { createHash } from 'node:crypto'
import { Area, encodeFrameBytes, FrameType, MAX_FRAME_SIZE, PROTOCOL_VERSION } from '@shoal/core'

const KiB = 1024
const MiB = 1024 * KiB
const GiB = 1024 * MiB
const TiB = 1024 * GiB

/** A driver no node has: a HELLO naming it must be refused before anything is staged. */
export const UNKNOWN_DRIVER = 'fuzz-no-such-driver'
/** The replica volume the fuzz node serves (imported through the control API at setup). */
export const FUZZ_VOLUME = 'fuzzvol'

// ---- raw encoders (fields the codec's encoder would refuse) ----------------------------------

function header (bodyLength, type, version = PROTOCOL_VERSION) {
  const h = Buffer.alloc(6)
  h.writeUInt32LE(bodyLength + 2, 0)
  h[4] = version
  h[5] = type
  return h
}

function str (s, lengthOverride) {
  const b = Buffer.isBuffer(s) ? s : Buffer.from(s, 'utf8')
  const n = Buffer.alloc(4)
  n.writeUInt32LE(lengthOverride ?? b.length, 0)
  return Buffer.concat([n, b])
}

/**
 * A HELLO with any field values, u64 fields given as BigInt so that values the codec refuses
 * (above 2^53, "negative" two's complement) can be sent.
 */
export function rawHello (f) {
  const body = Buffer.concat([
    f.sessionId,
    str(f.image, f.imageLength),
    u32(f.pageSize),
    u64(f.memorySize),
    u32(f.blockSize),
    u64(f.cacheSize),
    u16(f.lanes),
    str(f.driver),
    str(f.driverConfig, f.configLength)
  ])
  return Buffer.concat([header(body.length, FrameType.Hello), body])
}
function u16 (v) { const b = Buffer.alloc(2); b.writeUInt16LE(v & 0xffff, 0); return b }
function u32 (v) { const b = Buffer.alloc(4); b.writeUInt32LE(Number(BigInt.asUintN(32, BigInt(v))), 0); return b }
function u64 (v) { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)), 0); return b }

// ---- building blocks -------------------------------------------------------------------------

const sizesThatMustBeRefused = [
  // What the issue measured: 512 GiB memory (RSS 285 MB → 1.2 GB), 1 TiB cache (3 GB peak).
  { memorySize: 512 * GiB, cacheSize: 0 },
  { memorySize: 4 * MiB, cacheSize: 1 * TiB },
  { memorySize: 512 * GiB, cacheSize: 1 * TiB },
  { memorySize: 64 * GiB, cacheSize: 512 * GiB }
]

/** Hostile HELLO sizes, larger than this machine's RAM and shm dir (a node must refuse them). */
export function absurdHello (rng, maxBytes) {
  const sizes = sizesThatMustBeRefused.filter(s => s.memorySize + s.cacheSize <= maxBytes)
  const s = rng.pick(sizes.length > 0 ? sizes : [{ memorySize: maxBytes - (maxBytes % 4096), cacheSize: 0 }])
  return {
    label: `hello-absurd-${fmt(s.memorySize)}-${fmt(s.cacheSize)}`,
    bytes: Buffer.from(encodeFrameBytes({
      type: FrameType.Hello, sessionId: rng.bytes(16), image: `fuzz-absurd-${rng.u32()}`, pageSize: 4096, blockSize: 256 * KiB,
      memorySize: s.memorySize, cacheSize: s.cacheSize, lanes: rng.pick([1, 4, 256]), driver: 'synthetic', driverConfig: '{"rate":0,"recordRate":0}'
    }))
  }
}

function fmt (n) { return n >= TiB ? `${n / TiB}T` : n >= GiB ? `${n / GiB}G` : n >= MiB ? `${n / MiB}M` : String(n) }

/** A HELLO a node may accept: small synthetic image. */
export function acceptableHello (rng) {
  const pageSize = 4096
  const blockSize = rng.pick([64 * KiB, 256 * KiB])
  const frame = {
    type: FrameType.Hello,
    sessionId: rng.bytes(16),
    image: `fuzz-${rng.u32().toString(16)}`,
    pageSize,
    memorySize: pageSize * rng.pick([16, 64, 256, 1024]),
    blockSize,
    cacheSize: blockSize * rng.pick([0, 0, 1, 4]),
    lanes: rng.range(1, 4),
    driver: 'synthetic',
    driverConfig: '{"rate":0,"recordRate":0}'
  }
  return { frame, bytes: Buffer.from(encodeFrameBytes(frame)) }
}

/** A well-formed HELLO naming a driver the node does not have. */
function unknownDriverHello (rng) {
  const { frame } = acceptableHello(rng)
  return Buffer.from(encodeFrameBytes({ ...frame, driver: UNKNOWN_DRIVER, memorySize: rng.pick([frame.memorySize, 512 * GiB]) }))
}

/** A HELLO with one field the codec or the node must refuse. */
function invalidHello (rng) {
  const f = {
    sessionId: rng.bytes(16), image: `fuzz-bad-${rng.u32()}`, pageSize: 4096, memorySize: 64 * KiB, blockSize: 64 * KiB,
    cacheSize: 0, lanes: 1, driver: 'synthetic', driverConfig: '{}'
  }
  const which = rng.pick(['pageSize', 'memorySize', 'blockSize', 'cacheSize', 'lanes', 'driver', 'driverConfig', 'image', 'sessionId', 'lengths'])
  switch (which) {
    case 'pageSize': f.pageSize = rng.pick([0, 1, 3, 511, 4095, 2 * MiB, 0x80000000, 0xffffffff]); break
    case 'memorySize': f.memorySize = rng.pick([4097n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n, -4096n, 4096n * (2n ** 32n)]); break
    case 'blockSize': f.blockSize = rng.pick([0, 4095, 3 * 4096, 8 * MiB, 0xffffffff]); break
    case 'cacheSize': f.cacheSize = rng.pick([1n, 2n ** 63n, 2n ** 64n - 1n, -65536n]); break
    case 'lanes': f.lanes = rng.pick([0, 257, 65535]); break
    case 'driver': f.driver = rng.pick(['', '../synthetic', '.synthetic', 'synth etic', 'ü', 'x'.repeat(129), UNKNOWN_DRIVER]); break
    case 'driverConfig': f.driver = UNKNOWN_DRIVER; f.driverConfig = rng.pick(['', 'not json', '{', '[1,2', '{"rate":NaN}', 'x'.repeat(70 * KiB)]); break
    case 'image': f.image = rng.pick(['', '.', '..', '.hidden', 'a/b', '../../etc', 'x'.repeat(129), 'bad\u0000name', 'ç']); break
    case 'sessionId': f.sessionId = rng.bytes(rng.pick([0, 8, 15])); f.driver = UNKNOWN_DRIVER; break
    case 'lengths': f.driver = UNKNOWN_DRIVER; if (rng.chance(0.5)) f.imageLength = rng.pick([0xffffffff, 200, 0]); else f.configLength = rng.pick([0xffffffff, 65537, 1]); break
  }
  return { label: `hello-invalid-${which}`, bytes: rawHello(f) }
}

const digest = (rng) => rng.bytes(32)

/** Any frame type, encoded validly (fields random within the codec's rules). */
export function anyValidFrame (rng) {
  const type = rng.range(1, 23)
  const frame = (() => {
    switch (type) {
      case FrameType.Hello: return { ...acceptableHello(rng).frame, driver: UNKNOWN_DRIVER }
      case FrameType.Accept: return { type, sessionId: rng.bytes(16) }
      case FrameType.LaneHello: return { type, sessionId: rng.bytes(16), lane: rng.int(65536) }
      case FrameType.Data: return { type, round: rng.u32(), chunkId: rng.u32(), area: rng.pick([Area.Memory, Area.Cache]), runs: [{ start: rng.int(1000), count: rng.range(1, 4) }], payload: rng.bytes(rng.int(8192)) }
      case FrameType.Ack: return { type, chunkIds: Array.from({ length: rng.range(1, 64) }, () => rng.u32()) }
      case FrameType.RoundEnd: return { type, round: rng.u32(), units: rng.u32(), bytes: rng.int(2 ** 40) }
      case FrameType.Pause: return { type, round: rng.u32() }
      case FrameType.DeviceState: return { type, state: rng.bytes(rng.int(4096)) }
      case FrameType.Verify: return { type, memoryDigest: digest(rng), cacheDigest: digest(rng) }
      case FrameType.VerifyResult: return { type, ok: rng.chance(0.5), memoryDigest: digest(rng), cacheDigest: digest(rng) }
      case FrameType.Commit: case FrameType.Committed: return { type }
      case FrameType.Abort: return { type, code: rng.pick(['ERR_X', 'ERR_INTERNAL', '']), message: 'fuzz' }
      case FrameType.BlockRequest: return { type, requestId: rng.u32(), volume: FUZZ_VOLUME, hashes: Array.from({ length: rng.range(1, 8) }, () => digest(rng)) }
      case FrameType.BlockData: return { type, requestId: rng.u32(), hash: digest(rng), data: rng.bytes(rng.int(4096)) }
      case FrameType.BlockMissing: return { type, requestId: rng.u32(), hash: digest(rng) }
      case FrameType.VolumeQuery: return { type, volume: rng.pick([FUZZ_VOLUME, 'nope']) }
      case FrameType.VolumeSummary: return { type, volume: FUZZ_VOLUME, blockSize: 4096, blockCount: 16, held: 16, hashesDigest: digest(rng), have: new Uint8Array(2) }
      case FrameType.VolumeHashesRequest: return { type, volume: FUZZ_VOLUME, start: rng.int(64), count: rng.range(1, 64) }
      case FrameType.VolumeHashes: return { type, volume: FUZZ_VOLUME, start: 0, hashes: rng.bytes(32 * rng.range(1, 8)) }
      case FrameType.CacheManifest: { const n = rng.range(1, 64); return { type, volume: FUZZ_VOLUME, start: 0, hashes: rng.bytes(32 * n), dirty: rng.bytes(Math.ceil(n / 8)), hot: rng.bytes(Math.ceil(n / 8)) } }
      case FrameType.CacheClaim: return { type, claimed: rng.bytes(rng.int(64)) }
      case FrameType.CacheStatus: return { type, done: rng.chance(0.5), need: rng.bytes(rng.int(16)), stats: '{}' }
    }
  })()
  return Buffer.from(encodeFrameBytes(frame))
}

/** Byte-level mutation of a valid frame; may keep the length field consistent (so the body is judged). */
export function mutateFrame (rng, src) {
  let b = Buffer.from(src)
  const kind = rng.pick(['set', 'flip', 'truncate', 'insert', 'delete', 'u32', 'u64', 'type', 'version', 'append'])
  switch (kind) {
    case 'set': b[rng.int(b.length)] = rng.int(256); break
    case 'flip': b[rng.int(b.length)] ^= 1 << rng.int(8); break
    case 'truncate': b = b.subarray(0, rng.int(b.length)); break
    case 'insert': { const i = rng.int(b.length + 1); b = Buffer.concat([b.subarray(0, i), rng.bytes(rng.range(1, 8)), b.subarray(i)]); break }
    case 'delete': { const i = rng.int(b.length); b = Buffer.concat([b.subarray(0, i), b.subarray(i + rng.range(1, 8))]); break }
    case 'u32': if (b.length >= 10) b.writeUInt32LE(rng.pick([0, 1, 0x7fffffff, 0x80000000, 0xffffffff, rng.u32()]), rng.range(6, b.length - 4)); break
    case 'u64': if (b.length >= 14) b.writeBigUInt64LE(rng.pick([0n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n, 512n * 2n ** 30n, 2n ** 40n]), rng.range(6, b.length - 8)); break
    case 'type': if (b.length > 5) b[5] = rng.int(256); break
    case 'version': if (b.length > 4) b[4] = rng.pick([0, 2, 255]); break
    case 'append': b = Buffer.concat([b, rng.bytes(rng.range(1, 64))]); break
  }
  if (b.length >= 4 && kind !== 'truncate' && rng.chance(0.7)) b.writeUInt32LE(b.length - 4, 0)
  return { label: `mutated-${kind}`, bytes: b }
}

/** Frame-level attacks that need no valid frame: length prefixes, short headers, random bytes. */
function framingAttack (rng) {
  switch (rng.int(5)) {
    case 0: { // huge length prefix, then a little of the promised body
      const n = rng.pick([0xffffffff, 0x80000000, MAX_FRAME_SIZE - 3, MAX_FRAME_SIZE + 1, 512 * MiB])
      const h = Buffer.alloc(4); h.writeUInt32LE(n, 0)
      return { label: 'length-huge', bytes: Buffer.concat([h, rng.bytes(rng.int(256))]) }
    }
    case 1: { // a frame just under the limit, but only part of it arrives
      const h = header(MAX_FRAME_SIZE - 6 - 64, rng.pick([FrameType.Data, FrameType.DeviceState, FrameType.BlockData]))
      return { label: 'length-big-partial', bytes: Buffer.concat([h, rng.bytes(rng.range(0, 64 * KiB))]) }
    }
    case 2: { const h = Buffer.alloc(4); h.writeUInt32LE(rng.int(2), 0); return { label: 'length-short', bytes: Buffer.concat([h, rng.bytes(rng.int(8))]) } }
    case 3: return { label: 'random', bytes: rng.bytes(rng.range(1, 512)) }
    default: return { label: 'header-only', bytes: header(0, rng.int(256), rng.int(3)) }
  }
}

// ---- scripts per protocol --------------------------------------------------------------------

/** `/shoal/migrate/1.0.0` with nothing a node may accept: every session here must be refused. */
export function migrateRefusalScript (rng) {
  const kind = rng.weighted([[4, 'invalid-hello'], [3, 'mutated-hello'], [2, 'out-of-order'], [2, 'truncated'], [2, 'framing'], [1, 'double-hello'], [1, 'hello-then-junk']])
  const parts = []
  let label = kind
  switch (kind) {
    case 'invalid-hello': { const h = invalidHello(rng); label = h.label; parts.push(h.bytes); break }
    case 'mutated-hello': { const m = mutateFrame(rng, unknownDriverHello(rng)); label = `hello-${m.label}`; parts.push(m.bytes); break }
    case 'out-of-order': for (let i = rng.range(1, 6); i > 0; i--) parts.push(rng.chance(0.8) ? anyValidFrame(rng) : mutateFrame(rng, anyValidFrame(rng)).bytes); break
    case 'truncated': { const h = unknownDriverHello(rng); parts.push(h.subarray(0, rng.int(h.length))); break }
    case 'framing': { const a = framingAttack(rng); label = a.label; parts.push(a.bytes); break }
    case 'double-hello': parts.push(unknownDriverHello(rng), unknownDriverHello(rng)); break
    case 'hello-then-junk': parts.push(unknownDriverHello(rng)); for (let i = rng.range(1, 8); i > 0; i--) parts.push(anyValidFrame(rng)); break
  }
  return { label, parts, end: rng.chance(0.85) ? 'close' : 'abort' }
}

/** `/shoal/lane/1.0.0` for sessions that do not exist (or frames that are not a LANE_HELLO). */
export function laneRefusalScript (rng) {
  const kind = rng.weighted([[4, 'unknown-session'], [3, 'mutated-lane-hello'], [2, 'data-first'], [2, 'framing'], [1, 'any']])
  const laneHello = () => Buffer.from(encodeFrameBytes({ type: FrameType.LaneHello, sessionId: rng.bytes(16), lane: rng.int(65536) }))
  const parts = []
  let label = kind
  switch (kind) {
    case 'unknown-session': parts.push(laneHello()); for (let i = rng.int(8); i > 0; i--) parts.push(anyValidFrame(rng)); break
    case 'mutated-lane-hello': { const m = mutateFrame(rng, laneHello()); label = `lane-hello-${m.label}`; parts.push(m.bytes); break }
    case 'data-first': for (let i = rng.range(1, 4); i > 0; i--) parts.push(anyValidFrame(rng)); break
    case 'framing': { const a = framingAttack(rng); label = a.label; parts.push(a.bytes); break }
    case 'any': parts.push(mutateFrame(rng, anyValidFrame(rng)).bytes); break
  }
  return { label, parts, end: rng.chance(0.85) ? 'close' : 'abort' }
}

/** `/shoal/blocks/1.0.0`: queries and requests (many per stream), mutated and hostile ones among them. */
export function blocksScript (rng, volume) {
  const parts = []
  const n = rng.range(1, 40)
  const labels = new Set()
  for (let i = 0; i < n; i++) {
    const kind = rng.weighted([[3, 'query'], [4, 'request'], [2, 'hashes'], [3, 'mutated'], [1, 'summary-huge'], [1, 'wrong-type'], [1, 'framing']])
    labels.add(kind)
    const vol = rng.chance(0.8) ? FUZZ_VOLUME : rng.pick(['nope', 'x'.repeat(128), 'a'])
    const hash = () => (volume != null && rng.chance(0.6) ? rng.pick(volume.hashes) : digest(rng))
    const frame = {
      query: () => ({ type: FrameType.VolumeQuery, volume: vol }),
      request: () => ({ type: FrameType.BlockRequest, requestId: rng.u32(), volume: vol, hashes: Array.from({ length: rng.chance(0.05) ? 1024 : rng.range(1, 16) }, hash) }),
      hashes: () => ({ type: FrameType.VolumeHashesRequest, volume: vol, start: rng.pick([0, rng.int(64), 0xffffffff - rng.int(8)]), count: rng.pick([1, rng.range(1, 64), 65536]) })
    }
    switch (kind) {
      case 'query': case 'request': case 'hashes': parts.push(Buffer.from(encodeFrameBytes(frame[kind]()))); break
      case 'mutated': parts.push(mutateFrame(rng, Buffer.from(encodeFrameBytes(frame[rng.pick(['query', 'request', 'hashes'])]()))).bytes); break
      case 'summary-huge': {
        // A 56-byte VOLUME_SUMMARY whose "holds all" mode makes the decoder build a blockCount-bit bitmap.
        const b = Buffer.from(encodeFrameBytes({ type: FrameType.VolumeSummary, volume: 'v', blockSize: 4096, blockCount: 8, held: 8, hashesDigest: digest(rng), have: new Uint8Array(1) }))
        const count = rng.pick([2 ** 28, 2 ** 31, 0xffffffff])
        b.writeUInt32LE(count, 15); b.writeUInt32LE(count, 19)
        parts.push(b)
        break
      }
      case 'wrong-type': parts.push(anyValidFrame(rng)); break
      case 'framing': parts.push(framingAttack(rng).bytes); break
    }
  }
  return { label: [...labels].sort().join('+'), parts, end: rng.chance(0.85) ? 'close' : 'abort' }
}

// ---- follow-ups of an accepted session ---------------------------------------------------------

/** A data frame for an accepted session: valid (written to staging) or wrong in one way. */
export function sessionDataFrame (rng, hello, chunkId) {
  const area = hello.cacheSize > 0 && rng.chance(0.3) ? Area.Cache : Area.Memory
  const unit = area === Area.Memory ? hello.pageSize : hello.blockSize
  const units = (area === Area.Memory ? hello.memorySize : hello.cacheSize) / unit
  const start = rng.int(units)
  const count = rng.range(1, Math.min(units - start, area === Area.Memory ? 16 : 1))
  const fault = rng.weighted([[5, 'none'], [1, 'beyond'], [1, 'payload'], [1, 'area'], [1, 'round'], [1, 'mutate']])
  const frame = { type: FrameType.Data, round: rng.pick([1, 1, 2, 3]), chunkId, area, runs: [{ start, count }], payload: Buffer.alloc(count * unit, chunkId & 0xff) }
  if (fault === 'beyond') frame.runs = [{ start: units - 1 + rng.range(0, 2), count: rng.pick([2, 0xffff, 0xffffffff - units]) }]
  if (fault === 'payload') frame.payload = Buffer.alloc(Math.max(0, count * unit + rng.pick([-1, 1, unit])))
  if (fault === 'round') frame.round = rng.pick([0, 0xffffffff])
  let bytes = Buffer.concat(encodeFrameBytesLoose(frame))
  if (fault === 'area') bytes[6 + 8] = rng.pick([2, 255])
  if (fault === 'mutate') bytes = mutateFrame(rng, bytes).bytes
  return { label: `data-${fault}`, bytes }
}

/** Like encodeFrameBytes for a data frame, without its checks (runs beyond u32 are clamped). */
function encodeFrameBytesLoose (f) {
  const head = Buffer.alloc(6 + 13 + 8 * f.runs.length)
  head.writeUInt32LE(head.length - 4 + f.payload.length, 0)
  head[4] = PROTOCOL_VERSION; head[5] = FrameType.Data
  head.writeUInt32LE(f.round >>> 0, 6); head.writeUInt32LE(f.chunkId >>> 0, 10); head[14] = f.area
  head.writeUInt32LE(f.runs.length, 15)
  f.runs.forEach((r, i) => { head.writeUInt32LE(r.start >>> 0, 19 + 8 * i); head.writeUInt32LE(Math.min(r.count, 0xffffffff) >>> 0, 23 + 8 * i) })
  return [head, f.payload]
}

/** A control frame after ACCEPT, in or (mostly) out of order. */
export function sessionControlFrame (rng, hello) {
  const kind = rng.weighted([[2, 'round-end'], [1, 'pause'], [2, 'device-state'], [2, 'verify'], [2, 'commit'], [1, 'manifest'], [1, 'abort'], [2, 'any'], [1, 'mutated']])
  switch (kind) {
    case 'round-end': return { label: kind, bytes: Buffer.from(encodeFrameBytes({ type: FrameType.RoundEnd, round: rng.range(0, 5), units: rng.u32(), bytes: rng.int(2 ** 50) })) }
    case 'pause': return { label: kind, bytes: Buffer.from(encodeFrameBytes({ type: FrameType.Pause, round: rng.u32() })) }
    case 'device-state': return { label: kind, bytes: Buffer.from(encodeFrameBytes({ type: FrameType.DeviceState, state: rng.bytes(rng.pick([0, 16, 4096, 4 * MiB - 64])) })) }
    case 'verify': return { label: kind, bytes: Buffer.from(encodeFrameBytes({ type: FrameType.Verify, memoryDigest: digest(rng), cacheDigest: digest(rng) })) }
    case 'commit': return { label: kind, bytes: Buffer.from(encodeFrameBytes({ type: FrameType.Commit })) }
    case 'manifest': {
      const n = rng.pick([1, 8, 4096, 65536])
      return { label: `manifest-${n}`, bytes: Buffer.from(encodeFrameBytes({ type: FrameType.CacheManifest, volume: FUZZ_VOLUME, start: rng.pick([0, 8, 0xfffffff8]), hashes: rng.bytes(32 * n), dirty: rng.bytes(Math.ceil(n / 8)), hot: rng.bytes(Math.ceil(n / 8)) })) }
    }
    case 'abort': return { label: kind, bytes: Buffer.from(encodeFrameBytes({ type: FrameType.Abort, code: rng.pick(['ERR_X', 'ERR_INTERNAL']), message: 'fuzz abort' })) }
    case 'any': return { label: kind, bytes: anyValidFrame(rng) }
    default: return { label: kind, bytes: mutateFrame(rng, anyValidFrame(rng)).bytes }
  }
}

/** A small file and its block hashes, served as the fuzz node's replica volume. */
export function volumeContent (rng, blocks = 16, blockSize = 4096) {
  const data = rng.bytes(blocks * blockSize)
  const hashes = []
  for (let i = 0; i < blocks; i++) hashes.push(createHash('sha256').update(data.subarray(i * blockSize, (i + 1) * blockSize)).digest())
  return { data, hashes, blockSize }
}

/** The frame type of a capacity answer or announcement (packages/node/src/capacity.ts). */
const CAPACITY_FRAME = 0xc0

/** A capacity body that passes the schema (the base the mutations start from). */
function validCapacity (rng) {
  const n = () => rng.pick([0, rng.int(1 << 30), rng.int(2 ** 40)])
  return {
    memoryFree: n(), cacheFree: n(), sharedSpace: rng.chance(0.5), maxMemoryBytes: n(), maxCacheBytes: n(),
    maxIncoming: rng.int(8), maxIncomingPerPeer: rng.int(4), incoming: rng.int(4), incomingFromYou: rng.int(2),
    heldFromYou: { memory: n(), cache: n() }, images: rng.int(100)
  }
}

/**
 * `/shoal/capacity-announce/1.0.0` (one capacity frame told unasked) and `/shoal/capacity/1.0.0`
 * (a question: the node answers without reading): announcements with hostile JSON (wrong types,
 * extra keys, absurd numbers, deep nesting, not JSON, not UTF-8), mutated frames, framing attacks,
 * several frames where one is expected.
 */
export function capacityScript (rng) {
  const kind = rng.weighted([[2, 'valid'], [4, 'bad-json'], [3, 'mutated'], [2, 'framing'], [1, 'many'], [1, 'wrong-type'], [1, 'empty']])
  const frame = (body, type = CAPACITY_FRAME) => Buffer.concat([header(body.length, type), body])
  const json = (v) => Buffer.from(JSON.stringify(v))
  const parts = []
  let label = kind
  switch (kind) {
    case 'valid': parts.push(frame(json(validCapacity(rng)))); break
    case 'bad-json': {
      const c = validCapacity(rng)
      const k = rng.pick(Object.keys(c))
      const bodies = [
        () => { label = 'json-wrong-type'; return json({ ...c, [k]: rng.pick(['1', null, [], {}, true, -1, 1.5, 1e308]) }) },
        () => { label = 'json-extra-key'; return json({ ...c, [`x${rng.int(100)}`]: 1 }) },
        () => { label = 'json-missing-key'; const d = { ...c }; delete d[k]; return json(d) },
        () => { label = 'json-deep'; return Buffer.from('['.repeat(2000) + ']'.repeat(2000)) },
        () => { label = 'json-not-json'; return Buffer.from('{"memoryFree": 1,') },
        () => { label = 'json-not-utf8'; return Buffer.concat([Buffer.from('{"a":"'), Buffer.from([0xff, 0xfe, 0xc0]), Buffer.from('"}')]) },
        () => { label = 'json-array'; return json([c]) },
        () => { label = 'json-proto'; return Buffer.from('{"__proto__":{"memoryFree":1},"constructor":{"prototype":{"x":1}}}') }
      ]
      parts.push(frame(rng.pick(bodies)()))
      break
    }
    case 'mutated': { const m = mutateFrame(rng, frame(json(validCapacity(rng)))); label = `capacity-${m.label}`; parts.push(m.bytes); break }
    case 'framing': { const a = framingAttack(rng); label = a.label; parts.push(a.bytes); break }
    case 'many': for (let i = rng.range(2, 8); i > 0; i--) parts.push(frame(json(validCapacity(rng)))); break
    case 'wrong-type': parts.push(mutateFrame(rng, anyValidFrame(rng)).bytes); break
    case 'empty': break
  }
  return { label, parts, end: rng.chance(0.8) ? 'close' : 'abort' }
}
