/**
 * The verifier: proves that an image holds every write its header (and the migrator's
 * pause-time counts) claims, and nothing it could not have. Because page picks and contents
 * are pure functions of (seed, n), the expected image is recomputed rather than stored.
 *
 * Rules:
 * - `writes`/`records` given by the caller must equal the header's.
 * - Each data page must hold exactly its last write `<= writes + L` (stamp, fill and crc),
 *   where L is the number of in-flight writes found on disk: writes in
 *   `(writes, pendingWrites]` may have landed before the process stopped; the highest such
 *   stamp present sets L, and every write up to it must then be present too.
 * - A never-written page must hold its initial content: zeros, or for random fill anything
 *   that is not a valid page stamp.
 * - Records `1..records` must be intact; intact records beyond them may exist only in order,
 *   without gaps, and up to `pendingRecords`.
 */

import { open, type FileHandle } from 'node:fs/promises'
import { setImmediate as yieldToLoop } from 'node:timers/promises'
import { IO_CHUNK_SIZE, MAX_REPORTED_PROBLEMS, PAGE_SIZE } from './constants.js'
import { decodeHeader, type WorkloadHeader } from './format.js'
import { checkImageSizes } from './image.js'
import { checkPage, describePageProblem } from './page-check.js'
import { checkRecords, type RecordProblem } from './record-check.js'
import { createPicker, seedKeys } from './prng.js'

export type { RecordProblem } from './record-check.js'

/** Options of {@link verifyImage}. */
export interface VerifyOptions {
  /** Memory image path. */
  memoryPath: string
  /** Cache image path. */
  cachePath: string
  /** Completed page writes captured at pause time; must equal the header's. */
  writes?: number
  /** Completed records captured at pause time; must equal the header's. */
  records?: number
  /** Aborts a long verification. */
  signal?: AbortSignal
}

/** One data page that does not hold what it should. */
export interface PageProblem {
  /** Page index (1-based; page 0 is the header). */
  page: number
  /** Human-readable cause, e.g. `stale: holds write 12, expected write 40`. */
  reason: string
}

/** Outcome of {@link verifyImage}. */
export interface VerifyResult {
  /** True when no problem of any kind was found. */
  ok: boolean
  /** Completed page writes according to the header. */
  writes: number
  /** Completed records according to the header. */
  records: number
  /** In-flight writes found on disk beyond `writes` (accepted). */
  inFlightWrites: number
  /** In-flight records found on disk beyond `records` (accepted). */
  inFlightRecords: number
  /** Data pages checked (all of them). */
  pagesChecked: number
  /** Records checked (`records`, plus the in-flight ones looked at). */
  recordsChecked: number
  /** Total number of bad pages. */
  badPageCount: number
  /** Total number of bad records. */
  badRecordCount: number
  /** The first {@link MAX_REPORTED_PROBLEMS} bad pages, in page order. */
  badPages: PageProblem[]
  /** The first {@link MAX_REPORTED_PROBLEMS} bad records, in record order. */
  badRecords: RecordProblem[]
  /** Image-level problems, e.g. counts that differ from the expected ones. */
  errors: string[]
}

const REPLAY_YIELD_EVERY = 1 << 22

async function readFully (file: FileHandle, buf: Buffer, length: number, position: number): Promise<void> {
  let done = 0
  while (done < length) {
    const { bytesRead } = await file.read(buf, done, length - done, position + done)
    if (bytesRead === 0) throw new Error(`Unexpected end of file at ${position + done}`)
    done += bytesRead
  }
}

/**
 * Scans every data page once, recording in `found` which write each page holds
 * (0 for initial content, a negative problem code if damaged).
 */
