/**
 * Typed errors of Shoal. Code branches on the class or `name`, never on message text.
 * Errors that cross the wire carry a stable `code` (see docs/ARCHITECTURE.md).
 */

/** Base class of every Shoal error; `code` is stable and travels in ABORT frames. */
export class ShoalError extends Error {
  static readonly code: string = 'ERR_SHOAL'
  readonly code: string

  constructor (message: string, code?: string, options?: ErrorOptions) {
    super(message, options)
    this.name = new.target.name
    this.code = code ?? (new.target as unknown as { code: string }).code
  }
}

/** A frame was malformed, truncated, oversized or carried an invalid field. */
export class InvalidFrameError extends ShoalError {
  static override readonly code = 'ERR_INVALID_FRAME'
  constructor (message = 'invalid frame', options?: ErrorOptions) { super(message, undefined, options) }
}

/** The peer speaks a protocol version this node does not understand. */
export class UnsupportedVersionError extends ShoalError {
  static override readonly code = 'ERR_UNSUPPORTED_VERSION'
  constructor (message = 'unsupported protocol version') { super(message) }
}

/** The remote peer is not on the allow-list of this node. */
export class UnauthorizedPeerError extends ShoalError {
  static override readonly code = 'ERR_UNAUTHORIZED_PEER'
  constructor (message = 'peer is not allowed to migrate into this node') { super(message) }
}

/** The named image does not exist (or is not in a state that allows the operation). */
export class UnknownImageError extends ShoalError {
  static override readonly code = 'ERR_UNKNOWN_IMAGE'
  constructor (message = 'unknown image') { super(message) }
}

/** The destination already holds an image of that name. */
export class ImageExistsError extends ShoalError {
  static override readonly code = 'ERR_IMAGE_EXISTS'
  constructor (message = 'image already exists') { super(message) }
}

/** An image description (sizes, page size, paths) is invalid. */
export class InvalidImageError extends ShoalError {
  static override readonly code = 'ERR_INVALID_IMAGE'
  constructor (message = 'invalid image description') { super(message) }
}

/** The destination's copy did not hash to the source's digest. */
export class VerificationFailedError extends ShoalError {
  static override readonly code = 'ERR_VERIFICATION_FAILED'
  constructor (message = 'destination copy does not match the source') { super(message) }
}

/** A lane died (closed, reset or timed out). */
export class LaneClosedError extends ShoalError {
  static override readonly code = 'ERR_LANE_CLOSED'
  constructor (message = 'lane closed') { super(message) }
}

/** Every lane of a session is gone. */
export class NoLanesError extends ShoalError {
  static override readonly code = 'ERR_NO_LANES'
  constructor (message = 'no usable lane left') { super(message) }
}

/** The peer aborted the migration; `remoteCode` is the code it sent. */
export class RemoteAbortError extends ShoalError {
  static override readonly code = 'ERR_REMOTE_ABORT'
  readonly remoteCode: string
  constructor (remoteCode: string, message: string) {
    super(`peer aborted: ${message} (${remoteCode})`)
    this.remoteCode = remoteCode
  }
}

/** The operation was aborted locally (AbortSignal). */
export class AbortedError extends ShoalError {
  static override readonly code = 'ERR_ABORTED'
  constructor (message = 'migration aborted') { super(message) }
}

/** The peer did not answer within the protocol's time limit. */
export class TimeoutError extends ShoalError {
  static override readonly code = 'ERR_TIMEOUT'
  constructor (message = 'timed out') { super(message) }
}

/** The peer broke the protocol order (a frame that is not valid in the current state). */
export class ProtocolError extends ShoalError {
  static override readonly code = 'ERR_PROTOCOL'
  constructor (message = 'protocol violation') { super(message) }
}

/**
 * COMMIT was sent but its acknowledgement never came: the destination may or may not be
 * running the workload, so the source stays paused and keeps its image (no split brain).
 */
export class CommitUnknownError extends ShoalError {
  static override readonly code = 'ERR_COMMIT_UNKNOWN'
  constructor (message = 'commit sent but not acknowledged; source kept paused with its image intact') { super(message) }
}

/** The workload controller failed (pause, resume, device state). */
export class WorkloadError extends ShoalError {
  static override readonly code = 'ERR_WORKLOAD'
  constructor (message = 'workload controller failed', options?: ErrorOptions) { super(message, undefined, options) }
}

/** A caller passed a bad argument (CLI flag, option, peer address). */
export class InvalidArgumentError extends ShoalError {
  static override readonly code = 'ERR_INVALID_ARGUMENT'
  constructor (message = 'invalid argument') { super(message) }
}

/** A block's bytes do not hash to the SHA-256 they were asked for (a corrupt or lying replica). */
export class BlockHashMismatchError extends ShoalError {
  static override readonly code = 'ERR_BLOCK_HASH_MISMATCH'
  constructor (message = 'block does not match its hash') { super(message) }
}

/** The peer holds no volume of that id. */
export class UnknownVolumeError extends ShoalError {
  static override readonly code = 'ERR_UNKNOWN_VOLUME'
  constructor (message = 'unknown volume') { super(message) }
}

/** A cache's metadata files are missing or do not match the cache. */
export class CacheMetaError extends ShoalError {
  static override readonly code = 'ERR_CACHE_META'
  constructor (message = 'bad cache metadata') { super(message) }
}

/** An image's driver configuration is invalid (names the field), or its driver is not on this node. */
export class InvalidDriverConfigError extends ShoalError {
  static override readonly code = 'ERR_INVALID_DRIVER_CONFIG'
  constructor (message = 'invalid driver configuration') { super(message) }
}

/** Every stable error code, for docs and for mapping codes received on the wire. */
export const ERROR_CODES: readonly string[] = [
  ShoalError, CacheMetaError, InvalidFrameError, UnsupportedVersionError, UnauthorizedPeerError, UnknownImageError,
  ImageExistsError, InvalidImageError, VerificationFailedError, LaneClosedError, NoLanesError,
  RemoteAbortError, AbortedError, TimeoutError, ProtocolError, CommitUnknownError, WorkloadError, InvalidArgumentError,
  BlockHashMismatchError, UnknownVolumeError, InvalidDriverConfigError
].map(e => e.code)

/** Returns the stable code of any thrown value. */
export function errorCode (err: unknown): string {
  return err instanceof ShoalError ? err.code : 'ERR_INTERNAL'
}
