/**
 * The on-disk formats of the workload images, as pure functions over buffers. All integers
 * are little-endian. Every structure ends in a crc32 so that a torn or stale copy is caught.
 *
 * Header page (page 0 of the memory file):
 *
 * | offset | field          | type | meaning                                              |
 * |--------|----------------|------|------------------------------------------------------|
 * | 0      | magic          | u32  | `"SHWL"`                                             |
 * | 4      | version        | u32  | {@link FORMAT_VERSION}                               |
 * | 8      | seed           | u64  | PRNG seed                                            |
 * | 16     | hotPages       | u32  | hot set is pages `[1, 1 + hotPages)`                 |
 * | 20     | hotPercent     | u32  | share of writes into the hot set                     |
 * | 24     | writes         | u64  | completed page writes                                |
 * | 32     | records        | u64  | completed records                                    |
 * | 40     | cacheBytes     | u64  | offset of the next record                            |
 * | 48     | memorySize     | u64  | memory file size                                     |
 * | 56     | cacheSize      | u64  | cache file size                                      |
 * | 64     | recordSize     | u32  | record payload bytes                                 |
 * | 68     | fill           | u32  | initial content: 0 zero, 1 random                    |
 * | 72     | pendingWrites  | u64  | highest write that may be on disk (>= writes)        |
 * | 80     | pendingRecords | u64  | highest record that may be on disk (>= records)      |
 * | 88     | crc32          | u32  | of bytes 0..88                                       |
 *
 * Data page written by write n: magic `"SHPG"` u32, page index u32, n u64, fill (a 32-byte
 * pattern of (seed, page, n) repeated), crc32 of bytes 0..4092 in the last 4 bytes.
 *
 * Record m: magic `"SHRC"` u32, m u64, payload length u32, payload (a 32-byte pattern of
 * (seed, m) repeated), crc32 of everything before.
 */

import { crc32 } from 'node:zlib'
import {
  FORMAT_VERSION,
  HEADER_MAGIC,
  PAGE_MAGIC,
  PAGE_SIZE,
  RECORD_MAGIC,
  RECORD_PREFIX_SIZE,
  RECORD_SUFFIX_SIZE
} from './constants.js'
import { InvalidHeaderError } from './errors.js'
import { fillPattern } from './prng.js'

const TWO_POW_32 = 4294967296

/** How the data pages (and cache) were filled by `init`. */
export type FillMode = 'zero' | 'random'

/** The decoded header page. Counters are plain numbers (safe integers); the seed is a u64. */
export interface WorkloadHeader {
  /** Format version, always {@link FORMAT_VERSION} once decoded. */
  readonly version: number
  /** PRNG seed of page picks, page fills and record payloads. */
  readonly seed: bigint
  /** Size of the hot set `[1, 1 + hotPages)`. */
  readonly hotPages: number
  /** Percentage of page writes that land in the hot set. */
  readonly hotPercent: number
  /** Number of completed page writes: writes 1..writes are on disk. */
  readonly writes: number
  /** Number of completed records: records 1..records are on disk. */
  readonly records: number
  /** Byte offset in the cache file where the next record goes. */
  readonly cacheBytes: number
  /** Memory file size in bytes (a multiple of {@link PAGE_SIZE}). */
  readonly memorySize: number
  /** Cache file size in bytes. */
  readonly cacheSize: number
  /** Record payload size in bytes. */
  readonly recordSize: number
  /** Initial content of never-written pages. */
  readonly fill: FillMode
  /**
   * Highest write number that may already be on disk. The writer raises it before a batch and
   * then raises `writes` to it after the batch, so a process stopped mid-batch leaves a window
   * `(writes, pendingWrites]` of in-flight writes that the verifier accepts.
   */
  readonly pendingWrites: number
  /** Like {@link WorkloadHeader.pendingWrites}, for records. */
  readonly pendingRecords: number
}

/** Bytes of the header covered by its checksum; the checksum follows. */
export const HEADER_BYTES = 88

/** Offset of the page checksum: the last four bytes of the page. */
export const PAGE_CRC_OFFSET = PAGE_SIZE - 4

/** Offset of a data page's fill bytes. */
export const PAGE_FILL_OFFSET = 16

const FILL_CODES: readonly FillMode[] = ['zero', 'random']

