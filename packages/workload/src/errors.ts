/**
 * One error class per failure kind. Callers branch on `name` or `code`, never on message text.
 *
 * The workload is its own small process with no dependencies, so these classes do not extend
 * `@shoal/core`'s `ShoalError`; their codes are listed in core's `ERROR_TABLE` (and
 * docs/ERRORS.md), and core's `errorCode()` reports them as they are.
 */

/** An option has a missing, malformed or out-of-range value. */
export class InvalidArgumentError extends Error {
  static override name = 'InvalidArgumentError'
  /** Stable code, as in core's ERROR_TABLE. */
  static readonly code = 'ERR_INVALID_ARGUMENT'
  readonly code = 'ERR_INVALID_ARGUMENT'
  /** The offending option, spelled as on the command line (e.g. `--memory-size`). */
  readonly option: string | undefined

  constructor (message = 'Invalid argument', option?: string) {
    super(message)
    this.name = 'InvalidArgumentError'
    this.option = option
  }
}

/** `init` was asked to create an image file that already exists (and `force` was not set). */
export class ImageExistsError extends Error {
  static override name = 'ImageExistsError'
  /** Stable code, as in core's ERROR_TABLE. */
  static readonly code = 'ERR_IMAGE_EXISTS'
  readonly code = 'ERR_IMAGE_EXISTS'

  constructor (message = 'Image file already exists') {
    super(message)
    this.name = 'ImageExistsError'
  }
}

/** The header page is not a valid workload header (magic, version or checksum). */
export class InvalidHeaderError extends Error {
  static override name = 'InvalidHeaderError'
  /** Stable code, as in core's ERROR_TABLE. */
  static readonly code = 'ERR_INVALID_HEADER'
  readonly code = 'ERR_INVALID_HEADER'

  constructor (message = 'Invalid workload header') {
    super(message)
    this.name = 'InvalidHeaderError'
  }
}

/** The header is valid but describes files of other sizes than the ones on disk. */
export class ImageSizeMismatchError extends Error {
  static override name = 'ImageSizeMismatchError'
  /** Stable code, as in core's ERROR_TABLE. */
  static readonly code = 'ERR_IMAGE_SIZE_MISMATCH'
  readonly code = 'ERR_IMAGE_SIZE_MISMATCH'

  constructor (message = 'Image file size does not match its header') {
    super(message)
    this.name = 'ImageSizeMismatchError'
  }
}
