/**
 * One error class per failure kind. Callers branch on `name` or `code`, never on message text.
 *
 * They extend `@shoal/core`'s `ShoalError` (imported from `@shoal/core/errors` alone, so the
 * workload process does not load the rest of core at start), carry a stable `code` listed in
 * core's `ERROR_TABLE` and docs/ERRORS.md, and are reported by `errorCode()` as they are.
 */
import { ShoalError } from '@shoal/core/errors'

/** An option has a missing, malformed or out-of-range value. */
export class InvalidArgumentError extends ShoalError {
  static override readonly code = 'ERR_INVALID_ARGUMENT'
  /** The offending option, spelled as on the command line (e.g. `--memory-size`). */
  readonly option: string | undefined

  constructor (message = 'Invalid argument', option?: string) {
    super(message)
    this.option = option
  }
}

/** `init` was asked to create an image file that already exists (and `force` was not set). */
export class ImageExistsError extends ShoalError {
  static override readonly code = 'ERR_IMAGE_EXISTS'
  constructor (message = 'Image file already exists') { super(message) }
}

/** The header page is not a valid workload header (magic, version or checksum). */
export class InvalidHeaderError extends ShoalError {
  static override readonly code = 'ERR_INVALID_HEADER'
  constructor (message = 'Invalid workload header') { super(message) }
}

/** The header is valid but describes files of other sizes than the ones on disk. */
export class ImageSizeMismatchError extends ShoalError {
  static override readonly code = 'ERR_IMAGE_SIZE_MISMATCH'
  constructor (message = 'Image file size does not match its header') { super(message) }
}

/**
 * The node answered a post-copy cache fault (`R`/`W <block>`) with `ERR <block> <code>`: the
 * block cannot be used, so the workload stops appending and reading rather than touch it.
 */
export class CacheFaultError extends ShoalError {
  static override readonly code = 'ERR_CACHE_FAULT'
  /** The block the node refused. */
  readonly block: number | undefined
  /** The code the node answered with (`ERR <block> <code>`). */
  readonly remoteCode: string | undefined

  constructor (message = 'The node refused a cache block fault', block?: number, remoteCode?: string) {
    super(message)
    this.block = block
    this.remoteCode = remoteCode
  }
}
