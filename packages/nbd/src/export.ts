import { DEFAULT_PREFERRED_BLOCK_SIZE } from './constants.js'
import { NbdInvalidExportError } from './errors.js'
import {
  MAX_STRING_BYTES, TFLAG_CAN_MULTI_CONN, TFLAG_HAS_FLAGS, TFLAG_READ_ONLY, TFLAG_SEND_FLUSH, TFLAG_SEND_FUA,
  TFLAG_SEND_TRIM, TFLAG_SEND_WRITE_ZEROES
} from './protocol.js'

/** What the server passes to every backend call besides the range. */
export interface NbdRequestOptions {
  /** Aborted when the client's connection closes or the server stops: a long fetch may give up. */
  signal: AbortSignal
}

/**
 * One disk served under a name. The server checks every request against `size` and `readOnly`
 * before it calls the backend, so the methods only see in-range requests; they may take long (a
 * read that waits for a block fetched over the network) while the server keeps serving other
 * requests of the same connection. A rejected promise becomes an error reply (`ENOSPC` for an
 * error whose `code` is `ENOSPC`, `EDQUOT` or `EFBIG`, `EPERM` for `EPERM`/`EACCES`/`EROFS`,
 * `EIO` otherwise) and never closes the connection.
 */
export interface NbdExport {
  /** Size in bytes (a non-negative safe integer); fixed for the life of a connection. */
  size: number
  /** Writes, trims and zeroing get `EPERM`; advertised to the client (default false). */
  readOnly?: boolean
  /**
   * Advertise `NBD_FLAG_CAN_MULTI_CONN`: true only if a flush on one connection makes the writes
   * of every connection durable and visible to all (default false).
   */
  multiConn?: boolean
  /** Block size at which requests are efficient, a power of two from 512 to the maximum payload (default 4096). */
  preferredBlockSize?: number
  /** Shown to a client that asks for `NBD_INFO_DESCRIPTION` (at most 4096 bytes of UTF-8). */
  description?: string
  /** Returns exactly `length` bytes from `offset`. */
  read: (offset: number, length: number, options: NbdRequestOptions) => Promise<Uint8Array>
  /** Writes `data` at `offset`; need not be durable before {@link NbdExport.flush}. */
  write: (offset: number, data: Uint8Array, options: NbdRequestOptions) => Promise<void>
  /** Makes every write that completed before it durable. */
  flush: (options: NbdRequestOptions) => Promise<void>
  /** Discards a range (its contents are undefined afterwards); advertised only when present. */
  trim?: (offset: number, length: number, options: NbdRequestOptions) => Promise<void>
  /**
   * Makes a range read back as zeroes, leaving it allocated (the server honours `NO_HOLE` by
   * relying on that); advertised only when present.
   */
  writeZeroes?: (offset: number, length: number, options: NbdRequestOptions) => Promise<void>
}

/** An export checked once at the handshake: what the server advertises and enforces. */
export interface ExportView {
  readonly name: string
  readonly backend: NbdExport
  readonly size: number
  readonly readOnly: boolean
  /** Transmission flags sent to the client. */
  readonly flags: number
  readonly preferredBlockSize: number
}

function isPowerOfTwo (n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0
}

/**
 * Checks an export and computes its transmission flags: only what it supports is advertised.
 * Throws {@link NbdInvalidExportError} naming the bad field.
 */
export function viewExport (name: string, backend: NbdExport, maxPayload: number): ExportView {
  for (const method of ['read', 'write', 'flush'] as const) {
    if (typeof backend[method] !== 'function') throw new NbdInvalidExportError(`export ${JSON.stringify(name)}: ${method} must be a function`)
  }
  if (!Number.isSafeInteger(backend.size) || backend.size < 0) throw new NbdInvalidExportError(`export ${JSON.stringify(name)}: size must be a non-negative safe integer, got ${String(backend.size)}`)
  const preferredBlockSize = backend.preferredBlockSize ?? Math.min(DEFAULT_PREFERRED_BLOCK_SIZE, maxPayload)
  if (!isPowerOfTwo(preferredBlockSize) || preferredBlockSize < 512 || preferredBlockSize > maxPayload) {
    throw new NbdInvalidExportError(`export ${JSON.stringify(name)}: preferredBlockSize must be a power of two from 512 to ${maxPayload}, got ${String(backend.preferredBlockSize)}`)
  }
  if (backend.description !== undefined && Buffer.byteLength(backend.description) > MAX_STRING_BYTES) {
    throw new NbdInvalidExportError(`export ${JSON.stringify(name)}: description is longer than ${MAX_STRING_BYTES} bytes`)
  }
  const readOnly = backend.readOnly === true
  let flags = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_FUA
  if (readOnly) flags |= TFLAG_READ_ONLY
  if (backend.trim !== undefined) flags |= TFLAG_SEND_TRIM
  if (backend.writeZeroes !== undefined) flags |= TFLAG_SEND_WRITE_ZEROES
  if (backend.multiConn === true) flags |= TFLAG_CAN_MULTI_CONN
  return { name, backend, size: backend.size, readOnly, flags, preferredBlockSize }
}
