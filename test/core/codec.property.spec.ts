import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import {
  Area, decodeFrame, encodeFrameBytes, FrameDecoder, FrameType, InvalidFrameError, MAX_DEVICE_STATE,
  MAX_FRAME_SIZE, PROTOCOL_VERSION, UnsupportedVersionError
} from '@shoal/core'
import type { Frame } from '@shoal/core'

// Properties of the wire codec (packages/core/src/wire/codec.ts): what any peer can send must
// either decode to a frame the codec itself would produce, or fail with InvalidFrameError.

const u32 = fc.nat({ max: 0xffffffff })
const u16 = fc.nat({ max: 0xffff })
const bytes = (min: number, max: number): fc.Arbitrary<Uint8Array> => fc.uint8Array({ minLength: min, maxLength: max })
const digest = bytes(32, 32)
const sessionId = bytes(16, 16)
// No leading dot: the current name rule (core limits.ts) refuses hidden-file names.
const name = fc.stringMatching(/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/)
/** Well-formed UTF-8 text of at most `maxBytes` bytes (the decoder counts bytes, not characters). */
const text = (maxBytes: number): fc.Arbitrary<string> =>
  fc.string({ unit: 'grapheme', maxLength: Math.min(maxBytes, 64) }).filter(s => Buffer.byteLength(s) <= maxBytes)
const pow2 = (lo: number, hi: number): fc.Arbitrary<number> => fc.integer({ min: lo, max: hi }).map(e => 2 ** e)
/** `n` units of `unit` bytes with n < 2^32 and a safe-integer product. */
const sizeOf = (unit: number): fc.Arbitrary<number> =>
  fc.oneof(fc.constant(0), fc.nat({ max: 1024 }), fc.nat({ max: Math.min(0xffffffff, Math.floor(Number.MAX_SAFE_INTEGER / unit)) })).map(n => n * unit)
const hashList = (maxN: number): fc.Arbitrary<Uint8Array> => fc.integer({ min: 1, max: maxN }).chain(n => bytes(32 * n, 32 * n))

/** Sorted, disjoint, non-empty runs whose fields fit in u32. */
const runs = fc.array(fc.tuple(fc.nat({ max: 1000 }), fc.integer({ min: 1, max: 1000 })), { minLength: 1, maxLength: 20 }).map(gaps => {
  let at = 0
  return gaps.map(([gap, count]) => { const start = at + gap; at = start + count; return { start, count } })
})

const hello = fc.record({ pageExp: fc.integer({ min: 9, max: 20 }), blockExp: fc.integer({ min: 12, max: 22 }) }).chain(({ pageExp, blockExp }) => fc.record({
  type: fc.constant(FrameType.Hello as const),
  sessionId,
  image: name,
  pageSize: fc.constant(2 ** pageExp),
  memorySize: sizeOf(2 ** pageExp),
  blockSize: fc.constant(2 ** blockExp),
  cacheSize: sizeOf(2 ** blockExp),
  lanes: fc.integer({ min: 1, max: 256 }),
  driver: name,
  driverConfig: fc.json({ maxDepth: 2 })
}))

/** Data endpoints (ACCEPT, VOLUME_SUMMARY): IPv4 or IPv6 `host:port`, 1 to 8 of them. */
const endpoints = fc.array(fc.oneof(
  fc.tuple(fc.nat({ max: 255 }), fc.nat({ max: 255 }), fc.nat({ max: 255 }), fc.nat({ max: 255 }), fc.integer({ min: 1, max: 65535 })).map(([a, b, c, d, p]) => `${a}.${b}.${c}.${d}:${p}`),
  fc.tuple(fc.ipV6(), fc.integer({ min: 1, max: 65535 })).map(([ip, p]) => `[${ip}]:${p}`)
), { minLength: 1, maxLength: 8 })

const volumeSummary = fc.record({ volume: name, blockSize: pow2(12, 22), blockCount: fc.nat({ max: 4096 }), hashesDigest: digest, mode: fc.nat({ max: 2 }), seed: bytes(512, 512), dataEndpoints: fc.option(endpoints, { nil: undefined }) })
  .map(({ volume, blockSize, blockCount, hashesDigest, mode, seed, dataEndpoints }) => {
    const n = Math.ceil(blockCount / 8)
    // held 0 / all travel without a bitmap and decode to an empty / full one: generate them consistent.
    const have = new Uint8Array(n)
    let held = 0
    if (mode === 1 || (mode === 2 && blockCount < 2)) {
      have.fill(0xff)
      if ((blockCount & 7) !== 0) have[n - 1] = (1 << (blockCount & 7)) - 1
      held = blockCount
    } else if (mode === 2) {
      for (let i = 0; i < n; i++) have[i] = seed[i % seed.length]!
      held = 1 + ((seed[0]! << 8 | seed[1]!) % (blockCount - 1))
    }
    return { type: FrameType.VolumeSummary as const, volume, blockSize, blockCount, held, hashesDigest, have, ...(dataEndpoints != null ? { dataEndpoints } : {}) }
  })

