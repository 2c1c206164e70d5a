/**
 * Every limit and rule on names and sizes, defined once. The CLI, the control API, the wire
 * codec, image validation and the stores all call these checks, so that whatever one of them
 * accepts the others accept too (an image that can be created can be encoded in a HELLO and
 * therefore migrated).
 *
 * A check throws the error class its caller passes: {@link InvalidFrameError} for bytes from
 * the wire, {@link InvalidImageError} for an image description, {@link InvalidArgumentError}
 * (the default) for a flag or a request field. The message names the value (by the label the
 * caller gives, e.g. `--block-size` or `cache.blockSize`), the rule and what was given.
 */
import { MAX_DEVICE_STATE, MAX_FRAME_SIZE } from './constants.js'
import { ImageTooLargeError, InvalidArgumentError } from './errors.js'
import type { ShoalError } from './errors.js'
import type { ImageGeometry } from './driver/driver.js'

/** The error class a caller wants for a broken rule (e.g. `InvalidFrameError`, `InvalidImageError`). */
export type RuleError = new (message: string) => ShoalError

const KiB = 1024
const MiB = 1024 * KiB
const GiB = 1024 * MiB
const TiB = 1024 * GiB

// ---- names ---------------------------------------------------------------------------------

/** Longest image name, volume id or driver name, in characters. */
export const MAX_NAME_LENGTH = 128
/**
 * Image names, volume ids and driver names: they become file names, so only portable file-name
 * characters, and no leading dot (no `.`, `..` or hidden files).
 */
export const NAME_PATTERN = /^(?!\.)[A-Za-z0-9._-]{1,128}$/
/** {@link NAME_PATTERN} in words, for error messages and docs. */
export const NAME_RULE = `1-${MAX_NAME_LENGTH} characters of A-Z a-z 0-9 . _ -, not starting with a dot`

/** Whether `value` is a valid image name, volume id or driver name. */
export function isValidName (value: unknown): value is string {
  return typeof value === 'string' && NAME_PATTERN.test(value)
}

/** Throws unless `value` follows {@link NAME_RULE}; `what` names it (e.g. `image name`). */
export function checkName (value: unknown, what: string, ErrorClass: RuleError = InvalidArgumentError): string {
  if (!isValidName(value)) throw new ErrorClass(`invalid ${what} ${describe(value)}: it must be ${NAME_RULE}`)
  return value
}

// ---- memory pages and cache blocks -----------------------------------------------------------

/** Smallest memory page size. */
export const MIN_PAGE_SIZE = 512
/** Largest memory page size. */
export const MAX_PAGE_SIZE = 1 * MiB
/** Smallest cache (and replica volume) block size. */
export const MIN_BLOCK_SIZE = 4 * KiB
/**
 * Largest cache (and replica volume) block size: one block must fit in one frame
 * (`MAX_FRAME_SIZE` is this plus room for the frame's header).
 */
export const MAX_BLOCK_SIZE = 4 * MiB
/** Most pages in a memory or blocks in a cache: unit numbers travel as u32 on the wire. */
export const MAX_UNITS = 0xffffffff
/** Largest data chunk a migration may be asked to cut (a chunk travels as one frame). */
export const MAX_CHUNK_BYTES = 4 * MiB
/** Most lanes one migration may open (u16 on the wire, and a sane cap on streams). */
export const MAX_LANES = 256
/** Largest driver config, as JSON bytes (it travels in the HELLO). */
export const MAX_DRIVER_CONFIG_BYTES = 64 * KiB
/**
 * Default of a node's configurable maximum image size (memory + cache), checked for new and
 * incoming images with {@link checkImageSize}.
 */
export const DEFAULT_MAX_IMAGE_SIZE = 1 * TiB

export { MAX_FRAME_SIZE, MAX_DEVICE_STATE }

function isPow2 (n: number): boolean { return Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0 }

/** Throws unless `n` is a power of two in [{@link MIN_PAGE_SIZE}, {@link MAX_PAGE_SIZE}]. */
export function checkPageSize (n: unknown, label = 'page size', ErrorClass: RuleError = InvalidArgumentError): number {
  return checkPow2(n, MIN_PAGE_SIZE, MAX_PAGE_SIZE, label, ErrorClass)
}

/** Throws unless `n` is a power of two in [{@link MIN_BLOCK_SIZE}, {@link MAX_BLOCK_SIZE}]. */
export function checkBlockSize (n: unknown, label = 'block size', ErrorClass: RuleError = InvalidArgumentError): number {
  return checkPow2(n, MIN_BLOCK_SIZE, MAX_BLOCK_SIZE, label, ErrorClass)
}

function checkPow2 (n: unknown, min: number, max: number, label: string, ErrorClass: RuleError): number {
  if (typeof n !== 'number' || !isPow2(n) || n < min || n > max) {
    throw new ErrorClass(`${label} must be a power of two from ${formatSize(min)} to ${formatSize(max)} (got ${describeSize(n)})`)
  }
  return n
}

