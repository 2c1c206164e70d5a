import { MAX_FRAME_SIZE, PROTOCOL_VERSION } from '../constants.js'
import { InvalidFrameError, UnsupportedVersionError } from '../errors.js'
import { checkBlockSize, checkDeviceStateSize, checkDriverConfigText, checkGeometry, checkLanes, checkName, MAX_NAME_LENGTH } from '../limits.js'
import { Bitmap } from '../bitmap.js'
import { Area, FrameType } from './frames.js'
import type { DataFrame, Frame, Run } from './frames.js'

/**
 * Wire layout of every frame: `u32 length | u8 version | u8 type | body`, little-endian, where
 * `length` counts the bytes after itself. Frames are self-delimiting so that byte-stream
 * transports can cut them; message transports may carry them as they are.
 */
export const FRAME_HEADER_SIZE = 6
const SESSION_ID_SIZE = 16
const DIGEST_SIZE = 32
const MAX_RUNS = 65536
const MAX_STRING = 65536
const MAX_ACKS = 4096
/** Hashes one block request may name. */
export const MAX_BLOCKS_PER_REQUEST = 1024
/** Most block hashes in one VOLUME_HASHES or CACHE_MANIFEST frame (2 MiB of hashes). */
export const MAX_HASHES_PER_FRAME = 65536

/** Limits applied while decoding. */
export interface DecodeLimits {
  /** Largest frame accepted, header included. */
  maxFrameSize?: number
}

class Writer {
  private readonly buf: Buffer
  private off = FRAME_HEADER_SIZE
  constructor (size: number, type: FrameType, bodyExtra = 0) {
    this.buf = Buffer.allocUnsafe(FRAME_HEADER_SIZE + size)
    this.buf.writeUInt32LE(size + 2 + bodyExtra, 0)
    this.buf.writeUInt8(PROTOCOL_VERSION, 4)
    this.buf.writeUInt8(type, 5)
  }

  u8 (v: number): this { this.off = this.buf.writeUInt8(v, this.off); return this }
  u16 (v: number): this { this.off = this.buf.writeUInt16LE(v, this.off); return this }
  u32 (v: number): this { this.off = this.buf.writeUInt32LE(v, this.off); return this }
  u64 (v: number): this { this.off = this.buf.writeBigUInt64LE(BigInt(v), this.off); return this }
  bytes (v: Uint8Array): this { this.buf.set(v, this.off); this.off += v.byteLength; return this }
  str (v: string): this {
    const b = Buffer.from(v, 'utf8')
    if (b.byteLength > MAX_STRING) throw new InvalidFrameError('string too long')
    return this.u32(b.byteLength).bytes(b)
  }

  done (): Buffer {
    if (this.off !== this.buf.byteLength) throw new Error(`codec bug: wrote ${this.off} of ${this.buf.byteLength}`)
    return this.buf
  }
}

function strSize (s: string): number { return 4 + Buffer.byteLength(s, 'utf8') }

class Reader {
  private off = 0
  private readonly view: DataView
  constructor (private readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  }

  private need (n: number, what: string): void {
    if (this.off + n > this.buf.byteLength) throw new InvalidFrameError(`truncated frame: ${what}`)
  }

  u8 (what: string): number { this.need(1, what); return this.view.getUint8(this.off++) }
  u16 (what: string): number { this.need(2, what); const v = this.view.getUint16(this.off, true); this.off += 2; return v }
  u32 (what: string): number { this.need(4, what); const v = this.view.getUint32(this.off, true); this.off += 4; return v }
  u64 (what: string): number {
    this.need(8, what)
    const v = this.view.getBigUint64(this.off, true)
    this.off += 8
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new InvalidFrameError(`${what} out of range`)
    return Number(v)
  }

  bytes (n: number, what: string): Uint8Array {
    this.need(n, what)
    const v = this.buf.subarray(this.off, this.off + n)
    this.off += n
    return v
  }

  str (what: string, max = MAX_STRING): string {
    const n = this.u32(what)
    if (n > max) throw new InvalidFrameError(`${what} longer than ${max} bytes`)
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(this.bytes(n, what))
    } catch (err) {
      if (err instanceof InvalidFrameError) throw err
      throw new InvalidFrameError(`${what} is not valid UTF-8`)
    }
  }

  /** A volume id (checked). */
  volume (): string {
    const v = this.str('volume', MAX_NAME_LENGTH)
    checkVolume(v)
    return v
  }

  rest (): Uint8Array { const v = this.buf.subarray(this.off); this.off = this.buf.byteLength; return v }
  /** Bytes not read yet. */
  get remaining (): number { return this.buf.byteLength - this.off }

  end (): void {
    if (this.off !== this.buf.byteLength) throw new InvalidFrameError(`${this.buf.byteLength - this.off} trailing bytes`)
  }
}

