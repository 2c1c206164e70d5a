/**
 * The write loop: the part of the workload that behaves like a running VM, dirtying memory
 * pages at a steady rate and appending to a log, with every write checkable afterwards.
 *
 * Durability order is the whole point: a page (or record) is written before the header counts
 * it, so the header never claims a write that is not on disk. Before a batch the header's
 * `pendingWrites` is raised to the batch's last write; a process stopped mid-batch therefore
 * leaves on disk exactly a prefix of `(writes, pendingWrites]`, which the verifier accepts.
 *
 * Post-copy adds one rule: a record is written only into cache blocks that are present. A batch
 * of appends that touches missing blocks is announced first (`pendingRecords` raised), then its
 * blocks are faulted in (`W` for blocks it overwrites whole, `R` for the others), and only a later
 * tick writes it. Announcing before asking matters for `W`: the node then gives up the block's
 * old bytes, so the block must already lie inside the announced window, where nobody expects
 * the volume's bytes and every later process will write it (the window is never lowered). A
 * stop meanwhile writes only the announced records whose blocks are present: the rest stay in
 * the window, exactly as if the process had been killed there.
 */

import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs'
import { createCacheReader, type CacheReader } from './cache-reader.js'
import { MAX_CATCH_UP_MS, PAGE_SIZE, TICK_MS } from './constants.js'
import { InvalidArgumentError } from './errors.js'
import { createFaultClient, type FaultClient } from './fault-client.js'
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
  /**
   * Post-copy: the cache is still arriving. `presentPath` has one byte per cache block (1 =
   * present), `socketPath` is the node's fault socket; records are written only into present
   * blocks, and missing ones are faulted in first (see the top of this file).
   */
  postcopy?: { presentPath: string, socketPath: string, blockSize: number }
  /**
   * Cache reads: `rate` random blocks per second beyond the records, checked against the
   * volume's hashes in `hashesPath` (32 bytes per block); see `cache-reader.ts`.
   */
  cacheReads?: { rate: number, hashesPath: string, blockSize: number }
  /** Called for each cache read that returned other bytes than the volume's (it is also counted). */
  onBadCacheRead?: (block: number) => void
  /**
   * Called once when the workload cannot go on (the node refused a cache block: a
   * `CacheFaultError`); records and cache reads stop, page writes go on until {@link Workload.stop}.
   */
  onError?: (error: Error) => void
}

/** A running (or runnable) workload bound to its open image files. */
export interface Workload {
  /** The header as last written (counters are live). */
  readonly header: WorkloadHeader
  /** Starts the rate loop (and the ops reporter). */
  start: () => void
  /**
   * Stops the loop, writes the header and closes every file, socket and timer. Writes are
   * synchronous, so a stop never lands between a page write and its header update; it never
   * waits for a cache fault (announced records in missing blocks stay in the pending window).
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

  const { memoryFd, cacheFd, header, marks, pageMarks, blockMarks, faults, release } = openFiles(init)
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
  let started = false
  let stopped = false
  // Post-copy: the appends waiting for their blocks, and why appending ended for good.
  let faultWait: Promise<void> | undefined
  let failure: Error | undefined
  const reporter: OpsReporter | undefined = init.opsFile !== undefined ? createOpsReporter({ path: init.opsFile, initialOps: writes }) : undefined
  const capacity = Math.floor(header.cacheSize / recordBytes)

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
    appends = admitAppends(appends)
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

  const fail = (error: unknown): void => {
    if (stopped || failure !== undefined) return
    failure = error instanceof Error ? error : new Error(String(error))
    init.onError?.(failure)
  }

  const postcopyBlockSize = init.postcopy?.blockSize ?? 1

  /** Whether every cache block of bytes `[from, to)` is present (always, without post-copy). */
  const allPresent = (from: number, to: number): boolean => {
    if (faults === undefined) return true
    for (let b = Math.floor(from / postcopyBlockSize); b <= Math.floor((to - 1) / postcopyBlockSize); b++) {
      if (!faults.isPresent(b)) return false
    }
    return true
  }

  /**
   * Post-copy: lets a tick's `appends` through when every block they touch is present. Otherwise
   * announces them, faults their missing blocks in and returns 0, giving the credits back so the
   * rate catches up (within {@link MAX_CATCH_UP_MS}) once the blocks are there.
   */
  const admitAppends = (appends: number): number => {
    if (faults === undefined || appends === 0) return appends
    if (failure !== undefined) return 0
    const from = cacheBytes
    const to = cacheBytes + appends * recordBytes
    if (faultWait === undefined && allPresent(from, to)) return appends
    recordCredit += appends
    if (faultWait !== undefined) return 0
    const bs = postcopyBlockSize
    const missing: Array<{ block: number, whole: boolean }> = []
    for (let b = Math.floor(from / bs); b <= Math.floor((to - 1) / bs); b++) {
      const end = Math.min((b + 1) * bs, header.cacheSize)
      if (!faults.isPresent(b)) missing.push({ block: b, whole: from <= b * bs && to >= end })
    }
    // Announce first (see the top of this file), and mark a block to be overwritten whole as
    // dirty before asking: once the node hands it over, it no longer holds the volume's bytes.
    pendingRecords = Math.max(pendingRecords, records + appends)
    writeHeader()
    for (const { block, whole } of missing) if (whole) markDirty(block * bs, Math.min((block + 1) * bs, header.cacheSize))
    const askedAt = performance.now()
    faultWait = Promise.all(missing.map(async ({ block, whole }) => { await faults.ensure(block, whole) })).then(
      () => { reporter?.recordFaultWait(performance.now() - askedAt) },
      fail
    ).finally(() => { faultWait = undefined })
    return 0
  }

