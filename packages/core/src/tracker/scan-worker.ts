import { createHash } from 'node:crypto'
import type { Hash } from 'node:crypto'
import { closeSync, openSync, readSync } from 'node:fs'
import { parentPort } from 'node:worker_threads'
import { SCAN_READ_BYTES } from '../constants.js'
import { toErrorInfo } from '../errors.js'
import type { DigestTask, ScanTask, WorkerReply, WorkerTask } from './worker-protocol.js'
import { regionDigest, zeroRegionDigest } from '../verify/region-hash.js'

// One read buffer per worker, reused: the scan must not allocate per chunk.
let readBuf = Buffer.allocUnsafe(SCAN_READ_BYTES)

function ensureBuf (n: number): Buffer {
  if (readBuf.byteLength < n) readBuf = Buffer.allocUnsafe(n)
  return readBuf
}

/** Reads exactly `len` bytes at `pos` (a short read means the file shrank: treat the rest as zeros). */
function readFully (fd: number, buf: Buffer, len: number, pos: number): number {
  let got = 0
  while (got < len) {
    const n = readSync(fd, buf, got, len - got, pos + got)
    if (n === 0) { buf.fill(0, got, len); break }
    got += n
  }
  return len
}

function scan (t: ScanTask): WorkerReply {
  const fd = openSync(t.path, 'r')
  const bits = new Uint8Array(t.bitmap)
  const baseline = Buffer.from(t.baseline)
  const unitsPerRead = Math.max(1, Math.floor(SCAN_READ_BYTES / t.unitSize))
  const buf = ensureBuf(unitsPerRead * t.unitSize)
  const digests = Buffer.from(t.digests.out)
  const fresh = new Uint8Array(t.digests.fresh)
  const R = t.digests.regionSize
  const assumedBits = t.assumed != null ? new Uint8Array(t.assumed.bitmap) : undefined
  const assumedHashes = t.assumed != null ? Buffer.from(t.assumed.hashes) : undefined
  const holes = t.holes != null ? new Uint8Array(t.holes) : undefined
  const nonzero = t.nonzero != null ? new Uint8Array(t.nonzero) : undefined
  const isHole = (i: number): boolean => holes != null && (holes[i >>> 3]! & (1 << (i & 7))) !== 0
  let dirty = 0
  let bytes = 0
  try {
    for (let u = t.start; u < t.end; u += unitsPerRead) {
      const startedAt = performance.now()
      const n = Math.min(unitsPerRead, t.end - u)
      bytes += readWindow(fd, buf, u, n, t.unitSize, isHole)
      // Regions of this read whose digest must be redone: never hashed, or holding a changed unit.
      const base = u * t.unitSize
      const firstRegion = base / R
      const stale = new Uint8Array(Math.ceil(n * t.unitSize / R))
      for (let k = 0; k < n; k++) {
        const i = u + k
        const hole = isHole(i)
        // A hole reads as zeros: compare those without reading or hashing them.
        const unit = hole ? undefined : buf.subarray(k * t.unitSize, (k + 1) * t.unitSize)
        let assumedHit = false
        let changed: boolean
        if (t.mode === 'shadow') {
          if (unit != null) {
            changed = unit.compare(baseline, i * t.unitSize, (i + 1) * t.unitSize) !== 0
            // The shadow takes the new bytes now; the sender sends exactly these bytes.
            if (changed) { unit.copy(baseline, i * t.unitSize); if (nonzero != null) Atomics.or(nonzero, i >>> 3, 1 << (i & 7)) }
          } else if (nonzero == null || (nonzero[i >>> 3]! & (1 << (i & 7))) !== 0) {
            changed = !isZero(baseline.subarray(i * t.unitSize, (i + 1) * t.unitSize))
            if (changed) baseline.fill(0, i * t.unitSize, (i + 1) * t.unitSize)
            if (nonzero != null) Atomics.and(nonzero, i >>> 3, ~(1 << (i & 7)) & 0xff)
          } else changed = false
        } else if (t.mode === 'hash') {
          const fp = unit != null ? createHash('sha256').update(unit).digest() : zeroUnitHash(t.unitSize)
          changed = fp.compare(baseline, i * 32, i * 32 + 32) !== 0
        } else {
          changed = unit != null && !isZero(unit)
        }
        if (t.mode !== 'hash' && assumedBits != null && (assumedBits[i >>> 3]! & (1 << (i & 7))) !== 0) {
          // The destination gets this unit elsewhere: only bytes other than those matter.
          assumedHit = changed
          const fp = (): Buffer => unit != null ? createHash('sha256').update(unit).digest() : zeroUnitHash(t.unitSize)
          if (changed) changed = !fp().equals(assumedHashes!.subarray(i * 32, i * 32 + 32))
          Atomics.and(assumedBits, i >>> 3, ~(1 << (i & 7)) & 0xff)
        }
        const touched = changed || assumedHit
        if (touched) stale.fill(1, Math.floor(k * t.unitSize / R), Math.ceil((k + 1) * t.unitSize / R))
        if (changed) {
          Atomics.or(bits, i >>> 3, 1 << (i & 7))
          dirty++
        }
      }
      for (let j = 0; j < stale.length; j++) {
        const region = firstRegion + j
        const isFresh = (fresh[region >>> 3]! & (1 << (region & 7))) !== 0
        if (stale[j] === 0 && isFresh) continue
        const from = j * R
        const to = Math.min((j + 1) * R, t.digests.size - base)
        let allHole = holes != null
        for (let v = u + Math.floor(from / t.unitSize); allHole && v < u + Math.ceil(to / t.unitSize); v++) allHole = isHole(v)
        if (allHole) digests.set(zeroRegionDigest(to - from), region * 32)
        else regionDigest(buf.subarray(from, to), digests, region * 32)
        if (!isFresh) Atomics.or(fresh, region >>> 3, 1 << (region & 7))
      }
      pace(startedAt, t.cpuShare)
    }
  } finally {
    closeSync(fd)
  }
  return { id: t.id, count: dirty, bytes }
}