/**
 * Encodes a frame. Returns one or two slices (data frames keep their payload uncopied) that
 * must be written back to back.
 */
/** Longest ABORT code and message on the wire, in UTF-8 bytes. */
const MAX_ABORT_CODE = 64
const MAX_ABORT_MESSAGE = 4096

/** `text` cut to at most `max` UTF-8 bytes, on a character boundary. */
function fitUtf8 (text: string, max: number): string {
  if (Buffer.byteLength(text) <= max) return text
  let cut = Buffer.from(text).subarray(0, max - 3).toString('utf8')
  while (Buffer.byteLength(cut) > max - 3) cut = cut.slice(0, -1)
  return cut.replace(/\uFFFD$/, '') + '...'
}

/** HELLO flags (optional trailing byte): the image is stopped on the source. */
const HELLO_FLAG_STOPPED = 1

export function encodeFrame (frame: Frame): Uint8Array[] {
  switch (frame.type) {
    case FrameType.Hello: {
      validateHello(frame)
      const stopped = frame.stopped === true
      const size = SESSION_ID_SIZE + strSize(frame.image) + 4 + 8 + 4 + 8 + 2 + strSize(frame.driver) + strSize(frame.driverConfig) + (stopped ? 1 : 0)
      const w = new Writer(size, frame.type).bytes(frame.sessionId).str(frame.image).u32(frame.pageSize)
        .u64(frame.memorySize).u32(frame.blockSize).u64(frame.cacheSize).u16(frame.lanes)
        .str(frame.driver).str(frame.driverConfig)
      // Flags only when one is set: a HELLO without them is what older peers send and read.
      return [(stopped ? w.u8(HELLO_FLAG_STOPPED) : w).done()]
    }
    case FrameType.Accept: {
      if (frame.dataEndpoints == null || frame.dataEndpoints.length === 0) return [new Writer(SESSION_ID_SIZE, frame.type).bytes(checkSession(frame.sessionId)).done()]
      const list = checkEndpoints(frame.dataEndpoints).join(',')
      return [new Writer(SESSION_ID_SIZE + strSize(list), frame.type).bytes(checkSession(frame.sessionId)).str(list).done()]
    }
    case FrameType.LaneHello:
      return [new Writer(SESSION_ID_SIZE + 2, frame.type).bytes(checkSession(frame.sessionId)).u16(frame.lane).done()]
    case FrameType.Data:
      return encodeDataFrame(frame, [frame.payload])
    case FrameType.Ack: {
      if (frame.chunkIds.length === 0 || frame.chunkIds.length > MAX_ACKS) throw new InvalidFrameError('ack needs 1..4096 ids')
      const w = new Writer(4 + 4 * frame.chunkIds.length, frame.type).u32(frame.chunkIds.length)
      for (const id of frame.chunkIds) w.u32(id)
      return [w.done()]
    }
    case FrameType.RoundEnd:
      return [new Writer(4 + 4 + 8, frame.type).u32(frame.round).u32(frame.units).u64(frame.bytes).done()]
    case FrameType.Pause:
      return [new Writer(4, frame.type).u32(frame.round).done()]
    case FrameType.DeviceState:
      checkDeviceStateSize(frame.state.byteLength, InvalidFrameError)
      return [new Writer(0, frame.type, frame.state.byteLength).done(), frame.state]
    case FrameType.Verify:
      return [new Writer(2 * DIGEST_SIZE, frame.type).bytes(checkDigest(frame.memoryDigest)).bytes(checkDigest(frame.cacheDigest)).done()]
    case FrameType.VerifyResult:
      return [new Writer(1 + 2 * DIGEST_SIZE, frame.type, frame.deferred?.byteLength ?? 0).u8(frame.ok ? 1 : 0)
        .bytes(checkDigest(frame.memoryDigest)).bytes(checkDigest(frame.cacheDigest)).done(), ...(frame.deferred != null ? [frame.deferred] : [])]
    case FrameType.Commit:
    case FrameType.Committed:
      return [new Writer(0, frame.type).done()]
    case FrameType.Abort: {
      // An ABORT must always go out: a message too long for the decoder is cut, not refused.
      if (strSize(frame.code) - 4 > MAX_ABORT_CODE) throw new InvalidFrameError(`abort code longer than ${MAX_ABORT_CODE} bytes`)
      const message = fitUtf8(frame.message, MAX_ABORT_MESSAGE)
      return [new Writer(strSize(frame.code) + strSize(message), frame.type).str(frame.code).str(message).done()]
    }
    case FrameType.BlockRequest: {
      checkVolume(frame.volume)
      if (frame.hashes.length === 0 || frame.hashes.length > MAX_BLOCKS_PER_REQUEST) throw new InvalidFrameError(`block request needs 1..${MAX_BLOCKS_PER_REQUEST} hashes`)
      const w = new Writer(4 + strSize(frame.volume) + 4 + frame.hashes.length * DIGEST_SIZE, frame.type).u32(frame.requestId).str(frame.volume).u32(frame.hashes.length)
      for (const h of frame.hashes) w.bytes(checkDigest(h))
      return [w.done()]
    }
    case FrameType.BlockData:
      return [new Writer(4 + DIGEST_SIZE, frame.type, frame.data.byteLength).u32(frame.requestId).bytes(checkDigest(frame.hash)).done(), frame.data]
    case FrameType.BlockMissing:
      return [new Writer(4 + DIGEST_SIZE, frame.type).u32(frame.requestId).bytes(checkDigest(frame.hash)).done()]
    case FrameType.VolumeQuery:
      checkVolume(frame.volume)
      return [new Writer(strSize(frame.volume), frame.type).str(frame.volume).done()]
    case FrameType.VolumeSummary: {
      checkVolume(frame.volume)
      if (!Number.isInteger(frame.held) || frame.held < 0 || frame.held > frame.blockCount) throw new InvalidFrameError('held count out of range')
      const implied = frame.have.byteLength === 0 && (frame.held === 0 || frame.held === frame.blockCount)
      if (!implied && frame.have.byteLength !== Math.ceil(frame.blockCount / 8)) throw new InvalidFrameError('summary bitmap does not match the block count')
      // A replica holding everything (or nothing) sends no bitmap at all.
      const mode = frame.held === 0 ? 0 : frame.held === frame.blockCount ? 1 : 2
      const bitmap = mode === 2 ? frame.have : new Uint8Array(0)
      // Data endpoints, when given, sit between the mode byte (flagged) and the bitmap.
      const endpoints = frame.dataEndpoints != null && frame.dataEndpoints.length > 0 ? checkEndpoints(frame.dataEndpoints).join(',') : undefined
      const w = new Writer(strSize(frame.volume) + 12 + DIGEST_SIZE + 1 + (endpoints != null ? strSize(endpoints) : 0), frame.type, bitmap.byteLength).str(frame.volume).u32(frame.blockSize)
        .u32(frame.blockCount).u32(frame.held).bytes(checkDigest(frame.hashesDigest)).u8(mode | (endpoints != null ? SUMMARY_HAS_ENDPOINTS : 0))
      if (endpoints != null) w.str(endpoints)
      return [w.done(), bitmap]
    }
    case FrameType.VolumeHashesRequest:
      checkVolume(frame.volume)
      if (!Number.isInteger(frame.count) || frame.count < 1 || frame.count > MAX_HASHES_PER_FRAME) throw new InvalidFrameError(`hash range needs 1..${MAX_HASHES_PER_FRAME} blocks`)
      return [new Writer(strSize(frame.volume) + 8, frame.type).str(frame.volume).u32(frame.start).u32(frame.count).done()]
    case FrameType.VolumeHashes:
      checkVolume(frame.volume)
      checkHashList(frame.hashes)
      return [new Writer(strSize(frame.volume) + 4, frame.type, frame.hashes.byteLength).str(frame.volume).u32(frame.start).done(), frame.hashes]
    case FrameType.CacheManifest: {
      checkVolume(frame.volume)
      const n = checkHashList(frame.hashes)
      if (frame.start % 8 !== 0) throw new InvalidFrameError('manifest start must be a multiple of 8')
      if (frame.dirty.byteLength !== Math.ceil(n / 8) || frame.hot.byteLength !== Math.ceil(n / 8)) throw new InvalidFrameError('manifest bitmaps do not match its block count')
      const w = new Writer(strSize(frame.volume) + 8 + frame.hashes.byteLength + 2 * frame.dirty.byteLength + (frame.postcopy === true ? 1 : 0), frame.type)
        .str(frame.volume).u32(frame.start).u32(n).bytes(frame.hashes).bytes(frame.dirty).bytes(frame.hot)
      if (frame.prefetch === true && frame.postcopy !== true) throw new InvalidFrameError('cache manifest prefetch needs post-copy')
      return [(frame.postcopy === true ? w.u8(frame.prefetch === true ? 2 : 1) : w).done()]
    }
    case FrameType.CacheClaim:
      return [new Writer(0, frame.type, frame.claimed.byteLength).done(), frame.claimed]
    case FrameType.CacheStatus:
      return [new Writer(1 + strSize(frame.stats) + 4, frame.type, frame.need.byteLength).u8(frame.done ? 1 : 0).str(frame.stats).u32(frame.need.byteLength).done(), frame.need]
    case FrameType.CacheRelease:
      checkVolume(frame.volume)
      return [new Writer(strSize(frame.volume) + SESSION_ID_SIZE, frame.type).str(frame.volume).bytes(checkSession(frame.sessionId)).done()]
    case FrameType.CacheReleased:
      return [new Writer(0, frame.type).done()]
  }
}

