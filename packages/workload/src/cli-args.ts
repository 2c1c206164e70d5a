/**
 * Parsing of option values for the CLI. Every failure is an {@link InvalidArgumentError} that
 * names the option, so the user learns exactly what to fix.
 */

import { InvalidArgumentError } from './errors.js'

const SIZE_UNITS: Readonly<Record<string, number>> = {
  '': 1,
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
  t: 1024 ** 4
}

/** Raw values as produced by `node:util` `parseArgs`. */
export type RawValues = Record<string, string | boolean | undefined>

/** The string value of `--name`, or an error if it is absent. */
export function requireString (values: RawValues, name: string): string {
  const value = values[name]
  if (typeof value !== 'string' || value === '') {
    throw new InvalidArgumentError(`missing required option --${name}`, `--${name}`)
  }
  return value
}

/** The string value of `--name`, or undefined if absent. */
export function optionalString (values: RawValues, name: string): string | undefined {
  const value = values[name]
  return typeof value === 'string' ? value : undefined
}

/** A byte size: an integer with an optional binary unit (`4096`, `64k`, `256M`, `1GiB`). */
export function parseSize (value: string, option: string): number {
  const match = /^(\d+)\s*([kmgt]?)(?:i?b)?$/i.exec(value.trim())
  const unit = SIZE_UNITS[(match?.[2] ?? '').toLowerCase()]
  const size = match?.[1] !== undefined && unit !== undefined ? Number(match[1]) * unit : NaN
  if (!Number.isSafeInteger(size)) {
    throw new InvalidArgumentError(`${option} must be a byte size like 4096, 64k or 256M (got "${value}")`, option)
  }
  return size
}

/** A non-negative integer (counts, percentages, page numbers). */
export function parseCount (value: string, option: string): number {
  const count = /^\d+$/.test(value.trim()) ? Number(value) : NaN
  if (!Number.isSafeInteger(count)) {
    throw new InvalidArgumentError(`${option} must be a non-negative integer (got "${value}")`, option)
  }
  return count
}

/** A non-negative rate per second; fractions allowed (0.5 = one every two seconds). */
export function parseRate (value: string, option: string): number {
  const rate = /^\d+(\.\d+)?$/.test(value.trim()) ? Number(value) : NaN
  if (!Number.isFinite(rate)) {
    throw new InvalidArgumentError(`${option} must be a non-negative number per second (got "${value}")`, option)
  }
  return rate
}

/** An unsigned 64-bit seed, decimal or 0x-hex. */
export function parseSeed (value: string, option: string): bigint {
  const text = value.trim()
  const seed = /^(\d+|0x[0-9a-f]+)$/i.test(text) ? BigInt(text) : -1n
  if (seed < 0n || seed >= 1n << 64n) {
    throw new InvalidArgumentError(`${option} must be an unsigned 64-bit integer, decimal or 0x-hex (got "${value}")`, option)
  }
  return seed
}