/** Every frame type, with fields anywhere in the ranges the decoder accepts. */
export const validFrame: fc.Arbitrary<Frame> = fc.oneof(
  hello,
  fc.record({ type: fc.constant(FrameType.Accept as const), sessionId, dataEndpoints: endpoints }, { requiredKeys: ['type', 'sessionId'] }),
  fc.record({ type: fc.constant(FrameType.LaneHello as const), sessionId, lane: u16 }),
  fc.record({ type: fc.constant(FrameType.Data as const), round: u32, chunkId: u32, area: fc.constantFrom(Area.Memory, Area.Cache), runs, payload: bytes(0, 256) }),
  fc.record({ type: fc.constant(FrameType.Ack as const), chunkIds: fc.array(u32, { minLength: 1, maxLength: 64 }) }),
  fc.record({ type: fc.constant(FrameType.RoundEnd as const), round: u32, units: u32, bytes: fc.maxSafeNat() }),
  fc.record({ type: fc.constant(FrameType.Pause as const), round: u32 }),
  fc.record({ type: fc.constant(FrameType.DeviceState as const), state: bytes(0, 256) }),
  fc.record({ type: fc.constant(FrameType.Verify as const), memoryDigest: digest, cacheDigest: digest }),
  fc.record({ type: fc.constant(FrameType.VerifyResult as const), ok: fc.boolean(), memoryDigest: digest, cacheDigest: digest }),
  fc.record({ type: fc.constantFrom(FrameType.Commit as const, FrameType.Committed as const) }),
  fc.record({ type: fc.constant(FrameType.Abort as const), code: text(64), message: text(4096) }),
  fc.record({ type: fc.constant(FrameType.BlockRequest as const), requestId: u32, volume: name, hashes: fc.array(digest, { minLength: 1, maxLength: 16 }) }),
  fc.record({ type: fc.constant(FrameType.BlockData as const), requestId: u32, hash: digest, data: bytes(0, 256) }),
  fc.record({ type: fc.constant(FrameType.BlockMissing as const), requestId: u32, hash: digest }),
  fc.record({ type: fc.constant(FrameType.VolumeQuery as const), volume: name }),
  volumeSummary,
  fc.record({ type: fc.constant(FrameType.VolumeHashesRequest as const), volume: name, start: u32, count: fc.integer({ min: 1, max: 65536 }) }),
  fc.record({ type: fc.constant(FrameType.VolumeHashes as const), volume: name, start: u32, hashes: hashList(8) }),
  fc.record({ volume: name, start: u32.map(s => s - (s % 8)), n: fc.integer({ min: 1, max: 40 }), seed: bytes(1, 8) }).chain(({ volume, start, n }) => fc.record({
    type: fc.constant(FrameType.CacheManifest as const), volume: fc.constant(volume), start: fc.constant(start),
    hashes: bytes(32 * n, 32 * n), dirty: bytes(Math.ceil(n / 8), Math.ceil(n / 8)), hot: bytes(Math.ceil(n / 8), Math.ceil(n / 8))
  })),
  fc.record({ type: fc.constant(FrameType.CacheClaim as const), claimed: bytes(0, 64) }),
  fc.record({ type: fc.constant(FrameType.CacheStatus as const), done: fc.boolean(), need: bytes(0, 64), stats: text(256) })
)

/** A frame with every byte array turned into a plain array, so frames compare by value. */
function plain (f: unknown): unknown {
  // A summary holding none or all of its blocks travels without a bitmap: `held` says it.
  const s = f as { type?: unknown, held?: number, blockCount?: number }
  if (s != null && s.type === FrameType.VolumeSummary && (s.held === 0 || s.held === s.blockCount)) f = { ...s, have: new Uint8Array(0) }
  if (f instanceof Uint8Array) return Array.from(f)
  if (Array.isArray(f)) return f.map(plain)
  if (f != null && typeof f === 'object') return Object.fromEntries(Object.entries(f).map(([k, v]) => [k, plain(v)]))
  return f
}

