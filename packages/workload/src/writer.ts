/**
 * The write loop: the part of the workload that behaves like a running VM, dirtying memory
 * pages at a steady rate and appending to a log, with every write checkable afterwards.
 *
 * Durability order is the whole point: a page (or record) is written before the header counts
 * it, so the header never claims a write that is not on disk. Before a batch the header's
 * `pendingWrites` is raised to the batch's last write; a process stopped mid-batch therefore
 * leaves on disk exactly a prefix of `(writes, pendingWrites]`, which the verifier accepts.
 */

import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs'
import { MAX_CATCH_UP_MS, PAGE_SIZE, TICK_MS } from './constants.js'
import { InvalidArgumentError } from './errors.js'
import { decodeHeader, encodeHeader, encodePage, encodeRecord, recordTotalSize, type WorkloadHeader } from './format.js'
import { DirtyMarksWriter } from './dirty-marks.js'
import { checkImageSizes } from './image.js'
import { createOpsReporter, type OpsReporter } from './ops-reporter.js'
import { createPicker, seedKeys } from './prng.js'

/** Options of {@link createWorkload}. */
export interface WorkloadInit {
  /** Memory image created by `initImage`. */
  memoryPath: string
  /** Cache image created by `initImage`. */
  cachePath: string
  /** Page writes per second; 0 (default) keeps the process idle but alive. */
  rate?: number
  /** Records appended per second; default 0. */
  recordRate?: number
  /** If set, a JSON {@link OpsSnapshot} is written there every second. */
  opsFile?: string
  /** Called once when the next record no longer fits in the cache file (appending stops). */
  onCacheFull?: () => void
  /**
   * Cooperative dirty marking of the cache: one byte per cache block in `path` (Shoal's
   * `<cache>.dirty`), set to 1 *before* the block is first written, so the mark survives a crash.
   */
  dirtyMarks?: { path: string, blockSize: number }
  /**
   * Cooperative tracking of memory: Shoal's dirty-marks file for the memory image. Every page
   * written (the header page too) is marked in it first; each tick acknowledges its epoch.
   */
  pageMarks?: string
  /** Cooperative tracking of the cache: Shoal's dirty-marks file with one mark per cache block. */
  cacheMarks?: { path: string, blockSize: number }
}

/** A running (or runnable) workload bound to its open image files. */
export interface Workload {
  /** The header as last written (counters are live). */
  readonly header: WorkloadHeader
  /** Starts the rate loop (and the ops reporter). */
  start: () => void
  /**
   * Stops the loop, writes the header and closes every file and timer. Writes are synchronous,
   * so a stop never lands between a page write and its header update.
   */
  stop: () => void
}

function requireRate (value: number, option: string): void {
  if (!Number.isFinite(value) || value < 0) {
    throw new InvalidArgumentError(`${option} must be a non-negative number (got ${value})`, option)
  }
}

function writeAll (fd: number, buf: Buffer, length: number, position: number): void {
  const written = writeSync(fd, buf, 0, length, position)
  if (written !== length) throw new Error(`Short write: ${written} of ${length} bytes at ${position}`)
}

/**
 * Opens an image and validates its header against the files, ready to {@link Workload.start}.
 * Counters continue from the header, so starting on a migrated image resumes it.
 *
 * @throws InvalidArgumentError, InvalidHeaderError, ImageSizeMismatchError, or the fs error
 */
