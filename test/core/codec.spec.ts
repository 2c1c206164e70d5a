import { describe, expect, it } from 'vitest'
import {
  Area, decodeFrame, encodeFrameBytes, FrameDecoder, FrameType, InvalidFrameError, MAX_FRAME_SIZE,
  UnsupportedVersionError
} from '@shoal/core'
import type { Frame } from '@shoal/core'

const sid = new Uint8Array(16).fill(7)
const d32 = new Uint8Array(32).fill(9)

const samples: Frame[] = [
  { type: FrameType.Hello, sessionId: sid, image: 'vm-1', pageSize: 4096, memorySize: 4096 * 10, blockSize: 262144, cacheSize: 262144 * 3, lanes: 4, driver: 'synthetic', driverConfig: '{"rate":5}' },
  { type: FrameType.Accept, sessionId: sid },
  { type: FrameType.LaneHello, sessionId: sid, lane: 3 },
  { type: FrameType.Data, round: 2, chunkId: 77, area: Area.Cache, runs: [{ start: 1, count: 2 }, { start: 5, count: 1 }], payload: new Uint8Array(3 * 16).fill(1) },
  { type: FrameType.Ack, chunkIds: [1, 2, 3] },
  { type: FrameType.RoundEnd, round: 3, units: 12, bytes: 2 ** 40 },
  { type: FrameType.Pause, round: 4 },
  { type: FrameType.DeviceState, state: new Uint8Array([1, 2, 3]) },
  { type: FrameType.Verify, memoryDigest: d32, cacheDigest: d32 },
  { type: FrameType.VerifyResult, ok: true, memoryDigest: d32, cacheDigest: d32 },
  { type: FrameType.Commit },
  { type: FrameType.Committed },
  { type: FrameType.Abort, code: 'ERR_X', message: 'why' },
  { type: FrameType.BlockRequest, requestId: 9, volume: 'vol-1', hashes: [d32, new Uint8Array(32).fill(3)] },
  { type: FrameType.BlockData, requestId: 9, hash: d32, data: new Uint8Array(4096).fill(5) },
  { type: FrameType.BlockMissing, requestId: 9, hash: d32 },
  { type: FrameType.VolumeQuery, volume: 'vol-1' },
  { type: FrameType.VolumeSummary, volume: 'vol-1', blockSize: 65536, blockCount: 10, held: 9, hashesDigest: d32, have: new Uint8Array([0xff, 0x01]) },
  // A full replica: no bitmap on the wire, a full one after decoding.
  { type: FrameType.VolumeSummary, volume: 'vol-1', blockSize: 65536, blockCount: 10, held: 10, hashesDigest: d32, have: new Uint8Array([0xff, 0x03]) },
  { type: FrameType.VolumeSummary, volume: 'vol-1', blockSize: 65536, blockCount: 10, held: 0, hashesDigest: d32, have: new Uint8Array([0, 0]) },
  { type: FrameType.VolumeHashesRequest, volume: 'vol-1', start: 8, count: 2 },
  { type: FrameType.VolumeHashes, volume: 'vol-1', start: 8, hashes: new Uint8Array(64).fill(4) },
  { type: FrameType.CacheManifest, volume: 'vol-1', start: 16, hashes: new Uint8Array(96).fill(6), dirty: new Uint8Array([0b101]), hot: new Uint8Array([0b010]) },
  { type: FrameType.CacheClaim, claimed: new Uint8Array([0xf0, 0x0f]) },
  { type: FrameType.CacheStatus, done: true, need: new Uint8Array([1, 2]), stats: '{"volume":"vol-1"}' },
]

function norm (f: Frame): unknown {
  const plain = (v: unknown): unknown => v instanceof Uint8Array ? [...v] : Array.isArray(v) ? v.map(plain) : v
  // A summary holding none or all of its blocks travels without a bitmap: `held` says it.
  if (f.type === FrameType.VolumeSummary && (f.held === 0 || f.held === f.blockCount)) f = { ...f, have: new Uint8Array(0) }
  return Object.fromEntries(Object.entries(f).map(([k, v]) => [k, plain(v)]))
}