/** Bytes of the decoded frame held in buffers of its own (not views of the input). */
function ownBytes (f: unknown, input: Uint8Array): number {
  if (f instanceof Uint8Array) return f.buffer === input.buffer ? 0 : f.byteLength
  if (Array.isArray(f)) return f.reduce((n: number, v) => n + ownBytes(v, input), 0)
  if (f != null && typeof f === 'object') return Object.values(f).reduce((n: number, v) => n + ownBytes(v, input), 0)
  return 0
}

/** A valid frame, or the error class a peer's bytes may legitimately cause. */
type Outcome = { ok: true, frame: Frame } | { ok: false, err: unknown }
function tryDecode (b: Uint8Array): Outcome {
  try { return { ok: true, frame: decodeFrame(b) } } catch (err) { return { ok: false, err } }
}

/** Byte-level mutations a hostile or broken peer can produce from a valid frame. */
const mutation = fc.oneof(
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.nat({ max: 255 }) }),
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat({ max: 7 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), extra: bytes(1, 8) }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ kind: fc.constant('append' as const), extra: bytes(1, 16) }),
  // Rewrite a u32 field at a 4-aligned-ish offset with an extreme value (sizes, counts, lengths).
  fc.record({ kind: fc.constant('u32' as const), at: fc.nat(), value: fc.constantFrom(0, 1, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff) }),
  fc.record({ kind: fc.constant('type' as const), value: fc.nat({ max: 255 }) })
)
type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never

function mutate (src: Uint8Array, m: Mutation): Uint8Array {
  const b = Buffer.from(src)
  switch (m.kind) {
    case 'set': b[m.at % b.length] = m.value; return b
    case 'flip': b[m.at % b.length]! ^= 1 << m.bit; return b
    case 'truncate': return b.subarray(0, m.at % b.length)
    case 'insert': { const i = m.at % (b.length + 1); return Buffer.concat([b.subarray(0, i), m.extra, b.subarray(i)]) }
    case 'delete': { const i = m.at % b.length; return Buffer.concat([b.subarray(0, i), b.subarray(i + m.n)]) }
    case 'append': return Buffer.concat([b, m.extra])
    case 'u32': { if (b.length >= 4) b.writeUInt32LE(m.value, m.at % (b.length - 3)); return b }
    case 'type': b[5] = m.value; return b
  }
}

/** A mutated input either keeps its length field right or is judged with a fixed one (so the body is what gets tested). */
const fixLength = (b: Uint8Array): Uint8Array => {
  if (b.byteLength < 4) return b
  const c = Buffer.from(b)
  c.writeUInt32LE(b.byteLength - 4, 0)
  return c
}

