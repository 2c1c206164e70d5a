/**
 * The `shoal-workload` command line: argument parsing, output and exit codes. Exit codes are
 * part of the contract with the migrator: 0 ok, 2 bad arguments or unusable files,
 * 3 verification failed.
 */

import { existsSync } from 'node:fs'
import { parseArgs } from 'node:util'
import {
  optionalString,
  parseCount,
  parseRate,
  parseSeed,
  parseSize,
  requireString,
  type RawValues
} from './cli-args.js'
import { CACHE_HASHES_SUFFIX } from './constants.js'
import { ImageExistsError, ImageSizeMismatchError, InvalidArgumentError, InvalidHeaderError } from './errors.js'
import type { FillMode } from './format.js'
import { initImage } from './image.js'
import { verifyImage, type VerifyResult } from './verify.js'
import { createWorkload, type WorkloadInit } from './writer.js'

/** Exit codes of the CLI. */
export const EXIT = { ok: 0, failure: 1, usage: 2, verifyFailed: 3 } as const

const USAGE = `Usage:
  shoal-workload init   --memory-path P --memory-size BYTES --cache-path C --cache-size BYTES
                        [--seed S] [--hot-pages H] [--hot-percent 90] [--fill zero|random]
                        [--record-size 4076] [--force]
  shoal-workload run    --memory-path P --cache-path C [--rate PAGES_PER_S] [--record-rate RECORDS_PER_S]
                        [--resume] [--ops-file F] [--marks F] [--block-size BYTES [--dirty-marks F] [--cache-marks F]
                        [--cache-present F --cache-faults SOCKET] [--cache-reads BLOCKS_PER_S [--cache-hashes F]]]
  shoal-workload verify --memory-path P --cache-path C [--writes N] [--records M] [--json]
  shoal-workload standby   (boots, then reads the JSON array of a command's arguments from stdin)

Post-copy (run): --cache-present is the node's present file (one byte per cache block) and
--cache-faults its fault socket; records go only into present blocks, missing ones are asked for.
--cache-reads reads random cache blocks beyond the records and checks them against the volume's
hashes (--cache-hashes, default <cache>.hashes); a wrong block is logged as
"SHOAL-WORKLOAD bad cache read block=N" and counted in the ops file.

Sizes accept binary units (64k, 256M, 1G). Exit codes: 0 ok, 1 failure (e.g. a refused cache fault),
2 bad arguments or files, 3 verification failed.`

type OptionSpec = Record<string, { type: 'string' | 'boolean' }>

const IMAGE_OPTIONS: OptionSpec = {
  'memory-path': { type: 'string' },
  'cache-path': { type: 'string' },
  help: { type: 'boolean' }
}

const COMMANDS: Record<string, { options: OptionSpec, run: (values: RawValues) => Promise<number> }> = {
  init: {
    options: {
      ...IMAGE_OPTIONS,
      'memory-size': { type: 'string' },
      'cache-size': { type: 'string' },
      seed: { type: 'string' },
      'hot-pages': { type: 'string' },
      'hot-percent': { type: 'string' },
      fill: { type: 'string' },
      'record-size': { type: 'string' },
      force: { type: 'boolean' }
    },
    run: runInit
  },
  run: {
    options: {
      ...IMAGE_OPTIONS,
      rate: { type: 'string' },
      'record-rate': { type: 'string' },
      resume: { type: 'boolean' },
      'ops-file': { type: 'string' },
      'dirty-marks': { type: 'string' },
      'block-size': { type: 'string' },
      marks: { type: 'string' },
      'cache-marks': { type: 'string' },
      'cache-present': { type: 'string' },
      'cache-faults': { type: 'string' },
      'cache-reads': { type: 'string' },
      'cache-hashes': { type: 'string' }
    },
    run: runWorkload
  },
  verify: {
    options: {
      ...IMAGE_OPTIONS,
      writes: { type: 'string' },
      records: { type: 'string' },
      json: { type: 'boolean' }
    },
    run: runVerify
  }
}

function out (line: string): void {
  process.stdout.write(line + '\n')
}

function err (line: string): void {
  process.stderr.write(line + '\n')
}

function optional<T> (values: RawValues, name: string, parse: (value: string, option: string) => T): T | undefined {
  const value = optionalString(values, name)
  return value === undefined ? undefined : parse(value, `--${name}`)
}

function parseFill (value: string, option: string): FillMode {
  if (value !== 'zero' && value !== 'random') {
    throw new InvalidArgumentError(`${option} must be "zero" or "random" (got "${value}")`, option)
  }
  return value
}

async function runInit (values: RawValues): Promise<number> {
  const header = await initImage({
    memoryPath: requireString(values, 'memory-path'),
    memorySize: parseSize(requireString(values, 'memory-size'), '--memory-size'),
    cachePath: requireString(values, 'cache-path'),
    cacheSize: parseSize(requireString(values, 'cache-size'), '--cache-size'),
    seed: optional(values, 'seed', parseSeed),
    hotPages: optional(values, 'hot-pages', parseCount),
    hotPercent: optional(values, 'hot-percent', parseCount),
    fill: optional(values, 'fill', parseFill),
    recordSize: optional(values, 'record-size', parseCount),
    force: values.force === true
  })
  out(JSON.stringify({ event: 'initialized', ...header, seed: header.seed.toString() }))
  return EXIT.ok
}

