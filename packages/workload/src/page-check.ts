/**
 * Judging one data page: first what it holds (a scan that needs no replay), then whether that
 * is what it should hold (once the replay has said which write each page expects).
 */

import { PAGE_SIZE } from './constants.js'
import { decodePageStamp, encodePage, type FillMode } from './format.js'

// What a page holds, as stored in the scan's Float64Array: n >= 1 is an intact write n,
// 0 is initial content, negatives are damage codes (numbers, so the scan allocates nothing).
const INITIAL = 0
const BAD_CHECKSUM = -1
const BAD_FILL = -2
const MISPLACED = -3
const NOT_ZERO = -4
const BAD_SEQUENCE = -5

const DAMAGE: ReadonlyMap<number, string> = new Map([
  [BAD_CHECKSUM, 'checksum mismatch (page stamp present, content damaged)'],
  [BAD_FILL, 'fill mismatch (checksum valid but content is not what the stamped write wrote)'],
  [MISPLACED, 'holds a valid stamp of another page'],
  [NOT_ZERO, 'neither a written page nor zero'],
  [BAD_SEQUENCE, 'stamp has write number 0']
])

const ZERO_PAGE = Buffer.alloc(PAGE_SIZE)

/**
 * Classifies one page: the intact write number it holds, 0 for initial content, or a negative
 * damage code. `scratch` is a page-sized buffer used to rebuild the expected bytes.
 */
export function checkPage (buf: Buffer, page: number, pageKey: number, fill: FillMode, scratch: Buffer): number {
  const stamp = decodePageStamp(buf)
  if (stamp.valid) {
    if (stamp.page !== page) return MISPLACED
    if (stamp.n < 1) return BAD_SEQUENCE
    // A valid crc proves the page is as written; comparing with the recomputed page also proves
    // it was written by this image's write n (same seed), not copied from elsewhere.
    return buf.equals(encodePage(pageKey, page, stamp.n, scratch)) ? stamp.n : BAD_FILL
  }
  if (fill === 'zero') {
    if (buf.equals(ZERO_PAGE)) return INITIAL
    return stamp.hasMagic ? BAD_CHECKSUM : NOT_ZERO
  }
  // Random initial bytes cannot be checked; a page that was written but lost its stamp shows up
  // as "initial content" where a write was expected.
  return stamp.hasMagic ? BAD_CHECKSUM : INITIAL
}

/**
 * Compares what a page holds (`found`, from {@link checkPage}) with the write it should hold
 * (`expected`, 0 = never written). Returns undefined if fine, else the reason.
 */
export function describePageProblem (found: number, expected: number, pendingWrites: number): string | undefined {
  if (found === expected) return undefined
  if (found < 0) return DAMAGE.get(found) ?? `damaged (code ${found})`
  if (found === INITIAL) return `lost: holds initial content, expected write ${expected}`
  if (found > pendingWrites) return `holds write ${found}, beyond the header's last possible write ${pendingWrites}`
  if (expected === 0) return `holds write ${found}, but no write up to the verified point targets this page`
  if (found < expected) return `stale: holds write ${found}, expected write ${expected}`
  return `holds write ${found}, expected write ${expected} (write ${found} targets another page)`
}