/**
 * Throws unless `size` is a whole number of `unit`s (≥ 0) and at most {@link MAX_UNITS} of them.
 * `unitLabel` names the unit in the message (e.g. `the page size`).
 */
export function checkAreaSize (size: unknown, unit: number, label: string, unitLabel: string, ErrorClass: RuleError = InvalidArgumentError): number {
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0 || size % unit !== 0) {
    throw new ErrorClass(`${label} must be a multiple of ${unitLabel} (${formatSize(unit)}) (got ${describeSize(size)})`)
  }
  if (size / unit > MAX_UNITS) throw new ErrorClass(`${label} (${formatSize(size)}) has more than ${MAX_UNITS} units of ${formatSize(unit)}`)
  return size
}

/** How each field of {@link ImageGeometry} is called in messages (a flag, a spec field, a wire field). */
export type GeometryLabels = Record<keyof ImageGeometry, string>

/** Labels for bytes from the wire. */
export const WIRE_LABELS: GeometryLabels = { memorySize: 'memory size', pageSize: 'page size', cacheSize: 'cache size', blockSize: 'block size' }

/**
 * Checks an image's sizes: page and block sizes in range, memory and cache whole numbers of
 * them. The codec (HELLO), image validation and the CLI all call this one check.
 */
export function checkGeometry (g: ImageGeometry, ErrorClass: RuleError = InvalidArgumentError, labels: GeometryLabels = WIRE_LABELS): void {
  checkPageSize(g.pageSize, labels.pageSize, ErrorClass)
  checkAreaSize(g.memorySize, g.pageSize, labels.memorySize, 'the page size', ErrorClass)
  checkBlockSize(g.blockSize, labels.blockSize, ErrorClass)
  checkAreaSize(g.cacheSize, g.blockSize, labels.cacheSize, 'the block size', ErrorClass)
}

/** Throws {@link ImageTooLargeError} (or `ErrorClass`) if memory + cache exceed `max`. */
export function checkImageSize (g: Pick<ImageGeometry, 'memorySize' | 'cacheSize'>, max = DEFAULT_MAX_IMAGE_SIZE, ErrorClass: RuleError = ImageTooLargeError): void {
  const total = g.memorySize + g.cacheSize
  if (total > max) throw new ErrorClass(`image of ${formatSize(total)} (memory ${formatSize(g.memorySize)} + cache ${formatSize(g.cacheSize)}) exceeds this node's maximum of ${formatSize(max)}`)
}

/** Throws unless `n` is a lane count in 1..{@link MAX_LANES}. */
export function checkLanes (n: unknown, label = 'lanes', ErrorClass: RuleError = InvalidArgumentError): number {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > MAX_LANES) throw new ErrorClass(`${label} must be an integer from 1 to ${MAX_LANES} (got ${describe(n)})`)
  return n
}

/** Throws unless `n` is a chunk size in 1..{@link MAX_CHUNK_BYTES}. */
export function checkChunkBytes (n: unknown, label = 'chunk size', ErrorClass: RuleError = InvalidArgumentError): number {
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 1 || n > MAX_CHUNK_BYTES) throw new ErrorClass(`${label} must be from 1 byte to ${formatSize(MAX_CHUNK_BYTES)} (got ${describeSize(n)})`)
  return n
}

/** Throws unless `json` is a JSON text of at most {@link MAX_DRIVER_CONFIG_BYTES}. */
export function checkDriverConfigText (json: string, label = 'driver config', ErrorClass: RuleError = InvalidArgumentError): void {
  const n = Buffer.byteLength(json, 'utf8')
  if (n > MAX_DRIVER_CONFIG_BYTES) throw new ErrorClass(`${label} too large: ${formatSize(n)} of JSON, at most ${formatSize(MAX_DRIVER_CONFIG_BYTES)}`)
  try { JSON.parse(json) } catch { throw new ErrorClass(`${label} is not JSON`) }
}

/** Throws unless a device state of `bytes` fits {@link MAX_DEVICE_STATE}. */
export function checkDeviceStateSize (bytes: number, ErrorClass: RuleError = InvalidArgumentError): void {
  if (bytes > MAX_DEVICE_STATE) throw new ErrorClass(`device state too large: ${formatSize(bytes)}, at most ${formatSize(MAX_DEVICE_STATE)}`)
}

/** Bytes in binary units for messages: `4 KiB`, `8 MiB`, `4097 B`. */
export function formatSize (n: number): string {
  for (const [unit, size] of [['TiB', TiB], ['GiB', GiB], ['MiB', MiB], ['KiB', KiB]] as const) {
    if (n >= size && n % size === 0) return `${n / size} ${unit}`
  }
  return `${n} B`
}

function describeSize (v: unknown): string {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? formatSize(v) : describe(v)
}

function describe (v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 140 ? `${v.slice(0, 140)}…` : v)
  if (typeof v === 'number') return String(v)
  return v === undefined ? 'nothing' : typeof v === 'object' ? (v === null ? 'null' : 'an object') : typeof v
}