/**
 * Encodes a data frame whose payload is given in parts (e.g. views of a shadow copy, one per
 * run), without copying them. Returns the header followed by the parts.
 */
export function encodeDataFrame (frame: Omit<DataFrame, 'type' | 'payload'>, parts: readonly Uint8Array[]): Uint8Array[] {
  if (frame.runs.length === 0 || frame.runs.length > MAX_RUNS) throw new InvalidFrameError('data frame needs 1..65536 runs')
  const payloadBytes = parts.reduce((n, p) => n + p.byteLength, 0)
  const head = 4 + 4 + 1 + 4 + frame.runs.length * 8
  const w = new Writer(head, FrameType.Data, payloadBytes)
  w.u32(frame.round).u32(frame.chunkId).u8(frame.area).u32(frame.runs.length)
  for (const r of frame.runs) w.u32(r.start).u32(r.count)
  return [w.done(), ...parts]
}

/** Encodes a frame into one contiguous buffer (copies data payloads; use for tests and small frames). */
export function encodeFrameBytes (frame: Frame): Uint8Array {
  return Buffer.concat(encodeFrame(frame))
}

/** Flag in a VOLUME_SUMMARY's mode byte: data endpoints follow it. */
const SUMMARY_HAS_ENDPOINTS = 0x80
/** Longest list of data endpoints an ACCEPT or VOLUME_SUMMARY may carry, as text. */
const MAX_ENDPOINTS_TEXT = 4096
const ENDPOINT = /^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]):\d{1,5}$/