async function scanPages (file: FileHandle, header: WorkloadHeader, found: Float64Array, signal?: AbortSignal): Promise<void> {
  const pageKey = seedKeys(header.seed).page
  const chunk = Buffer.alloc(IO_CHUNK_SIZE)
  const scratch = Buffer.alloc(PAGE_SIZE)
  for (let position = PAGE_SIZE; position < header.memorySize; position += chunk.length) {
    signal?.throwIfAborted()
    const length = Math.min(chunk.length, header.memorySize - position)
    await readFully(file, chunk, length, position)
    for (let offset = 0; offset < length; offset += PAGE_SIZE) {
      const page = (position + offset) / PAGE_SIZE
      found[page] = checkPage(chunk.subarray(offset, offset + PAGE_SIZE), page, pageKey, header.fill, scratch)
    }
  }
}

/** Replays the picker: `expected[p]` becomes the last write `<= upTo` of page p (0 if none). */
async function replay (header: WorkloadHeader, upTo: number, signal?: AbortSignal): Promise<Float64Array> {
  const pageCount = header.memorySize / PAGE_SIZE
  const pick = createPicker({ ...header, pageCount })
  const expected = new Float64Array(pageCount)
  for (let n = 1; n <= upTo; n++) {
    expected[pick(n)] = n
    if (n % REPLAY_YIELD_EVERY === 0) {
      // Lets an abort (or anything else sharing this event loop) through on huge replays.
      await yieldToLoop()
      signal?.throwIfAborted()
    }
  }
  return expected
}

/**
 * Verifies that an image holds exactly the writes and records its header claims (see the
 * module rules). Never modifies the files.
 *
 * @throws InvalidHeaderError or ImageSizeMismatchError if the image is not a valid workload
 * image at all; the fs error if a file is unreadable
 */
export async function verifyImage (opts: VerifyOptions): Promise<VerifyResult> {
  const memory = await open(opts.memoryPath, 'r')
  try {
    const cache = await open(opts.cachePath, 'r')
    try {
      const page = Buffer.alloc(PAGE_SIZE)
      const { bytesRead } = await memory.read(page, 0, PAGE_SIZE, 0)
      const header = decodeHeader(page.subarray(0, bytesRead))
      checkImageSizes(header, (await memory.stat()).size, (await cache.stat()).size)
      return await verifyOpenImage(header, memory, cache, opts)
    } finally {
      await cache.close()
    }
  } finally {
    await memory.close()
  }
}

async function verifyOpenImage (header: WorkloadHeader, memory: FileHandle, cache: FileHandle, opts: VerifyOptions): Promise<VerifyResult> {
  const errors: string[] = []
  if (opts.writes !== undefined && opts.writes !== header.writes) {
    errors.push(`writes: expected ${opts.writes}, header says ${header.writes}`)
  }
  if (opts.records !== undefined && opts.records !== header.records) {
    errors.push(`records: expected ${opts.records}, header says ${header.records}`)
  }

  const pageCount = header.memorySize / PAGE_SIZE
  const found = new Float64Array(pageCount)
  await scanPages(memory, header, found, opts.signal)

  // The highest in-flight write on disk tells how far the stopped batch got.
  let landed = header.writes
  for (let p = 1; p < pageCount; p++) {
    const n = found[p] ?? 0
    if (n > landed && n <= header.pendingWrites) landed = n
  }
  const expected = await replay(header, landed, opts.signal)

  const badPages: PageProblem[] = []
  let badPageCount = 0
  for (let p = 1; p < pageCount; p++) {
    const reason = describePageProblem(found[p] ?? 0, expected[p] ?? 0, header.pendingWrites)
    if (reason === undefined) continue
    badPageCount++
    if (badPages.length < MAX_REPORTED_PROBLEMS) badPages.push({ page: p, reason })
  }

  const recordCheck = await checkRecords(cache, header, opts.signal)

  return {
    ok: errors.length === 0 && badPageCount === 0 && recordCheck.badCount === 0,
    writes: header.writes,
    records: header.records,
    inFlightWrites: landed - header.writes,
    inFlightRecords: recordCheck.inFlight,
    pagesChecked: pageCount - 1,
    recordsChecked: recordCheck.checked,
    badPageCount,
    badRecordCount: recordCheck.badCount,
    badPages,
    badRecords: recordCheck.bad,
    errors
  }
}