function printFailures (print: (line: string) => void, result: VerifyResult): void {
  print(`FAILED: ${result.badPageCount} bad pages, ${result.badRecordCount} bad records, ${result.errors.length} count errors`)
  for (const error of result.errors) print(`  ${error}`)
  for (const { page, reason } of result.badPages) print(`  page ${page}: ${reason}`)
  if (result.badPageCount > result.badPages.length) print(`  ... and ${result.badPageCount - result.badPages.length} more pages`)
  for (const { record, reason } of result.badRecords) print(`  record ${record}: ${reason}`)
  if (result.badRecordCount > result.badRecords.length) print(`  ... and ${result.badRecordCount - result.badRecords.length} more records`)
}

function isImageError (error: unknown): error is InvalidHeaderError | ImageSizeMismatchError {
  return error instanceof InvalidHeaderError || error instanceof ImageSizeMismatchError
}

async function runWorkload (values: RawValues): Promise<number> {
  const memoryPath = requireString(values, 'memory-path')
  const cachePath = requireString(values, 'cache-path')
  const rate = optional(values, 'rate', parseRate)
  const recordRate = optional(values, 'record-rate', parseRate)
  if (values.resume === true) {
    // A resumed image must be intact before it is written to, or later checks would blame us.
    let result: VerifyResult
    try {
      result = await verifyImage({ memoryPath, cachePath })
    } catch (error) {
      if (!isImageError(error)) throw error
      err(`shoal-workload run --resume: ${error.message}`)
      return EXIT.verifyFailed
    }
    if (!result.ok) {
      err('shoal-workload run --resume: image verification failed')
      printFailures(err, result)
      return EXIT.verifyFailed
    }
  }
  const cacheOptions = blockOptionsOf(values, cachePath)
  // Set once the process waits for its end; a failure before that cannot happen (nothing runs yet).
  let onFailure = (_error: Error): void => {}
  const workload = createWorkload({
    memoryPath,
    cachePath,
    rate,
    recordRate,
    opsFile: optionalString(values, 'ops-file'),
    ...cacheOptions,
    pageMarks: optionalString(values, 'marks'),
    onCacheFull: () => { err('shoal-workload run: cache file is full, no more records are appended') },
    onBadCacheRead: (block) => { err(`SHOAL-WORKLOAD bad cache read block=${block}`) },
    onError: (error) => { onFailure(error) }
  })
  return await new Promise<number>((resolve) => {
    const end = (code: number, event: Record<string, unknown>): void => {
      process.off('SIGTERM', onSignal)
      process.off('SIGINT', onSignal)
      workload.stop()
      const { writes, records } = workload.header
      out(JSON.stringify({ ...event, pid: process.pid, writes, records }))
      resolve(code)
    }
    const onSignal = (signal: NodeJS.Signals): void => { end(EXIT.ok, { event: 'stopped', signal }) }
    onFailure = (error) => {
      const code = (error as { code?: unknown }).code
      err(`shoal-workload run: ${error.name}${typeof code === 'string' ? ` (${code})` : ''}: ${error.message}`)
      end(EXIT.failure, { event: 'failed', error: error.name, code })
    }
    process.on('SIGTERM', onSignal)
    process.on('SIGINT', onSignal)
    workload.start()
    const { writes, records } = workload.header
    out(JSON.stringify({ event: 'ready', pid: process.pid, writes, records }))
  })
}

async function runVerify (values: RawValues): Promise<number> {
  const json = values.json === true
  const opts = {
    memoryPath: requireString(values, 'memory-path'),
    cachePath: requireString(values, 'cache-path'),
    writes: optional(values, 'writes', parseCount),
    records: optional(values, 'records', parseCount)
  }
  let result: VerifyResult
  try {
    result = await verifyImage(opts)
  } catch (error) {
    // An image without a valid header is a failed verification, not a usage error.
    if (!isImageError(error)) throw error
    if (json) out(JSON.stringify({ ok: false, error: error.message, code: error.code }))
    else out(`FAILED: ${error.message}`)
    return EXIT.verifyFailed
  }
  if (json) out(JSON.stringify(result))
  else if (result.ok) {
    out(`OK: ${result.writes} writes (+${result.inFlightWrites} in flight), ${result.records} records (+${result.inFlightRecords} in flight); ` +
      `${result.pagesChecked} pages and ${result.recordsChecked} records checked`)
  } else printFailures(out, result)
  return result.ok ? EXIT.ok : EXIT.verifyFailed
}

function isUsageError (error: unknown): error is Error {
  if (error instanceof InvalidArgumentError || error instanceof ImageExistsError) return true
  // parseArgs errors and fs errors (ENOENT, EACCES, ...) carry a string code.
  const code = (error as { code?: unknown } | null)?.code
  return error instanceof Error && typeof code === 'string' && (code.startsWith('ERR_PARSE_ARGS') || /^E[A-Z]+$/.test(code))
}