/**
 * Fills `buf` with units [u, u + n): units outside holes are read (consecutive ones with one
 * read), hole units are zero-filled only where a read neighbours them (a region may span both);
 * a window of holes only is not touched at all. Returns the bytes read from the file.
 */
function readWindow (fd: number, buf: Buffer, u: number, n: number, unitSize: number, isHole: (i: number) => boolean): number {
  let bytes = 0
  let anyData = false
  let k = 0
  while (k < n) {
    if (isHole(u + k)) { k++; continue }
    let e = k
    while (e < n && !isHole(u + e)) e++
    bytes += readFully(fd, buf.subarray(k * unitSize), (e - k) * unitSize, (u + k) * unitSize)
    anyData = true
    k = e
  }
  if (anyData && bytes < n * unitSize) {
    for (let h = 0; h < n; h++) if (isHole(u + h)) buf.fill(0, h * unitSize, (h + 1) * unitSize)
  }
  return bytes
}

const zeroHashes = new Map<number, Buffer>()
/** SHA-256 of `len` zero bytes (cached: a hole's unit fingerprint in hash mode). */
function zeroUnitHash (len: number): Buffer {
  let h = zeroHashes.get(len)
  if (h == null) {
    h = createHash('sha256').update(Buffer.alloc(len)).digest()
    zeroHashes.set(len, h)
  }
  return h
}

const ZEROS = Buffer.alloc(64 * 1024)
const sleeper = new Int32Array(new SharedArrayBuffer(4))

/** CPU budget: after `workMs` of work, sleep so that work is at most `share` of the time. */
function pace (startedAt: number, share: number | undefined): void {
  if (share == null || share >= 1 || share <= 0) return
  const workMs = performance.now() - startedAt
  Atomics.wait(sleeper, 0, 0, workMs * (1 / share - 1))
}

function isZero (b: Buffer): boolean {
  for (let off = 0; off < b.byteLength; off += ZEROS.byteLength) {
    const n = Math.min(ZEROS.byteLength, b.byteLength - off)
    if (b.compare(ZEROS, 0, n, off, off + n) !== 0) return false
  }
  return true
}

function digest (t: DigestTask): WorkerReply {
  const fd = openSync(t.path, 'r')
  const out = Buffer.from(t.out)
  const buf = ensureBuf(t.regionSize)
  const list = t.list != null ? new Uint32Array(t.list) : undefined
  let bytes = 0
  try {
    for (let k = t.start; k < t.end; k++) {
      const startedAt = performance.now()
      const r = list != null ? list[k]! : k
      const len = Math.min(t.regionSize, t.size - r * t.regionSize)
      bytes += readFully(fd, buf, len, r * t.regionSize)
      regionDigest(buf.subarray(0, len), out, r * 32)
      pace(startedAt, t.cpuShare)
    }
  } finally {
    closeSync(fd)
  }
  return { id: t.id, count: t.end - t.start, bytes }
}

parentPort?.on('message', (task: WorkerTask) => {
  let reply: WorkerReply
  try {
    reply = task.op === 'scan' ? scan(task) : digest(task)
  } catch (err) {
    reply = { id: task.id, count: 0, bytes: 0, error: err instanceof Error ? err.message : String(err), errorInfo: toErrorInfo(err) }
  }
  parentPort?.postMessage(reply)
})