describe('wire codec properties', () => {
  it('every valid frame round-trips encode → decode unchanged', () => {
    fc.assert(fc.property(validFrame, (frame) => {
      const wire = encodeFrameBytes(frame)
      const back = decodeFrame(wire)
      expect(plain(back)).toEqual(plain(frame))
      // and the header tells the truth about the frame
      const dv = new DataView(wire.buffer, wire.byteOffset, wire.byteLength)
      expect(dv.getUint32(0, true)).toBe(wire.byteLength - 4)
      expect(dv.getUint8(4)).toBe(PROTOCOL_VERSION)
      expect(dv.getUint8(5)).toBe(frame.type)
    }), { numRuns: 1500 })
  })

  it('a mutated or truncated frame decodes to a valid frame or throws InvalidFrameError, never anything else', () => {
    fc.assert(fc.property(validFrame, mutation, fc.boolean(), (frame, m, fix) => {
      const valid = encodeFrameBytes(frame)
      let input = mutate(valid, m)
      if (fix) input = fixLength(input)
      const out = tryDecode(input)
      if (out.ok) {
        // "Valid" means the codec would produce it: it re-encodes, and that encoding decodes to the same frame.
        const again = decodeFrame(encodeFrameBytes(out.frame))
        expect(plain(again)).toEqual(plain(out.frame))
        return
      }
      // A changed version byte is the one place a different, documented class is right.
      if (out.err instanceof UnsupportedVersionError) {
        expect(input.byteLength).toBeGreaterThan(4)
        expect(input[4]).not.toBe(PROTOCOL_VERSION)
        return
      }
      expect(out.err).toBeInstanceOf(InvalidFrameError)
    }), { numRuns: 2500 })
  })

  it('arbitrary bytes decode to a valid frame or throw InvalidFrameError / UnsupportedVersionError', () => {
    const headed = fc.tuple(fc.nat({ max: 30 }), bytes(0, 300)).map(([type, body]) => {
      const b = Buffer.alloc(6 + body.length)
      b.writeUInt32LE(2 + body.length, 0); b[4] = PROTOCOL_VERSION; b[5] = type
      b.set(body, 6)
      return b
    })
    fc.assert(fc.property(fc.oneof(bytes(0, 64), headed), (input) => {
      const out = tryDecode(input)
      if (out.ok) return
      expect(out.err instanceof InvalidFrameError || out.err instanceof UnsupportedVersionError).toBe(true)
    }), { numRuns: 3000 })
  })

  it('decoding allocates no more than its input (no 56-byte frame costs megabytes)', () => {
    fc.assert(fc.property(validFrame, mutation, (frame, m) => {
      const input = fixLength(mutate(encodeFrameBytes(frame), m))
      const out = tryDecode(input)
      if (!out.ok) return
      // Byte fields are views of the input; whatever the decoder builds itself stays within the input's size.
      expect(ownBytes(out.frame, input)).toBeLessThanOrEqual(input.byteLength)
    }), { numRuns: 2000 })
  })

  it('the stream decoder cuts any concatenation of frames, split anywhere, into exactly those frames', () => {
    fc.assert(fc.property(fc.array(validFrame, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 10 }), (frames, cuts) => {
      const wire = Buffer.concat(frames.map(f => encodeFrameBytes(f)))
      const at = [...new Set(cuts.map(c => c % wire.length))].sort((a, b) => a - b)
      const d = new FrameDecoder()
      const got: Uint8Array[] = []
      let prev = 0
      for (const c of [...at, wire.length]) {
        d.push(wire.subarray(prev, c)); prev = c
        for (let f = d.next(); f != null; f = d.next()) got.push(f)
      }
      expect(d.pending).toBe(0)
      expect(got.map(g => plain(decodeFrame(g)))).toEqual(frames.map(plain))
    }), { numRuns: 500 })
  })

  it('the stream decoder refuses a length prefix above its limit before buffering the body', () => {
    fc.assert(fc.property(fc.integer({ min: MAX_FRAME_SIZE - 3, max: 0xffffffff }), bytes(0, 64), (length, tail) => {
      const d = new FrameDecoder()
      const head = Buffer.alloc(4); head.writeUInt32LE(length, 0)
      d.push(head); d.push(tail)
      expect(() => d.next()).toThrow(InvalidFrameError)
    }), { numRuns: 300 })
  })

  it('device state and frame size limits hold on both sides', () => {
    expect(() => encodeFrameBytes({ type: FrameType.DeviceState, state: new Uint8Array(MAX_DEVICE_STATE + 1) })).toThrow(InvalidFrameError)
    const big = Buffer.alloc(MAX_FRAME_SIZE + 1)
    big.writeUInt32LE(big.length - 4, 0); big[4] = PROTOCOL_VERSION; big[5] = FrameType.CacheClaim
    expect(() => decodeFrame(big)).toThrow(InvalidFrameError)
  })

  // ---- regressions the fuzz run found (fixed in the codec) ----

  it('invalid UTF-8 in a string field throws InvalidFrameError (was a TypeError)', () => {
    const b = Buffer.from(encodeFrameBytes({ type: FrameType.Abort, code: 'ERR_X', message: 'hello' }))
    b[b.length - 1] = 0xff
    expect(() => decodeFrame(b)).toThrow(InvalidFrameError)
  })

  it('a 56-byte VOLUME_SUMMARY does not allocate a 64 MiB bitmap (it did)', () => {
    const b = Buffer.from(encodeFrameBytes({ type: FrameType.VolumeSummary, volume: 'v', blockSize: 4096, blockCount: 8, held: 8, hashesDigest: new Uint8Array(32), have: new Uint8Array(1) }))
    // blockCount and held (offsets 15 and 19: header 6, volume 4+1, blockSize 4) → 2^29, mode 1
    // ("holds all"): a 64 MiB bitmap here; 2^32-1 gives 512 MiB.
    b.writeUInt32LE(2 ** 29, 15); b.writeUInt32LE(2 ** 29, 19)
    let own = 0
    try { own = ownBytes(decodeFrame(b), b) } catch (err) { expect(err).toBeInstanceOf(InvalidFrameError); return }
    expect(own).toBeLessThanOrEqual(b.byteLength + 64 * 1024)
  })
})