/**
 * `standby`: boots, says so on stdout, and waits for one line on stdin holding the JSON array of
 * the real arguments (e.g. `["run", "--memory-path", ...]`). Lets a migration destination start
 * the process before the switchover, so the pause does not include Node's start-up.
 */
async function standby (): Promise<number> {
  out(JSON.stringify({ event: 'standby', pid: process.pid }))
  let line = ''
  for await (const chunk of process.stdin) {
    line += String(chunk)
    if (line.includes('\n')) break
  }
  process.stdin.pause()
  let args: unknown
  try { args = JSON.parse(line) } catch { args = undefined }
  if (!Array.isArray(args) || !args.every(a => typeof a === 'string') || args[0] === 'standby') {
    err('shoal-workload standby: expected a JSON array of arguments on stdin')
    return EXIT.usage
  }
  return await main(args as string[])
}

/**
 * Runs the CLI with `argv` (without node and script) and resolves to the exit code; for `run`
 * that is once SIGTERM/SIGINT has stopped the workload.
 */
export async function main (argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv
  if (command === 'standby') return await standby()
  if (command === '--help' || command === '-h' || command === 'help') {
    out(USAGE)
    return EXIT.ok
  }
  const spec = command === undefined ? undefined : COMMANDS[command]
  if (spec === undefined) {
    err(command === undefined ? 'shoal-workload: missing command' : `shoal-workload: unknown command "${command}"`)
    err(USAGE)
    return EXIT.usage
  }
  try {
    const { values } = parseArgs({ args: [...rest], options: spec.options, strict: true, allowPositionals: false })
    if (values.help === true) {
      out(USAGE)
      return EXIT.ok
    }
    return await spec.run(values)
  } catch (error) {
    if (isImageError(error)) {
      err(`shoal-workload ${command}: ${error.message}`)
      return EXIT.usage
    }
    if (isUsageError(error)) {
      err(`shoal-workload ${command}: ${error.message}`)
      err(`Run "shoal-workload --help" for usage.`)
      return EXIT.usage
    }
    throw error
  }
}

type CacheOptions = Pick<WorkloadInit, 'dirtyMarks' | 'cacheMarks' | 'postcopy' | 'cacheReads'>

/**
 * The options about cache blocks, which share one `--block-size`: `--dirty-marks F`,
 * `--cache-marks F`, `--cache-present F --cache-faults SOCKET` (post-copy) and
 * `--cache-reads N [--cache-hashes F]`.
 */
function blockOptionsOf (values: RawValues, cachePath: string): CacheOptions {
  const dirty = optionalString(values, 'dirty-marks')
  const cache = optionalString(values, 'cache-marks')
  const present = optionalString(values, 'cache-present')
  const faults = optionalString(values, 'cache-faults')
  if ((present == null) !== (faults == null)) {
    throw new InvalidArgumentError('--cache-present and --cache-faults go together (post-copy needs both)', present == null ? '--cache-present' : '--cache-faults')
  }
  const reads = optional(values, 'cache-reads', parseRate) ?? 0
  const hashesOption = optionalString(values, 'cache-hashes')
  if (hashesOption != null && values['cache-reads'] === undefined) throw new InvalidArgumentError('--cache-hashes goes with --cache-reads', '--cache-hashes')
  // Shoal keeps a volume cache's block hashes beside it (@shoal/core `cacheMetaPaths`).
  const defaultHashes = `${cachePath}${CACHE_HASHES_SUFFIX}`
  const hashes = reads > 0 ? hashesOption ?? (existsSync(defaultHashes) ? defaultHashes : undefined) : undefined
  if (reads > 0 && hashes == null) {
    throw new InvalidArgumentError(`--cache-reads needs the block hashes of the volume the cache caches: there is no ${defaultHashes}, pass --cache-hashes`, '--cache-reads')
  }

  const size = optional(values, 'block-size', parseSize)
  const users = [dirty != null && '--dirty-marks', cache != null && '--cache-marks', present != null && '--cache-present', reads > 0 && '--cache-reads'].filter(u => u !== false)
  if (users.length === 0) {
    if (size != null) throw new InvalidArgumentError('--block-size goes with --dirty-marks, --cache-marks, --cache-present or --cache-reads', '--block-size')
    return {}
  }
  if (size == null) throw new InvalidArgumentError(`${users.join(', ')} need${users.length === 1 ? 's' : ''} --block-size`, '--block-size')
  if (size < 512 || (size & (size - 1)) !== 0) throw new InvalidArgumentError('--block-size must be a power of two of at least 512', '--block-size')
  return {
    ...(dirty != null ? { dirtyMarks: { path: dirty, blockSize: size } } : {}),
    ...(cache != null ? { cacheMarks: { path: cache, blockSize: size } } : {}),
    ...(present != null && faults != null ? { postcopy: { presentPath: present, socketPath: faults, blockSize: size } } : {}),
    ...(hashes != null ? { cacheReads: { rate: reads, hashesPath: hashes, blockSize: size } } : {})
  }
}