function writeU64 (buf: Buffer, value: number, offset: number): void {
  buf.writeUInt32LE(value >>> 0, offset)
  buf.writeUInt32LE((value / TWO_POW_32) >>> 0, offset + 4)
}

function readU64 (buf: Buffer, offset: number, field: string): number {
  const value = buf.readUInt32LE(offset) + buf.readUInt32LE(offset + 4) * TWO_POW_32
  if (!Number.isSafeInteger(value)) {
    throw new InvalidHeaderError(`Invalid workload header: ${field} ${value} is out of range`)
  }
  return value
}

/** Encodes a header into a full zero-padded page, ready for one pwrite. */
export function encodeHeader (header: WorkloadHeader, out: Buffer = Buffer.alloc(PAGE_SIZE)): Buffer {
  out.fill(0)
  out.writeUInt32LE(HEADER_MAGIC, 0)
  out.writeUInt32LE(header.version, 4)
  out.writeBigUInt64LE(BigInt.asUintN(64, header.seed), 8)
  out.writeUInt32LE(header.hotPages, 16)
  out.writeUInt32LE(header.hotPercent, 20)
  writeU64(out, header.writes, 24)
  writeU64(out, header.records, 32)
  writeU64(out, header.cacheBytes, 40)
  writeU64(out, header.memorySize, 48)
  writeU64(out, header.cacheSize, 56)
  out.writeUInt32LE(header.recordSize, 64)
  out.writeUInt32LE(FILL_CODES.indexOf(header.fill), 68)
  writeU64(out, header.pendingWrites, 72)
  writeU64(out, header.pendingRecords, 80)
  out.writeUInt32LE(crc32(out.subarray(0, HEADER_BYTES)), HEADER_BYTES)
  return out
}

/**
 * Decodes and validates a header page.
 *
 * @throws InvalidHeaderError on a wrong magic, version, checksum or inconsistent counters
 */
export function decodeHeader (buf: Uint8Array): WorkloadHeader {
  const page = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
  if (page.length < HEADER_BYTES + 4) {
    throw new InvalidHeaderError(`Invalid workload header: ${page.length} bytes, need ${HEADER_BYTES + 4}`)
  }
  const magic = page.readUInt32LE(0)
  if (magic !== HEADER_MAGIC) {
    throw new InvalidHeaderError(`Invalid workload header: bad magic 0x${magic.toString(16).padStart(8, '0')} (expected "SHWL")`)
  }
  const stored = page.readUInt32LE(HEADER_BYTES)
  const actual = crc32(page.subarray(0, HEADER_BYTES))
  if (stored !== actual) {
    throw new InvalidHeaderError(`Invalid workload header: checksum mismatch (stored 0x${stored.toString(16)}, computed 0x${actual.toString(16)})`)
  }
  const version = page.readUInt32LE(4)
  if (version !== FORMAT_VERSION) {
    throw new InvalidHeaderError(`Invalid workload header: unsupported version ${version} (expected ${FORMAT_VERSION})`)
  }
  const fill = FILL_CODES[page.readUInt32LE(68)]
  if (fill === undefined) {
    throw new InvalidHeaderError(`Invalid workload header: unknown fill code ${page.readUInt32LE(68)}`)
  }
  const header: WorkloadHeader = {
    version,
    seed: page.readBigUInt64LE(8),
    hotPages: page.readUInt32LE(16),
    hotPercent: page.readUInt32LE(20),
    writes: readU64(page, 24, 'writes'),
    records: readU64(page, 32, 'records'),
    cacheBytes: readU64(page, 40, 'cacheBytes'),
    memorySize: readU64(page, 48, 'memorySize'),
    cacheSize: readU64(page, 56, 'cacheSize'),
    recordSize: page.readUInt32LE(64),
    fill,
    pendingWrites: readU64(page, 72, 'pendingWrites'),
    pendingRecords: readU64(page, 80, 'pendingRecords')
  }
  checkHeaderConsistency(header)
  return header
}

