/**
 * Cache reads (`--cache-reads`): the part of the workload that reads its disk like a VM, and
 * proves every read returned the right bytes. The cache caches a volume, so a block the workload
 * never wrote holds the volume's block, whose SHA-256 is in the hashes file beside the cache.
 * Records are appended from offset 0, so every block wholly beyond the record frontier is such a
 * block: each tick reads random ones of those (through the fault path when post-copy) and checks
 * them against their hash. A mismatch is the one failure that must never happen.
 */

import { createHash } from 'node:crypto'
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs'
import { MAX_CATCH_UP_MS, MAX_PENDING_CACHE_READS, TICK_MS } from './constants.js'
import { InvalidArgumentError } from './errors.js'
import type { FaultClient } from './fault-client.js'
import type { OpsReporter } from './ops-reporter.js'

/** Bytes of one block hash in the hashes file. */
const HASH_SIZE = 32

/** Options of {@link createCacheReader}. */
export interface CacheReaderInit {
  /** The cache file. */
  cachePath: string
  /** The cache's size in bytes (from the workload header): a whole number of blocks. */
  cacheSize: number
  /** The volume's block hashes: {@link HASH_SIZE} bytes per block (Shoal's `<cache>.hashes`). */
  hashesPath: string
  /** Cache block size in bytes. */
  blockSize: number
  /** Blocks read per second; 0 reads nothing. */
  rate: number
}

/** What a {@link CacheReader} works with. */
export interface CacheReaderDeps {
  /**
   * Bytes of the cache at and beyond which no record may be written yet (the writer's announced
   * records, and any block it is about to overwrite): what lies wholly beyond is the volume's.
   */
  frontier: () => number
  /** Post-copy: blocks that are not present are asked for before they are read. */
  faults?: FaultClient
  /** Where reads and fault waits are counted. */
  reporter?: OpsReporter
  /** Called for each read that returned other bytes than the volume's. */
  onBadRead?: (block: number) => void
  /** Called when a block cannot be had (the node refused it); reading stops. */
  onError?: (error: Error) => void
}

/** Reads and checks random cache blocks at a steady rate. */
export interface CacheReader {
  /** Starts the reads. */
  start: () => void
  /** Stops the reads (abandoning any that wait on a fault) and closes the cache file. */
  stop: () => void
  /** Reads checked so far. */
  readonly reads: number
  /** Of those, the ones with wrong bytes. */
  readonly badReads: number
}

/**
 * Opens the cache (read-only) and loads the hashes.
 *
 * @throws InvalidArgumentError when the rate is invalid, the cache is not whole blocks or the hashes file does not fit it
 */
export function createCacheReader (init: CacheReaderInit, deps: CacheReaderDeps): CacheReader {
  const { blockSize, cacheSize, rate } = init
  if (!Number.isFinite(rate) || rate < 0) throw new InvalidArgumentError(`--cache-reads must be a non-negative number (got ${rate})`, '--cache-reads')
  if (!Number.isSafeInteger(blockSize) || blockSize <= 0 || cacheSize % blockSize !== 0) {
    throw new InvalidArgumentError(`--cache-reads needs a cache of whole blocks: ${cacheSize} bytes is not a multiple of ${blockSize}`, '--block-size')
  }
  const blocks = cacheSize / blockSize
  const hashes = readFileSync(init.hashesPath)
  if (hashes.byteLength !== blocks * HASH_SIZE) {
    throw new InvalidArgumentError(`${init.hashesPath} must hold ${HASH_SIZE} bytes per cache block (${blocks} blocks), has ${hashes.byteLength} bytes`, '--cache-hashes')
  }
  const fd = openSync(init.cachePath, 'r')
  if (fstatSync(fd).size < cacheSize) {
    closeSync(fd)
    throw new InvalidArgumentError(`${init.cachePath} is smaller than its header says (${cacheSize} bytes)`, '--cache-path')
  }

  const buf = Buffer.alloc(blockSize)
  const abort = new AbortController()
  const maxCredit = Math.max(1, rate * MAX_CATCH_UP_MS / 1000)
  let credit = 0
  let lastTick = 0
  let timer: NodeJS.Timeout | undefined
  let waiting = 0
  let reads = 0
  let badReads = 0
  let stopped = false
  let failed = false

  /** First block wholly beyond the frontier. */
  const firstFree = (): number => Math.ceil(Math.min(deps.frontier(), cacheSize) / blockSize)

  /** Reads `block` and checks it, unless records reached into it meanwhile (its bytes are theirs then). */
  const check = (block: number): void => {
    const offset = block * blockSize
    let got = 0
    while (got < blockSize) {
      const n = readSync(fd, buf, got, blockSize - got, offset + got)
      if (n === 0) break
      got += n
    }
    buf.fill(0, got)
    if (block < firstFree()) return
    const ok = createHash('sha256').update(buf).digest().equals(hashes.subarray(block * HASH_SIZE, (block + 1) * HASH_SIZE))
    reads++
    if (!ok) badReads++
    deps.reporter?.recordCacheRead(!ok)
    if (!ok) deps.onBadRead?.(block)
  }

  const readOne = (): void => {
    const first = firstFree()
    if (first >= blocks) return
    const block = first + Math.floor(Math.random() * (blocks - first))
    const faults = deps.faults
    if (faults === undefined || faults.isPresent(block)) {
      check(block)
      return
    }
    // A VM's reads queue behind a missing block; ours are skipped past a bound instead.
    if (waiting >= MAX_PENDING_CACHE_READS) return
    waiting++
    const started = performance.now()
    faults.ensure(block, false, abort.signal).then(() => {
      waiting--
      if (stopped) return
      deps.reporter?.recordFaultWait(performance.now() - started)
      check(block)
    }, (error: unknown) => {
      waiting--
      if (stopped || failed) return
      failed = true
      stop()
      deps.onError?.(error instanceof Error ? error : new Error(String(error)))
    })
  }

  const tick = (): void => {
    const now = performance.now()
    credit = Math.min(credit + rate * (now - lastTick) / 1000, maxCredit)
    lastTick = now
    const n = Math.floor(credit)
    credit -= n
    for (let i = 0; i < n && !stopped; i++) readOne()
  }

  const stop = (): void => {
    if (stopped) return
    stopped = true
    clearInterval(timer)
    timer = undefined
    abort.abort()
    closeSync(fd)
  }

  return {
    start () {
      if (stopped || timer !== undefined || rate === 0) return
      lastTick = performance.now()
      timer = setInterval(tick, TICK_MS)
    },
    stop,
    get reads () { return reads },
    get badReads () { return badReads }
  }
}
