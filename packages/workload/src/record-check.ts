/**
 * Checking the record log: every counted record intact, in order, and nothing beyond what the
 * header says may have been appended.
 */

import type { FileHandle } from 'node:fs/promises'
import { IO_CHUNK_SIZE, MAX_REPORTED_PROBLEMS, RECORD_MAGIC } from './constants.js'
import { decodeRecordStamp, encodeRecord, recordTotalSize, type WorkloadHeader } from './format.js'
import { seedKeys } from './prng.js'

/** One record that does not hold what it should. */
export interface RecordProblem {
  /** Record sequence number (1-based). */
  record: number
  /** Human-readable cause, e.g. `missing (no record magic)`. */
  reason: string
}

/** Outcome of {@link checkRecords}. */
export interface RecordCheck {
  /** Records looked at. */
  checked: number
  /** Records beyond the header's count found intact (accepted, up to `pendingRecords`). */
  inFlight: number
  /** Total bad records. */
  badCount: number
  /** The first bad records. */
  bad: RecordProblem[]
}

function describeRecordProblem (slot: Buffer, m: number, recordSize: number): string {
  if (slot.readUInt32LE(0) !== RECORD_MAGIC) return 'missing (no record magic)'
  const stamp = decodeRecordStamp(slot, recordSize)
  if (!stamp.valid) return 'checksum or length mismatch'
  if (stamp.m !== m) return `holds record ${stamp.m}`
  return 'payload mismatch (checksum valid but not this image\'s record)'
}

/**
 * Checks records `1..records` and then the in-flight window after them: intact records
 * `records + 1, records + 2, ...` are accepted up to `pendingRecords`; an intact record after a
 * missing one was lost in between, and one beyond `pendingRecords` means the header is older
 * than the log.
 */
export async function checkRecords (cache: FileHandle, header: WorkloadHeader, signal?: AbortSignal): Promise<RecordCheck> {
  const size = recordTotalSize(header.recordSize)
  const capacity = Math.floor(header.cacheSize / size)
  const recordKey = seedKeys(header.seed).record
  const perChunk = Math.max(1, Math.floor(IO_CHUNK_SIZE / size))
  const chunk = Buffer.alloc(perChunk * size)
  const expected = Buffer.alloc(size)
  const pattern = Buffer.alloc(32)
  const result: RecordCheck = { checked: 0, inFlight: 0, badCount: 0, bad: [] }
  // One slot past the window: finding an intact record there is the only way to see a stale header.
  const lastToLook = Math.min(capacity, header.pendingRecords + 1)
  let gap = 0

  for (let first = 1; first <= lastToLook; first += perChunk) {
    signal?.throwIfAborted()
    const count = Math.min(perChunk, lastToLook - first + 1)
    const { bytesRead } = await cache.read(chunk, 0, count * size, (first - 1) * size)
    for (let i = 0; i < count; i++) {
      const m = first + i
      const slot = chunk.subarray(i * size, (i + 1) * size)
      const intact = (i + 1) * size <= bytesRead &&
        slot.equals(encodeRecord(recordKey, m, header.recordSize, expected, pattern))
      if (m <= header.records) {
        result.checked++
        if (intact) continue
        result.badCount++
        if (result.bad.length < MAX_REPORTED_PROBLEMS) {
          result.bad.push({ record: m, reason: describeRecordProblem(slot, m, header.recordSize) })
        }
        continue
      }
      // Beyond the count, appends are sequential: the in-flight ones that landed form a prefix.
      if (!intact) {
        if (gap === 0) gap = m
        continue
      }
      result.checked++
      let reason: string | undefined
      if (gap !== 0) reason = `present although the earlier record ${gap} is missing`
      else if (m > header.pendingRecords) reason = `present beyond the header's last possible record ${header.pendingRecords}`
      if (reason === undefined) {
        result.inFlight++
        continue
      }
      result.badCount++
      if (result.bad.length < MAX_REPORTED_PROBLEMS) result.bad.push({ record: m, reason })
    }
  }
  return result
}
