import { InvalidArgumentError } from 'commander'
import { checkBlockSize, checkLanes, checkName, InvalidArgumentError as ShoalInvalidArgumentError, ShoalError } from '@shoal/core'

const SIZE_RE = /^(\d+)\s*(k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)?$/i
const MULT: Record<string, number> = { k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }

/** Parses "4096", "64k", "256M", "1GiB" (binary units) for a commander option. */
export function parseSize (value: string): number {
  const m = SIZE_RE.exec(value.trim())
  if (m == null) throw new InvalidArgumentError(`"${value}" is not a size (examples: 4096, 64k, 256M, 1G)`)
  const n = Number(m[1]) * (m[2] != null ? MULT[m[2][0]!.toLowerCase()]! : 1)
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`"${value}" is too large`)
  return n
}

/** Parses a positive integer for a commander option. */
export function parsePositiveInt (value: string): number {
  const n = Number(value)
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`"${value}" is not a positive integer`)
  return n
}

/** Parses a non-negative integer (a count where 0 means none) for a commander option. */
export function parseCount (value: string): number {
  const n = Number(value)
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n > 256) throw new InvalidArgumentError(`"${value}" is not an integer from 0 to 256`)
  return n
}

/** Parses a non-negative number (a rate) for a commander option. */
export function parseRate (value: string): number {
  const n = Number(value)
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`"${value}" is not a non-negative number`)
  return n
}

/** Collects a repeatable option whose values are comma-separated lists into one array (blanks dropped). */
export function collectList (value: string, previous: string[] = []): string[] {
  return [...previous, ...value.split(',').map(v => v.trim()).filter(v => v !== '')]
}

/** Collects a repeatable option into an array. */
export function collect (value: string, previous: string[] = []): string[] {
  return [...previous, value]
}

/**
 * Parses a block number (a non-negative integer) given as a command argument: the action calls
 * it, so it throws Shoal's error (commander only reports its own errors from option parsers).
 */
export function parseBlock (value: string): number {
  const n = Number(value)
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n)) throw new ShoalInvalidArgumentError(`"${value}" is not a block number`)
  return n
}

/** Parses a share of a core, in (0, 1]. */
export function parseShare (value: string): number {
  const n = Number(value)
  if (value.trim() === '' || !(n > 0 && n <= 1)) throw new InvalidArgumentError(`"${value}" is not a share in (0, 1]`)
  return n
}

/**
 * Runs a rule of `@shoal/core`'s limits for a commander option: a broken rule becomes commander's
 * error, which prints one line naming the option, the rule and the value.
 */
function byRule<T> (check: () => T): T {
  try {
    return check()
  } catch (err) {
    if (err instanceof ShoalError) throw new InvalidArgumentError(err.message)
    throw err
  }
}

/** Parses a cache or volume block size ("256k") and checks it against the block size rule. */
export function parseBlockSize (value: string): number {
  const n = parseSize(value)
  return byRule(() => checkBlockSize(n, 'the block size'))
}

/** Parses a lane count and checks it against the lane rule. */
export function parseLanes (value: string): number {
  const n = parsePositiveInt(value)
  return byRule(() => checkLanes(n, 'the lane count'))
}

/** Checks an image name argument (throws `@shoal/core`'s InvalidArgumentError naming the rule). */
export function checkImageName (name: string): string {
  return checkName(name, 'image name')
}

/** Checks a volume id argument. */
export function checkVolumeId (id: string): string {
  return checkName(id, 'volume id')
}