/** `host:port` endpoints: IPv4 `a.b.c.d:port` or IPv6 `[addr]:port`, at most 64. */
function checkEndpoints (list: readonly string[]): string[] {
  if (list.length === 0 || list.length > 64) throw new InvalidFrameError('data endpoints: 1..64 entries')
  for (const e of list) {
    const port = Number(e.slice(e.lastIndexOf(':') + 1))
    if (!ENDPOINT.test(e) || port < 1 || port > 65535) throw new InvalidFrameError(`data endpoint ${JSON.stringify(e.slice(0, 64))} is not host:port`)
  }
  return [...list]
}

function checkSession (id: Uint8Array): Uint8Array {
  if (id.byteLength !== SESSION_ID_SIZE) throw new InvalidFrameError('session id must be 16 bytes')
  return id
}

function checkVolume (v: string): void {
  checkName(v, 'volume id', InvalidFrameError)
}

/** Checks a list of SHA-256 hashes (1..MAX_HASHES_PER_FRAME of them); returns how many. */
function checkHashList (hashes: Uint8Array): number {
  const n = hashes.byteLength / DIGEST_SIZE
  if (!Number.isInteger(n) || n < 1 || n > MAX_HASHES_PER_FRAME) throw new InvalidFrameError(`hash list must hold 1..${MAX_HASHES_PER_FRAME} hashes of 32 bytes`)
  return n
}