describe('wire codec', () => {
  it('round-trips every frame type', () => {
    for (const f of samples) expect(norm(decodeFrame(encodeFrameBytes(f)))).toEqual(norm(f))
  })

  it('carries a stopped image in a HELLO flags byte that older HELLOs do not have, and refuses unknown flags', () => {
    const hello = samples[0] as Extract<Frame, { type: FrameType.Hello }>
    const plain = encodeFrameBytes(hello)
    const flagged = encodeFrameBytes({ ...hello, stopped: true })
    expect(flagged.byteLength).toBe(plain.byteLength + 1)
    expect(decodeFrame(flagged)).toMatchObject({ type: FrameType.Hello, stopped: true })
    expect('stopped' in decodeFrame(plain)).toBe(false)
    expect(encodeFrameBytes({ ...hello, stopped: false })).toEqual(plain)
    // An unknown flag bit is a peer this node does not understand: refused, not ignored.
    const odd = Buffer.from(flagged)
    odd[odd.byteLength - 1] = 0b11
    expect(() => decodeFrame(odd)).toThrow(/unknown hello flags 0x3/)
  })

  it('round-trips the post-copy frames and fields (optional trailers: a cut before one is the frame without it)', () => {
    const post: Frame[] = [
      { type: FrameType.VerifyResult, ok: false, memoryDigest: d32, cacheDigest: d32, deferred: new Uint8Array([0b1010, 0xff]) },
      { type: FrameType.CacheManifest, volume: 'vol-1', start: 0, hashes: new Uint8Array(96).fill(6), dirty: new Uint8Array([0b101]), hot: new Uint8Array([0b010]), postcopy: true },
      { type: FrameType.CacheManifest, volume: 'vol-1', start: 0, hashes: new Uint8Array(96).fill(6), dirty: new Uint8Array([0b101]), hot: new Uint8Array([0b010]), postcopy: true, prefetch: true },
      { type: FrameType.CacheRelease, volume: 'vol-1', sessionId: sid },
      { type: FrameType.CacheReleased }
    ]
    for (const f of post) expect(norm(decodeFrame(encodeFrameBytes(f)))).toEqual(norm(f))
    // A manifest mode byte other than 1 or 2 is refused.
    const m = Buffer.from(encodeFrameBytes(post[1]!))
    m[m.byteLength - 1] = 3
    expect(() => decodeFrame(m)).toThrow(InvalidFrameError)
    // A release needs its whole session id.
    const r = encodeFrameBytes(post[2]!)
    expect(() => decodeFrame(r.subarray(0, r.byteLength - 1))).toThrow(InvalidFrameError)
  })

  it('rejects every truncation of every frame', () => {
    for (const f of samples) {
      const b = encodeFrameBytes(f)
      for (let n = 0; n < b.byteLength; n++) {
        expect(() => decodeFrame(b.subarray(0, n)), `${FrameType[f.type]} cut at ${n}`).toThrow(InvalidFrameError)
      }
    }
  })

  it('rejects summaries, hash lists and manifests that contradict themselves', () => {
    const summary = { type: FrameType.VolumeSummary, volume: 'v', blockSize: 65536, blockCount: 10, held: 11, hashesDigest: d32, have: new Uint8Array(2) } as const
    expect(() => encodeFrameBytes(summary)).toThrow(/held count/)
    expect(() => encodeFrameBytes({ ...summary, held: 5, have: new Uint8Array(3) })).toThrow(/bitmap/)
    // A summary that claims "all held" while its held count says otherwise.
    const full = Buffer.from(encodeFrameBytes({ ...summary, held: 10, have: new Uint8Array([0xff, 3]) }))
    full.writeUInt32LE(7, full.byteLength - 1 - 32 - 4)
    expect(() => decodeFrame(full)).toThrow(/contradicts/)
    expect(() => encodeFrameBytes({ type: FrameType.VolumeHashes, volume: 'v', start: 0, hashes: new Uint8Array(33) })).toThrow(/hash list/)
    expect(() => encodeFrameBytes({ type: FrameType.VolumeHashesRequest, volume: 'v', start: 0, count: 0 })).toThrow(/1\.\.65536/)
    const manifest = { type: FrameType.CacheManifest, volume: 'v', start: 3, hashes: new Uint8Array(32), dirty: new Uint8Array(1), hot: new Uint8Array(1) } as const
    expect(() => encodeFrameBytes(manifest)).toThrow(/multiple of 8/)
    expect(() => encodeFrameBytes({ ...manifest, start: 0, hot: new Uint8Array(2) })).toThrow(/bitmaps/)
  })

  it('rejects trailing bytes, unknown types and versions', () => {
    const b = Buffer.from(encodeFrameBytes({ type: FrameType.Pause, round: 1 }))
    const longer = Buffer.concat([b, Buffer.from([0])])
    longer.writeUInt32LE(longer.byteLength - 4, 0)
    expect(() => decodeFrame(longer)).toThrow(/trailing/)
    const unknown = Buffer.from(b); unknown[5] = 200
    expect(() => decodeFrame(unknown)).toThrow(/unknown frame type 200/)
    const v = Buffer.from(b); v[4] = 9
    expect(() => decodeFrame(v)).toThrow(UnsupportedVersionError)
  })

  it('rejects invalid fields', () => {
    const bad: Array<[Frame, RegExp]> = [
      [{ ...samples[0], pageSize: 1000 } as Frame, /page size/],
      [{ ...samples[0], memorySize: 4097 } as Frame, /memory size/],
      [{ ...samples[0], image: '../etc' } as Frame, /image name/],
      [{ ...samples[0], driverConfig: '{' } as Frame, /JSON/],
      [{ ...samples[0], lanes: 0 } as Frame, /lanes/],
      // The rules of limits.ts, the same image validation applies.
      [{ ...samples[0], blockSize: 8 * 2 ** 20, cacheSize: 8 * 2 ** 20 } as Frame, /block size must be a power of two from 4 KiB to 4 MiB \(got 8 MiB\)/],
      [{ ...samples[0], image: '.hidden' } as Frame, /invalid image name "\.hidden"/],
      [{ ...samples[0], lanes: 257 } as Frame, /lanes must be an integer from 1 to 256/],
      [{ ...samples[0], driverConfig: JSON.stringify({ x: 'y'.repeat(70_000) }) } as Frame, /driver config too large/]
    ]
    for (const [f, re] of bad) expect(() => encodeFrameBytes(f)).toThrow(re)
    // The decoder applies the same checks to bytes from the wire: patch a valid hello's page size.
    const hello = Buffer.from(encodeFrameBytes(samples[0]!))
    const pageSizeAt = 6 + 16 + 4 + 'vm-1'.length
    hello.writeUInt32LE(1000, pageSizeAt)
    expect(() => decodeFrame(hello)).toThrow(/page size/)
    // Unsorted runs and empty runs.
    const data = Buffer.from(encodeFrameBytes({ type: FrameType.Data, round: 1, chunkId: 1, area: Area.Memory, runs: [{ start: 5, count: 1 }, { start: 7, count: 1 }], payload: new Uint8Array(2) }))
    const runsAt = 6 + 4 + 4 + 1 + 4
    const unsorted = Buffer.from(data); unsorted.writeUInt32LE(1, runsAt + 8)
    expect(() => decodeFrame(unsorted)).toThrow(/sorted/)
    const empty = Buffer.from(data); empty.writeUInt32LE(0, runsAt + 4)
    expect(() => decodeFrame(empty)).toThrow(/empty run/)
    const area = Buffer.from(data); area[6 + 8] = 5
    expect(() => decodeFrame(area)).toThrow(/unknown area/)
  })

  it('refuses volume ids that break the name rule, in both directions', () => {
    expect(() => encodeFrameBytes({ type: FrameType.VolumeQuery, volume: '..' })).toThrow(/invalid volume id "\.\."/)
    const q = Buffer.from(encodeFrameBytes({ type: FrameType.VolumeQuery, volume: 'xx' }))
    q.write('..', q.byteLength - 2)
    expect(() => decodeFrame(q)).toThrow(InvalidFrameError)
  })

  it('rejects oversized frames before buffering their body', () => {
    const dec = new FrameDecoder()
    const head = Buffer.alloc(6)
    head.writeUInt32LE(MAX_FRAME_SIZE + 1, 0)
    dec.push(head)
    expect(() => dec.next()).toThrow(/exceeds/)
    expect(() => decodeFrame(new Uint8Array(MAX_FRAME_SIZE + 1))).toThrow(InvalidFrameError)
  })

  it('cuts a byte stream split at every position into the same frames', () => {
    const stream = Buffer.concat(samples.map(f => encodeFrameBytes(f)))
    for (const step of [1, 3, 7, 64, stream.byteLength]) {
      const dec = new FrameDecoder()
      const out: Frame[] = []
      for (let i = 0; i < stream.byteLength; i += step) {
        dec.push(stream.subarray(i, i + step))
        for (let f = dec.next(); f != null; f = dec.next()) out.push(decodeFrame(f))
      }
      expect(out.map(norm)).toEqual(samples.map(norm))
      expect(dec.pending).toBe(0)
    }
  })
})