  /** Records of the announced window the stop may write: those whose blocks are all present. */
  const finishableRecords = (): number => {
    const last = Math.min(pendingRecords, capacity)
    let m = records
    while (m < last && allPresent(m * recordBytes, (m + 1) * recordBytes)) m++
    return m - records
  }

  let reader: CacheReader | undefined
  try {
    reader = init.cacheReads !== undefined && init.cacheReads.rate > 0
      ? createCacheReader({ cachePath: init.cachePath, cacheSize: header.cacheSize, ...init.cacheReads }, {
        // Announced records (and the blocks faulted in for them) lie below the window's end.
        frontier: () => Math.min(header.cacheSize, pendingRecords * recordBytes),
        faults,
        reporter,
        onBadRead: init.onBadCacheRead,
        onError: fail
      })
      : undefined
  } catch (err) {
    release()
    throw err
  }

  return {
    get header () {
      return current()
    },
    start () {
      if (stopped || timer !== undefined) return
      started = true
      reporter?.start()
      lastTick = performance.now()
      timer = setInterval(tick, TICK_MS)
      reader?.start()
    },
    stop () {
      if (stopped) return
      stopped = true
      clearInterval(timer)
      timer = undefined
      reader?.stop()
      try {
        pageMarks?.begin()
        blockMarks?.begin()
        // A batch announced by an earlier process (stopped or killed mid-batch) may have landed
        // partly, and this process rewrote some of its pages with older writes on the way:
        // finish it, so the image on disk is what the header says. Records only as far as their
        // blocks are present (post-copy): never write into a block the node has not handed over.
        writeBatch(pendingWrites - writes, finishableRecords())
        writeHeader()
        pageMarks?.end()
        blockMarks?.end()
        // A workload never started has no snapshots to finish.
        if (started) reporter?.stop()
      } finally {
        release()
      }
    }
  }
}

/** The files (and fault client) a workload writes through, with one function releasing them all. */
interface OpenFiles {
  memoryFd: number
  cacheFd: number
  header: WorkloadHeader
  marks: { fd: number, seen: Buffer } | undefined
  pageMarks: DirtyMarksWriter | undefined
  blockMarks: DirtyMarksWriter | undefined
  faults: FaultClient | undefined
  /** Closes everything opened, last opened first. */
  release: () => void
}

/** Opens the images (validating the header against them) and every marks file; on failure closes what it opened. */
function openFiles (init: WorkloadInit): OpenFiles {
  const opened: Array<() => void> = []
  const release = (): void => {
    for (const close of opened.splice(0).reverse()) close()
  }
  try {
    const memoryFd = openSync(init.memoryPath, 'r+')
    opened.push(() => { closeSync(memoryFd) })
    const cacheFd = openSync(init.cachePath, 'r+')
    opened.push(() => { closeSync(cacheFd) })
    const page = Buffer.alloc(PAGE_SIZE)
    const bytesRead = readSync(memoryFd, page, 0, PAGE_SIZE, 0)
    const header = decodeHeader(page.subarray(0, bytesRead))
    checkImageSizes(header, fstatSync(memoryFd).size, fstatSync(cacheFd).size)

    const marks = init.dirtyMarks != null ? openDirtyMarks(init.dirtyMarks.path, header.cacheSize / init.dirtyMarks.blockSize) : undefined
    if (marks != null) opened.push(() => { closeSync(marks.fd) })
    const pageMarks = init.pageMarks != null ? DirtyMarksWriter.open(init.pageMarks, header.memorySize / PAGE_SIZE) : undefined
    if (pageMarks != null) opened.push(() => { pageMarks.close() })
    const blockMarks = init.cacheMarks != null ? DirtyMarksWriter.open(init.cacheMarks.path, Math.ceil(header.cacheSize / init.cacheMarks.blockSize), '--cache-marks') : undefined
    if (blockMarks != null) opened.push(() => { blockMarks.close() })
    const pc = init.postcopy
    if (pc != null && (!Number.isSafeInteger(pc.blockSize) || pc.blockSize <= 0)) throw new InvalidArgumentError(`the block size must be a positive integer (got ${pc.blockSize})`, '--block-size')
    const faults = pc != null ? createFaultClient({ presentPath: pc.presentPath, socketPath: pc.socketPath, blocks: Math.ceil(header.cacheSize / pc.blockSize) }) : undefined
    if (faults != null) opened.push(() => { faults.close() })
    return { memoryFd, cacheFd, header, marks, pageMarks, blockMarks, faults, release }
  } catch (err) {
    release()
    throw err
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