function checkDigest (d: Uint8Array): Uint8Array {
  if (d.byteLength !== DIGEST_SIZE) throw new InvalidFrameError('digest must be 32 bytes')
  return d
}

/** Validates the fields of a hello (shared by encoder and decoder). */
export function validateHello (h: Omit<Extract<Frame, { type: FrameType.Hello }>, 'type'>): void {
  checkSession(h.sessionId)
  // The same rules as image validation (limits.ts): an image that can be created can migrate.
  checkName(h.image, 'image name', InvalidFrameError)
  checkName(h.driver, 'driver name', InvalidFrameError)
  checkGeometry(h, InvalidFrameError)
  checkLanes(h.lanes, 'lanes', InvalidFrameError)
  checkDriverConfigText(h.driverConfig, 'driver config', InvalidFrameError)
}

/**
 * Decodes and validates one whole frame (header included). Structural checks only: whether
 * the runs fit a given image is checked by the session that knows the image.
 */
export function decodeFrame (bytes: Uint8Array, limits: DecodeLimits = {}): Frame {
  const max = limits.maxFrameSize ?? MAX_FRAME_SIZE
  if (bytes.byteLength < FRAME_HEADER_SIZE) throw new InvalidFrameError('truncated frame header')
  if (bytes.byteLength > max) throw new InvalidFrameError(`frame of ${bytes.byteLength} bytes exceeds ${max}`)
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const length = dv.getUint32(0, true)
  if (length + 4 !== bytes.byteLength) throw new InvalidFrameError(`frame length field ${length} does not match ${bytes.byteLength - 4} bytes`)
  const version = dv.getUint8(4)
  if (version !== PROTOCOL_VERSION) throw new UnsupportedVersionError(`protocol version ${version} not supported (this node speaks ${PROTOCOL_VERSION})`)
  const type = dv.getUint8(5) as FrameType
  const r = new Reader(bytes.subarray(FRAME_HEADER_SIZE))
  let frame: Frame
  switch (type) {
    case FrameType.Hello: {
      frame = {
        type, sessionId: r.bytes(SESSION_ID_SIZE, 'session id'), image: r.str('image', MAX_NAME_LENGTH),
        pageSize: r.u32('page size'), memorySize: r.u64('memory size'), blockSize: r.u32('block size'),
        cacheSize: r.u64('cache size'), lanes: r.u16('lanes'), driver: r.str('driver', MAX_NAME_LENGTH), driverConfig: r.str('driver config')
      }
      if (r.remaining > 0) {
        const flags = r.u8('hello flags')
        if ((flags & ~HELLO_FLAG_STOPPED) !== 0) throw new InvalidFrameError(`unknown hello flags 0x${flags.toString(16)}`)
        if ((flags & HELLO_FLAG_STOPPED) !== 0) frame.stopped = true
      }
      validateHello(frame)
      break
    }
    case FrameType.Accept:
      frame = { type, sessionId: r.bytes(SESSION_ID_SIZE, 'session id') }
      if (r.remaining > 0) frame.dataEndpoints = checkEndpoints(r.str('data endpoints', MAX_ENDPOINTS_TEXT).split(','))
      break
    case FrameType.LaneHello:
      frame = { type, sessionId: r.bytes(SESSION_ID_SIZE, 'session id'), lane: r.u16('lane') }
      break
    case FrameType.Data:
      frame = { ...readDataHeader(r), payload: r.rest() }
      break
    case FrameType.Ack: {
      const n = r.u32('ack count')
      if (n === 0 || n > MAX_ACKS) throw new InvalidFrameError(`ack count ${n} not in 1..${MAX_ACKS}`)
      const chunkIds: number[] = []
      for (let i = 0; i < n; i++) chunkIds.push(r.u32('chunk id'))
      frame = { type, chunkIds }
      break
    }
    case FrameType.RoundEnd:
      frame = { type, round: r.u32('round'), units: r.u32('units'), bytes: r.u64('bytes') }
      break
    case FrameType.Pause:
      frame = { type, round: r.u32('round') }
      break
    case FrameType.DeviceState: {
      const state = r.rest()
      checkDeviceStateSize(state.byteLength, InvalidFrameError)
      frame = { type, state }
      break
    }
    case FrameType.Verify:
      frame = { type, memoryDigest: r.bytes(DIGEST_SIZE, 'memory digest'), cacheDigest: r.bytes(DIGEST_SIZE, 'cache digest') }
      break
    case FrameType.VerifyResult: {
      const ok = r.u8('ok')
      if (ok > 1) throw new InvalidFrameError('ok must be 0 or 1')
      frame = { type, ok: ok === 1, memoryDigest: r.bytes(DIGEST_SIZE, 'memory digest'), cacheDigest: r.bytes(DIGEST_SIZE, 'cache digest') }
      if (r.remaining > 0) frame.deferred = r.rest()
      break
    }
    case FrameType.Commit:
    case FrameType.Committed:
      frame = { type }
      break
    case FrameType.Abort:
      frame = { type, code: r.str('code', MAX_ABORT_CODE), message: r.str('message', MAX_ABORT_MESSAGE) }
      break
    case FrameType.BlockRequest: {
      const requestId = r.u32('request id')
      const volume = r.volume()
      const n = r.u32('hash count')
      if (n === 0 || n > MAX_BLOCKS_PER_REQUEST) throw new InvalidFrameError(`hash count ${n} not in 1..${MAX_BLOCKS_PER_REQUEST}`)
      const hashes: Uint8Array[] = []
      for (let i = 0; i < n; i++) hashes.push(r.bytes(DIGEST_SIZE, 'hash'))
      frame = { type, requestId, volume, hashes }
      break
    }
    case FrameType.BlockData:
      frame = { type, requestId: r.u32('request id'), hash: r.bytes(DIGEST_SIZE, 'hash'), data: r.rest() }
      break
    case FrameType.BlockMissing:
      frame = { type, requestId: r.u32('request id'), hash: r.bytes(DIGEST_SIZE, 'hash') }
      break
    case FrameType.VolumeQuery: {
      const volume = r.volume()
      frame = { type, volume }
      break
    }
    case FrameType.VolumeSummary: {
      const volume = r.volume()
      const blockSize = r.u32('block size')
      const blockCount = r.u32('block count')
      checkBlockSize(blockSize, 'block size', InvalidFrameError)
      const held = r.u32('held')
      if (held > blockCount) throw new InvalidFrameError('held count exceeds the block count')
      const hashesDigest = r.bytes(DIGEST_SIZE, 'hashes digest')
      const flags = r.u8('summary mode')
      const mode = flags & ~SUMMARY_HAS_ENDPOINTS
      const dataEndpoints = (flags & SUMMARY_HAS_ENDPOINTS) !== 0 ? checkEndpoints(r.str('data endpoints', MAX_ENDPOINTS_TEXT).split(',')) : undefined
      let have: Uint8Array
      if (mode === 2) {
        have = r.rest()
        if (have.byteLength !== Math.ceil(blockCount / 8)) throw new InvalidFrameError('summary bitmap does not match the block count')
      } else if (mode === 0 || mode === 1) {
        if (held !== (mode === 0 ? 0 : blockCount)) throw new InvalidFrameError('summary mode contradicts the held count')
        // None or all: `held` says it; a 56-byte frame must not make us allocate 2^32 bits.
        have = new Uint8Array(0)
      } else {
        throw new InvalidFrameError(`unknown summary mode ${mode}`)
      }
      frame = { type, volume, blockSize, blockCount, held, hashesDigest, have, ...(dataEndpoints != null ? { dataEndpoints } : {}) }
      break
    }
    case FrameType.VolumeHashesRequest: {
      const volume = r.volume()
      const start = r.u32('start')
      const count = r.u32('count')
      if (count < 1 || count > MAX_HASHES_PER_FRAME) throw new InvalidFrameError(`hash range needs 1..${MAX_HASHES_PER_FRAME} blocks`)
      frame = { type, volume, start, count }
      break
    }
    case FrameType.VolumeHashes: {
      const volume = r.volume()
      const start = r.u32('start')
      const hashes = r.rest()
      checkHashList(hashes)
      frame = { type, volume, start, hashes }
      break
    }
    case FrameType.CacheManifest: {
      const volume = r.volume()
      const start = r.u32('start')
      if (start % 8 !== 0) throw new InvalidFrameError('manifest start must be a multiple of 8')
      const n = r.u32('block count')
      if (n < 1 || n > MAX_HASHES_PER_FRAME) throw new InvalidFrameError(`manifest needs 1..${MAX_HASHES_PER_FRAME} blocks`)
      const hashes = r.bytes(n * DIGEST_SIZE, 'hashes')
      const dirty = r.bytes(Math.ceil(n / 8), 'dirty bitmap')
      const hot = r.bytes(Math.ceil(n / 8), 'hot bitmap')
      frame = { type, volume, start, hashes, dirty, hot }
      if (r.remaining > 0) {
        const mode = r.u8('mode')
        if (mode !== 1 && mode !== 2) throw new InvalidFrameError('cache manifest mode must be 1 (post-copy) or 2 (post-copy with prefetch) when present')
        frame.postcopy = true
        if (mode === 2) frame.prefetch = true
      }
      break
    }
    case FrameType.CacheClaim:
      frame = { type, claimed: r.rest() }
      break
    case FrameType.CacheStatus: {
      const done = r.u8('done') === 1
      const stats = r.str('stats')
      const n = r.u32('need length')
      frame = { type, done, stats, need: r.bytes(n, 'need bitmap') }
      break
    }
    case FrameType.CacheRelease:
      frame = { type, volume: r.volume(), sessionId: r.bytes(SESSION_ID_SIZE, 'session id') }
      break
    case FrameType.CacheReleased:
      frame = { type }
      break
    default:
      throw new InvalidFrameError(`unknown frame type ${String(type)}`)
  }
  r.end()
  return frame
}