/** Rejects headers whose fields contradict each other (a checksum only proves they were written). */
function checkHeaderConsistency (h: WorkloadHeader): void {
  const problems: string[] = []
  if (h.memorySize % PAGE_SIZE !== 0 || h.memorySize < 2 * PAGE_SIZE) problems.push(`memorySize ${h.memorySize} is not a multiple of ${PAGE_SIZE} of at least two pages`)
  if (h.hotPages > h.memorySize / PAGE_SIZE - 1) problems.push(`hotPages ${h.hotPages} exceeds the data pages`)
  if (h.hotPercent > 100) problems.push(`hotPercent ${h.hotPercent} exceeds 100`)
  if (h.cacheBytes !== h.records * recordTotalSize(h.recordSize)) problems.push(`cacheBytes ${h.cacheBytes} does not match ${h.records} records`)
  if (h.cacheBytes > h.cacheSize) problems.push(`cacheBytes ${h.cacheBytes} exceeds cacheSize ${h.cacheSize}`)
  if (h.pendingWrites < h.writes) problems.push(`pendingWrites ${h.pendingWrites} is below writes ${h.writes}`)
  if (h.pendingRecords < h.records) problems.push(`pendingRecords ${h.pendingRecords} is below records ${h.records}`)
  if (problems.length > 0) throw new InvalidHeaderError(`Invalid workload header: ${problems.join('; ')}`)
}

/** Bytes one record occupies in the cache file. */
export function recordTotalSize (recordSize: number): number {
  return RECORD_PREFIX_SIZE + recordSize + RECORD_SUFFIX_SIZE
}

/**
 * Encodes the full page written by write `n` to page `page`. `pattern` is a 32-byte scratch
 * buffer, passed in so that the write loop allocates nothing.
 */
export function encodePage (pageKey: number, page: number, n: number, out: Buffer, pattern: Buffer = Buffer.alloc(32)): Buffer {
  out.writeUInt32LE(PAGE_MAGIC, 0)
  out.writeUInt32LE(page, 4)
  writeU64(out, n, 8)
  out.fill(fillPattern(pageKey, page, n, pattern), PAGE_FILL_OFFSET, PAGE_CRC_OFFSET)
  out.writeUInt32LE(crc32(out.subarray(0, PAGE_CRC_OFFSET)), PAGE_CRC_OFFSET)
  return out
}

/** What a data page claims about itself; `valid` means magic and checksum are right. */
export interface PageStamp {
  /** Magic and checksum are right, so `page` and `n` can be trusted as written. */
  readonly valid: boolean
  /** The magic is `"SHPG"` (the page was written by some write, maybe since corrupted). */
  readonly hasMagic: boolean
  /** Page index the writer stamped. */
  readonly page: number
  /** Write number the writer stamped. */
  readonly n: number
}

/** Reads the stamp of one page (a {@link PAGE_SIZE} view). */
export function decodePageStamp (buf: Buffer): PageStamp {
  const hasMagic = buf.readUInt32LE(0) === PAGE_MAGIC
  const n = buf.readUInt32LE(8) + buf.readUInt32LE(12) * TWO_POW_32
  const valid = hasMagic && buf.readUInt32LE(PAGE_CRC_OFFSET) === crc32(buf.subarray(0, PAGE_CRC_OFFSET))
  return { valid, hasMagic, page: buf.readUInt32LE(4), n }
}

/** Encodes record `m` (payload of `recordSize` bytes) into `out`, which must hold the whole record. */
export function encodeRecord (recordKey: number, m: number, recordSize: number, out: Buffer, pattern: Buffer = Buffer.alloc(32)): Buffer {
  const end = RECORD_PREFIX_SIZE + recordSize
  out.writeUInt32LE(RECORD_MAGIC, 0)
  writeU64(out, m, 4)
  out.writeUInt32LE(recordSize, 12)
  if (recordSize > 0) out.fill(fillPattern(recordKey, 0x5ec0, m, pattern), RECORD_PREFIX_SIZE, end)
  out.writeUInt32LE(crc32(out.subarray(0, end)), end)
  return out
}

/** What a record slot claims about itself. */
export interface RecordStamp {
  /** Magic, length and checksum are right. */
  readonly valid: boolean
  /** Sequence number the writer stamped. */
  readonly m: number
}

/** Reads the stamp of one record slot of `recordTotalSize(recordSize)` bytes. */
export function decodeRecordStamp (buf: Buffer, recordSize: number): RecordStamp {
  const end = RECORD_PREFIX_SIZE + recordSize
  const m = buf.readUInt32LE(4) + buf.readUInt32LE(8) * TWO_POW_32
  const valid = buf.readUInt32LE(0) === RECORD_MAGIC &&
    buf.readUInt32LE(12) === recordSize &&
    buf.readUInt32LE(end) === crc32(buf.subarray(0, end))
  return { valid, m }
}
