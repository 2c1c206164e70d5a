import { NoSpaceError, ShoalError, StorageError } from './errors.js'

/** Error codes of a full file system or quota. */
const NO_SPACE = new Set(['ENOSPC', 'EDQUOT'])

/** True when `err` is a system error with an errno code (`ENOSPC`, `EIO`, ...). */
export function isSystemError (err: unknown): err is NodeJS.ErrnoException & { code: string } {
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string' && /^E[A-Z0-9]+$/.test((err as NodeJS.ErrnoException).code!)
}

/**
 * The typed error for a failed local read or write: {@link NoSpaceError} for a full file system
 * or quota, {@link StorageError} for any other system error, `err` itself when it already is a
 * Shoal error. `what` names what was being written (it goes into the message the peer sees).
 */
export function storageFailure (err: unknown, what: string): ShoalError {
  if (err instanceof ShoalError) return err
  if (isSystemError(err)) {
    if (NO_SPACE.has(err.code)) return new NoSpaceError(`no space left writing ${what} (${err.code})`, { cause: err })
    return new StorageError(`${err.code} on ${what}: ${err.message}`, { cause: err })
  }
  return new StorageError(`failed on ${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
}