/** A DATA frame without its payload. */
export type DataHeader = Omit<DataFrame, 'payload'>

function readDataHeader (r: Reader): DataHeader {
  const round = r.u32('round')
  const chunkId = r.u32('chunk id')
  const area = r.u8('area')
  if (area !== Area.Memory && area !== Area.Cache) throw new InvalidFrameError(`unknown area ${area}`)
  const n = r.u32('run count')
  if (n === 0 || n > MAX_RUNS) throw new InvalidFrameError(`run count ${n} not in 1..${MAX_RUNS}`)
  const runs: Run[] = []
  let prevEnd = -1
  for (let i = 0; i < n; i++) {
    const start = r.u32('run start')
    const count = r.u32('run count')
    if (count === 0) throw new InvalidFrameError('empty run')
    if (start < prevEnd) throw new InvalidFrameError('runs must be sorted and disjoint')
    prevEnd = start + count
    runs.push({ start, count })
  }
  return { type: FrameType.Data, round, chunkId, area, runs }
}

/** Offset of a DATA frame's run count from the frame's start. */
const DATA_RUN_COUNT_AT = FRAME_HEADER_SIZE + 4 + 4 + 1

/**
 * The size of a DATA frame's header (frame header, fields and runs; the payload follows), from
 * the first {@link DATA_HEADER_PREFIX} bytes of the frame; undefined if `prefix` is not a DATA frame.
 */