export function createWorkload (init: WorkloadInit): Workload {
  const rate = init.rate ?? 0
  const recordRate = init.recordRate ?? 0
  requireRate(rate, '--rate')
  requireRate(recordRate, '--record-rate')

  const memoryFd = openSync(init.memoryPath, 'r+')
  let cacheFd: number
  let header: WorkloadHeader
  try {
    cacheFd = openSync(init.cachePath, 'r+')
    try {
      const page = Buffer.alloc(PAGE_SIZE)
      const bytesRead = readSync(memoryFd, page, 0, PAGE_SIZE, 0)
      header = decodeHeader(page.subarray(0, bytesRead))
      checkImageSizes(header, fstatSync(memoryFd).size, fstatSync(cacheFd).size)
    } catch (err) {
      closeSync(cacheFd)
      throw err
    }
  } catch (err) {
    closeSync(memoryFd)
    throw err
  }

  let marks: { fd: number, seen: Buffer } | undefined
  let pageMarks: DirtyMarksWriter | undefined
  let blockMarks: DirtyMarksWriter | undefined
  try {
    marks = init.dirtyMarks != null ? openDirtyMarks(init.dirtyMarks.path, header.cacheSize / init.dirtyMarks.blockSize) : undefined
    pageMarks = init.pageMarks != null ? DirtyMarksWriter.open(init.pageMarks, header.memorySize / PAGE_SIZE) : undefined
    blockMarks = init.cacheMarks != null ? DirtyMarksWriter.open(init.cacheMarks.path, Math.ceil(header.cacheSize / init.cacheMarks.blockSize), '--cache-marks') : undefined
  } catch (err) {
    closeSync(memoryFd)
    closeSync(cacheFd)
    if (marks != null) closeSync(marks.fd)
    pageMarks?.close()
    throw err
  }
  const markDirty = (from: number, to: number): void => {
    if (blockMarks != null && init.cacheMarks != null) {
      const bs = init.cacheMarks.blockSize
      for (let b = Math.floor(from / bs); b <= Math.floor((to - 1) / bs); b++) blockMarks.mark(b)
    }
    if (marks == null || init.dirtyMarks == null) return
    const bs = init.dirtyMarks.blockSize
    for (let b = Math.floor(from / bs); b <= Math.floor((to - 1) / bs); b++) {
      if (marks.seen[b] === 1) continue
      writeAll(marks.fd, ONE, 1, b)
      marks.seen[b] = 1
    }
  }
  const keys = seedKeys(header.seed)
  const pick = createPicker({ ...header, pageCount: header.memorySize / PAGE_SIZE })
  const recordBytes = recordTotalSize(header.recordSize)
  // Scratch buffers reused for every write: the loop allocates nothing.
  const headerBuf = Buffer.alloc(PAGE_SIZE)
  const pageBuf = Buffer.alloc(PAGE_SIZE)
  const recordBuf = Buffer.alloc(recordBytes)
  const pattern = Buffer.alloc(32)

  let { writes, records, cacheBytes, pendingWrites, pendingRecords } = header
  let pageCredit = 0
  let recordCredit = 0
  let lastTick = 0
  let cacheFullReported = false
  let timer: NodeJS.Timeout | undefined
  let stopped = false
  let reporter: OpsReporter | undefined

  const current = (): WorkloadHeader => ({ ...header, writes, records, cacheBytes, pendingWrites, pendingRecords })

  const writeHeader = (): void => {
    pageMarks?.mark(0)
    writeAll(memoryFd, encodeHeader(current(), headerBuf), PAGE_SIZE, 0)
  }

  // A floor of one op keeps rates below 1/s from being capped to nothing.
  const maxPageCredit = Math.max(1, rate * MAX_CATCH_UP_MS / 1000)
  const maxRecordCredit = Math.max(1, recordRate * MAX_CATCH_UP_MS / 1000)

  const tick = (): void => {
    const now = performance.now()
    const elapsedS = (now - lastTick) / 1000
    // How late this tick runs: part of every operation's latency (a stopped or starved writer is late).
    const lateMs = Math.max(0, now - lastTick - TICK_MS)
    lastTick = now
    pageCredit = Math.min(pageCredit + rate * elapsedS, maxPageCredit)
    recordCredit = Math.min(recordCredit + recordRate * elapsedS, maxRecordCredit)
    const pages = Math.floor(pageCredit)
    pageCredit -= pages
    let appends = Math.floor(recordCredit)
    recordCredit -= appends
    const room = Math.floor((header.cacheSize - cacheBytes) / recordBytes)
    if (appends > room) {
      appends = room
      if (!cacheFullReported) {
        cacheFullReported = true
        init.onCacheFull?.()
      }
    }
    pageMarks?.begin()
    blockMarks?.begin()
    if (pages === 0 && appends === 0) { pageMarks?.end(); blockMarks?.end(); return }

    // Announce the batch first. Never lower the pending marks: a previous process killed
    // mid-batch may have left writes up to the old mark on disk (rewriting them is idempotent).
    pendingWrites = Math.max(pendingWrites, writes + pages)
    pendingRecords = Math.max(pendingRecords, records + appends)
    writeHeader()
    writeBatch(pages, appends, lateMs)
    writeHeader()
    pageMarks?.end()
    blockMarks?.end()
  }

  /**
   * Writes the next `pages` page writes and `appends` records (announced in the header first);
   * each page write's latency, for the ops file, is its syscall plus how late its tick ran.
   */
  const writeBatch = (pages: number, appends: number, lateMs = 0): void => {
    for (let i = 0; i < pages; i++) {
      const n = writes + 1
      const page = pick(n)
      encodePage(keys.page, page, n, pageBuf, pattern)
      pageMarks?.mark(page)
      const start = performance.now()
      writeAll(memoryFd, pageBuf, PAGE_SIZE, page * PAGE_SIZE)
      reporter?.recordOp(lateMs + performance.now() - start)
      writes = n
    }
    for (let i = 0; i < appends; i++) {
      const m = records + 1
      encodeRecord(keys.record, m, header.recordSize, recordBuf, pattern)
      markDirty(cacheBytes, cacheBytes + recordBytes)
      writeAll(cacheFd, recordBuf, recordBytes, cacheBytes)
      records = m
      cacheBytes += recordBytes
    }
  }

  return {
    get header () {
      return current()
    },
    start () {
      if (stopped || timer !== undefined) return
      if (init.opsFile !== undefined) {
        reporter = createOpsReporter({ path: init.opsFile, initialOps: writes })
        reporter.start()
      }
      lastTick = performance.now()
      timer = setInterval(tick, TICK_MS)
    },
    stop () {
      if (stopped) return
      stopped = true
      clearInterval(timer)
      timer = undefined
      try {
        pageMarks?.begin()
        blockMarks?.begin()
        // A batch announced by an earlier process (stopped or killed mid-batch) may have landed
        // partly, and this process rewrote some of its pages with older writes on the way:
        // finish it, so the image on disk is what the header says.
        writeBatch(pendingWrites - writes, Math.max(0, Math.min(pendingRecords - records, Math.floor((header.cacheSize - cacheBytes) / recordBytes))))
        writeHeader()
        pageMarks?.end()
        blockMarks?.end()
        reporter?.stop()
      } finally {
        pageMarks?.close()
        blockMarks?.close()
        closeSync(memoryFd)
        closeSync(cacheFd)
        if (marks != null) closeSync(marks.fd)
      }
    }
  }
}

const ONE = Buffer.from([1])

/** Opens a dirty-marks file (one byte per block) and reads which blocks are already marked. */
function openDirtyMarks (path: string, blocks: number): { fd: number, seen: Buffer } {
  if (!Number.isInteger(blocks)) throw new InvalidArgumentError('the cache size is not a multiple of the block size', '--block-size')
  const fd = openSync(path, 'r+')
  const seen = Buffer.alloc(blocks)
  if (fstatSync(fd).size !== blocks) {
    closeSync(fd)
    throw new InvalidArgumentError(`${path} must have one byte per cache block (${blocks})`, '--dirty-marks')
  }
  readSync(fd, seen, 0, blocks, 0)
  return { fd, seen }
}