export function dataHeaderSize (prefix: Uint8Array): number | undefined {
  if (prefix.byteLength < DATA_HEADER_PREFIX || prefix[5] !== FrameType.Data) return undefined
  const dv = new DataView(prefix.buffer, prefix.byteOffset, prefix.byteLength)
  const n = dv.getUint32(DATA_RUN_COUNT_AT, true)
  if (n === 0 || n > MAX_RUNS) throw new InvalidFrameError(`run count ${n} not in 1..${MAX_RUNS}`)
  return DATA_RUN_COUNT_AT + 4 + 8 * n
}

/** Bytes of a frame needed to tell a DATA frame's header size ({@link dataHeaderSize}). */
export const DATA_HEADER_PREFIX = DATA_RUN_COUNT_AT + 4

/**
 * Decodes and validates the header of a DATA frame given without its payload (`header` is the
 * frame's first {@link dataHeaderSize} bytes; its length field still counts the payload, which
 * must be `payloadBytes` long). Lets a receiver write the payload where it lies.
 */
export function decodeDataHeader (header: Uint8Array, limits: DecodeLimits = {}): DataHeader & { payloadBytes: number } {
  const max = limits.maxFrameSize ?? MAX_FRAME_SIZE
  if (header.byteLength < DATA_HEADER_PREFIX) throw new InvalidFrameError('truncated frame header')
  const dv = new DataView(header.buffer, header.byteOffset, header.byteLength)
  const total = dv.getUint32(0, true) + 4
  if (total > max) throw new InvalidFrameError(`frame of ${total} bytes exceeds ${max}`)
  const version = dv.getUint8(4)
  if (version !== PROTOCOL_VERSION) throw new UnsupportedVersionError(`protocol version ${version} not supported (this node speaks ${PROTOCOL_VERSION})`)
  if (dv.getUint8(5) !== FrameType.Data) throw new InvalidFrameError('not a data frame')
  const r = new Reader(header.subarray(FRAME_HEADER_SIZE))
  const h = readDataHeader(r)
  r.end()
  if (total < header.byteLength) throw new InvalidFrameError(`frame length field ${total - 4} shorter than its header`)
  return { ...h, payloadBytes: total - header.byteLength }
}

/** What {@link FrameDecoder.nextItem} returns: a whole frame, or a DATA frame's header and payload pieces. */
export type DecodedItem =
  | { kind: 'frame', bytes: Uint8Array }
  | { kind: 'data', header: DataHeader, payloadBytes: number, pieces: Uint8Array[] }

/**
 * Cuts a byte stream into frames. Push chunks as they arrive; `next()` returns whole frames.
 * The length is checked before any body byte is buffered, so an oversized frame costs nothing.
 */
export class FrameDecoder {
  private chunks: Uint8Array[] = []
  private buffered = 0
  private readonly maxFrameSize: number

  constructor (limits: DecodeLimits = {}) {
    this.maxFrameSize = limits.maxFrameSize ?? MAX_FRAME_SIZE
  }

  /** Adds received bytes. */
  push (chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return
    this.chunks.push(chunk)
    this.buffered += chunk.byteLength
  }

  /** Bytes received but not yet returned as frames. */
  get pending (): number { return this.buffered }

  /** Returns the next whole frame (header included) or undefined if more bytes are needed. */
  next (): Uint8Array | undefined {
    const total = this.whole()
    return total == null ? undefined : this.take(total)
  }

  /**
   * Like {@link FrameDecoder.next}, but a DATA frame comes back as its decoded header and its
   * payload as views of the buffers it arrived in (no copy), so a receiver can write the payload
   * where it lies. Other frames come back whole.
   */
  nextItem (): DecodedItem | undefined {
    const total = this.whole()
    if (total == null) return undefined
    if (total < DATA_HEADER_PREFIX) return { kind: 'frame', bytes: this.take(total) }
    const size = dataHeaderSize(this.peek(DATA_HEADER_PREFIX))
    if (size == null) return { kind: 'frame', bytes: this.take(total) }
    if (size > total) throw new InvalidFrameError(`frame length field ${total - 4} shorter than its header`)
    const header = decodeDataHeader(this.take(size), { maxFrameSize: this.maxFrameSize })
    const { payloadBytes, ...h } = header
    return { kind: 'data', header: h, payloadBytes, pieces: this.pieces(payloadBytes) }
  }

  /** The size of the next frame once all of it has arrived (checked before any body byte is kept). */
  private whole (): number | undefined {
    if (this.buffered < 4) return undefined
    const head = this.peek(4)
    const total = (head[0]! | (head[1]! << 8) | (head[2]! << 16)) + head[3]! * 0x1000000 + 4
    if (total > this.maxFrameSize) throw new InvalidFrameError(`frame of ${total} bytes exceeds ${this.maxFrameSize}`)
    if (total < FRAME_HEADER_SIZE) throw new InvalidFrameError('frame shorter than its header')
    return this.buffered < total ? undefined : total
  }

  private peek (n: number): Uint8Array {
    const first = this.chunks[0]!
    if (first.byteLength >= n) return first
    const out = new Uint8Array(n)
    let off = 0
    for (const c of this.chunks) {
      const k = Math.min(c.byteLength, n - off)
      out.set(c.subarray(0, k), off)
      off += k
      if (off === n) break
    }
    return out
  }

  /** `n` bytes as one buffer (copied only when they span received buffers). */
  private take (n: number): Uint8Array {
    const parts = this.pieces(n)
    if (parts.length === 1) return parts[0]!
    const out = new Uint8Array(n)
    let off = 0
    for (const p of parts) { out.set(p, off); off += p.byteLength }
    return out
  }

  /** `n` bytes as views of the received buffers. */
  private pieces (n: number): Uint8Array[] {
    const out: Uint8Array[] = []
    this.buffered -= n
    while (n > 0) {
      const c = this.chunks[0]!
      if (c.byteLength <= n) {
        out.push(c)
        this.chunks.shift()
        n -= c.byteLength
      } else {
        out.push(c.subarray(0, n))
        this.chunks[0] = c.subarray(n)
        n = 0
      }
    }
    return out
  }
}
