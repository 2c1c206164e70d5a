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
  constructor (message = 'unsupported protocol version', options?: ErrorOptions) { super(message, undefined, options) }
}

/** The remote peer is not on the allow-list of this node. */
export class UnauthorizedPeerError extends ShoalError {
  static override readonly code = 'ERR_UNAUTHORIZED_PEER'
  constructor (message = 'peer is not allowed to migrate into this node', options?: ErrorOptions) { super(message, undefined, options) }
}

/** The named image does not exist (or is not in a state that allows the operation). */
export class UnknownImageError extends ShoalError {
  static override readonly code = 'ERR_UNKNOWN_IMAGE'
  constructor (message = 'unknown image', options?: ErrorOptions) { super(message, undefined, options) }
}

/** The destination already holds an image of that name. */
export class ImageExistsError extends ShoalError {
  static override readonly code = 'ERR_IMAGE_EXISTS'
  constructor (message = 'image already exists', options?: ErrorOptions) { super(message, undefined, options) }
}

/** An image description (sizes, page size, paths) is invalid. */
export class InvalidImageError extends ShoalError {
  static override readonly code = 'ERR_INVALID_IMAGE'
  constructor (message = 'invalid image description', options?: ErrorOptions) { super(message, undefined, options) }
}

/** The destination's copy did not hash to the source's digest. */
export class VerificationFailedError extends ShoalError {
  static override readonly code = 'ERR_VERIFICATION_FAILED'
  constructor (message = 'destination copy does not match the source', options?: ErrorOptions) { super(message, undefined, options) }
}

/** A lane died (closed, reset or timed out). */
export class LaneClosedError extends ShoalError {
  static override readonly code = 'ERR_LANE_CLOSED'
  constructor (message = 'lane closed', options?: ErrorOptions) { super(message, undefined, options) }
}

/** Every lane of a session is gone. */
export class NoLanesError extends ShoalError {
  static override readonly code = 'ERR_NO_LANES'
  constructor (message = 'no usable lane left', options?: ErrorOptions) { super(message, undefined, options) }
}

/** The peer aborted the migration; `remoteCode` is the code it sent. */
export class RemoteAbortError extends ShoalError {
  static override readonly code = 'ERR_REMOTE_ABORT'
  readonly remoteCode: string
  /** The peer's own message, as it sent it. */
  readonly remoteMessage: string
  constructor (remoteCode: string, message: string) {
    super(`peer aborted: ${message} (${remoteCode})`)
    this.remoteCode = remoteCode
    this.remoteMessage = message
  }
}

/** The operation was aborted locally (AbortSignal). */
export class AbortedError extends ShoalError {
  static override readonly code = 'ERR_ABORTED'
  constructor (message = 'migration aborted', options?: ErrorOptions) { super(message, undefined, options) }
}

/**
 * The error an aborted signal stands for: its own reason when that is an AbortedError (which
 * says who aborted and why, e.g. an operator's cancel), a plain AbortedError otherwise.
 */
export function abortedBy (signal: AbortSignal | undefined): AbortedError {
  return signal?.reason instanceof AbortedError ? signal.reason : new AbortedError()
}

/** The peer did not answer within the protocol's time limit. */
export class TimeoutError extends ShoalError {
  static override readonly code = 'ERR_TIMEOUT'
  constructor (message = 'timed out', options?: ErrorOptions) { super(message, undefined, options) }
}

/** The peer broke the protocol order (a frame that is not valid in the current state). */
export class ProtocolError extends ShoalError {
  static override readonly code = 'ERR_PROTOCOL'
  constructor (message = 'protocol violation', options?: ErrorOptions) { super(message, undefined, options) }
}

/**
 * COMMIT was sent but its acknowledgement never came: the destination may or may not be
 * running the workload, so the source stays paused and keeps its image (no split brain).
 */
export class CommitUnknownError extends ShoalError {
  static override readonly code = 'ERR_COMMIT_UNKNOWN'
  constructor (message = 'commit sent but not acknowledged; source kept paused with its image intact', options?: ErrorOptions) { super(message, undefined, options) }
}

/** The workload controller failed (pause, resume, device state). */
export class WorkloadError extends ShoalError {
  static override readonly code = 'ERR_WORKLOAD'
  constructor (message = 'workload controller failed', options?: ErrorOptions) { super(message, undefined, options) }
}

/** A caller passed a bad argument (CLI flag, option, peer address). */
export class InvalidArgumentError extends ShoalError {
  static override readonly code = 'ERR_INVALID_ARGUMENT'
  constructor (message = 'invalid argument', options?: ErrorOptions) { super(message, undefined, options) }
}

/** A block's bytes do not hash to the SHA-256 they were asked for (a corrupt or lying replica). */
export class BlockHashMismatchError extends ShoalError {
  static override readonly code = 'ERR_BLOCK_HASH_MISMATCH'
  constructor (message = 'block does not match its hash', options?: ErrorOptions) { super(message, undefined, options) }
}

/** The peer holds no volume of that id. */
export class UnknownVolumeError extends ShoalError {
  static override readonly code = 'ERR_UNKNOWN_VOLUME'
  constructor (message = 'unknown volume', options?: ErrorOptions) { super(message, undefined, options) }
}

/** A cache's metadata files are missing or do not match the cache. */
export class CacheMetaError extends ShoalError {
  static override readonly code = 'ERR_CACHE_META'
  constructor (message = 'bad cache metadata', options?: ErrorOptions) { super(message, undefined, options) }
}

/** An image's driver configuration is invalid (names the field), or its driver is not on this node. */
export class InvalidDriverConfigError extends ShoalError {
  static override readonly code = 'ERR_INVALID_DRIVER_CONFIG'
  constructor (message = 'invalid driver configuration', options?: ErrorOptions) { super(message, undefined, options) }
}

/** An incoming or new image exceeds this node's configured maximum size. */
export class ImageTooLargeError extends ShoalError {
  static override readonly code = 'ERR_IMAGE_TOO_LARGE'
  constructor (message = 'image is larger than this node accepts', options?: ErrorOptions) { super(message, undefined, options) }
}

/**
 * Not enough free memory in the shm dir or space in the data dir, or a write failed with
 * ENOSPC. The message names the directory, what was needed and what was free.
 */
export class NoSpaceError extends ShoalError {
  static override readonly code = 'ERR_NO_SPACE'
  constructor (message = 'not enough free space', options?: ErrorOptions) { super(message, undefined, options) }
}

/** Too many concurrent incoming sessions on this node or from this peer. */
export class BusyError extends ShoalError {
  static override readonly code = 'ERR_BUSY'
  constructor (message = 'too many concurrent sessions', options?: ErrorOptions) { super(message, undefined, options) }
}

/** A peer exceeds its request rate. */
export class RateLimitedError extends ShoalError {
  static override readonly code = 'ERR_RATE_LIMITED'
  constructor (message = 'request rate exceeded', options?: ErrorOptions) { super(message, undefined, options) }
}

/** Another node already runs on this data dir (its lock is held). */
export class DataDirLockedError extends ShoalError {
  static override readonly code = 'ERR_DATA_DIR_LOCKED'
  constructor (message = 'another node runs on this data dir', options?: ErrorOptions) { super(message, undefined, options) }
}

/** The image exists but its state forbids the operation (running, migrating, orphaned after a crash). */
export class ImageStateError extends ShoalError {
  static override readonly code = 'ERR_IMAGE_STATE'
  constructor (message = 'the image is not in a state that allows this operation', options?: ErrorOptions) { super(message, undefined, options) }
}

/** The peer died or became unreachable during a migration. */
export class PeerGoneError extends ShoalError {
  static override readonly code = 'ERR_PEER_GONE'
  constructor (message = 'the peer went away during the migration', options?: ErrorOptions) { super(message, undefined, options) }
}

/** Reading or writing a local file failed for a reason other than space (EIO, EROFS, ...); names the file. */
export class StorageError extends ShoalError {
  static override readonly code = 'ERR_STORAGE'
  constructor (message = 'local storage failed', options?: ErrorOptions) { super(message, undefined, options) }
}

/** A peer could not be reached: no address answered (the message names the peer and the addresses tried). */
export class PeerUnreachableError extends ShoalError {
  static override readonly code = 'ERR_PEER_UNREACHABLE'
  constructor (message = 'peer unreachable', options?: ErrorOptions) { super(message, undefined, options) }
}

/** No node runs at the given data directory or control socket. */
export class NoNodeError extends ShoalError {
  static override readonly code = 'ERR_NO_NODE'
  constructor (message = 'no node control socket', options?: ErrorOptions) { super(message, undefined, options) }
}

/** The local node went away (crashed or stopped) while a command was talking to it. */
export class NodeGoneError extends ShoalError {
  static override readonly code = 'ERR_NODE_GONE'
  constructor (message = 'the node went away', options?: ErrorOptions) { super(message, undefined, options) }
}

/** How a failure is reported outside the process: an HTTP status (control API) and a CLI exit code. */
export interface ErrorCodeEntry {
  /** Status of a control API answer carrying this code. */
  readonly http: number
  /** Exit code of `shoal` failing with this code. */
  readonly exit: number
}

// Families of failures; every code belongs to one, so status and exit code follow from it.
const BAD_INPUT: ErrorCodeEntry = { http: 400, exit: 2 }
const NOT_FOUND: ErrorCodeEntry = { http: 404, exit: 3 }
const CONFLICT: ErrorCodeEntry = { http: 409, exit: 4 }
const TOO_LARGE: ErrorCodeEntry = { http: 413, exit: 5 }
const NO_SPACE: ErrorCodeEntry = { http: 507, exit: 5 }
const BUSY: ErrorCodeEntry = { http: 429, exit: 6 }
const PEER: ErrorCodeEntry = { http: 502, exit: 7 }
const TIMEOUT: ErrorCodeEntry = { http: 504, exit: 7 }
const INTEGRITY: ErrorCodeEntry = { http: 500, exit: 8 }
const NODE: ErrorCodeEntry = { http: 503, exit: 9 }
const INTERNAL: ErrorCodeEntry = { http: 500, exit: 1 }
const ABORTED: ErrorCodeEntry = { http: 499, exit: 130 }

/**
 * Every stable error code a user can meet, with its HTTP status and CLI exit code: the one table
 * (docs/ERRORS.md explains each code; a unit test keeps the two in step). Codes of other
 * packages (`@shoal/libp2p`, `@shoal/workload`) and of the control API itself are listed too.
 */
export const ERROR_TABLE: Readonly<Record<string, ErrorCodeEntry>> = {
  [ShoalError.code]: INTERNAL,
  ERR_INTERNAL: INTERNAL,
  [InvalidArgumentError.code]: BAD_INPUT,
  [InvalidImageError.code]: BAD_INPUT,
  [InvalidDriverConfigError.code]: BAD_INPUT,
  [CacheMetaError.code]: BAD_INPUT,
  ERR_INVALID_IDENTITY: BAD_INPUT,
  ERR_INVALID_HEADER: BAD_INPUT,
  ERR_IMAGE_SIZE_MISMATCH: BAD_INPUT,
  [UnknownImageError.code]: NOT_FOUND,
  [UnknownVolumeError.code]: NOT_FOUND,
  ERR_NOT_FOUND: NOT_FOUND,
  ERR_UNKNOWN_MIGRATION: NOT_FOUND,
  ERR_UNKNOWN_KEPT_CACHE: NOT_FOUND,
  // No peer can take an image (none known, reachable, allowing this node, or with room).
  ERR_NO_TARGET: PEER,
  [NoNodeError.code]: NODE,
  [NodeGoneError.code]: NODE,
  [ImageExistsError.code]: CONFLICT,
  [ImageStateError.code]: CONFLICT,
  [DataDirLockedError.code]: CONFLICT,
  [ImageTooLargeError.code]: TOO_LARGE,
  [NoSpaceError.code]: NO_SPACE,
  [StorageError.code]: { http: 500, exit: 5 },
  [BusyError.code]: BUSY,
  [RateLimitedError.code]: BUSY,
  [UnauthorizedPeerError.code]: { http: 403, exit: 7 },
  [PeerUnreachableError.code]: PEER,
  [PeerGoneError.code]: PEER,
  [UnsupportedVersionError.code]: PEER,
  [InvalidFrameError.code]: PEER,
  [ProtocolError.code]: PEER,
  [LaneClosedError.code]: PEER,
  [NoLanesError.code]: PEER,
  [RemoteAbortError.code]: PEER,
  [TimeoutError.code]: TIMEOUT,
  [VerificationFailedError.code]: INTEGRITY,
  [BlockHashMismatchError.code]: INTEGRITY,
  [CommitUnknownError.code]: INTEGRITY,
  [WorkloadError.code]: INTERNAL,
  ERR_QMP: INTERNAL,
  [AbortedError.code]: ABORTED,
  // Post-copy (logged by a node) and `@shoal/nbd`, `@shoal/workload`'s fault client.
  ERR_POSTCOPY_STALLED: PEER,
  ERR_CACHE_FAULT: PEER,
  ERR_NBD_LISTEN: INTERNAL,
  ERR_NBD_PROTOCOL: PEER,
  ERR_NBD_UNKNOWN_EXPORT: NOT_FOUND,
  ERR_NBD_BACKEND: { http: 500, exit: 5 },
  ERR_NBD_INVALID_EXPORT: INTERNAL
}

/** Every stable error code, for docs and for mapping codes received on the wire. */
export const ERROR_CODES: readonly string[] = Object.keys(ERROR_TABLE)

/** The HTTP status of an answer failing with `code` (500 for an unknown code). */
export function httpStatusOf (code: string): number {
  return ERROR_TABLE[code]?.http ?? INTERNAL.http
}

/** The exit code of `shoal` failing with `code` (1 for an unknown code). */
export function exitCodeOf (code: string): number {
  return ERROR_TABLE[code]?.exit ?? INTERNAL.exit
}

/**
 * Returns the stable code of any thrown value: a {@link ShoalError}'s code; the code of an error
 * from `@shoal/workload` (a standalone process that cannot depend on core, whose error classes
 * carry codes from {@link ERROR_TABLE}); else `ERR_INTERNAL`.
 */
export function errorCode (err: unknown): string {
  if (err instanceof ShoalError) return err.code
  const code = err instanceof Error ? (err as { code?: unknown }).code : undefined
  return typeof code === 'string' && Object.hasOwn(ERROR_TABLE, code) ? code : 'ERR_INTERNAL'
}

/** An error as plain data, to cross a worker thread, a process or the control API. */
export interface ErrorInfo {
  /** Stable code (`ERR_INTERNAL` for an error that is not a {@link ShoalError}). */
  code: string
  /** Class name (e.g. `NoSpaceError`). */
  name: string
  message: string
}

/** Classes whose constructor takes `(message)`: an {@link ErrorInfo} becomes one of them again. */
const BY_CODE = new Map<string, new (message: string) => ShoalError>([
  InvalidFrameError, UnsupportedVersionError, UnauthorizedPeerError, UnknownImageError, ImageExistsError, InvalidImageError,
  VerificationFailedError, LaneClosedError, NoLanesError, AbortedError, TimeoutError, ProtocolError, CommitUnknownError,
  WorkloadError, InvalidArgumentError, BlockHashMismatchError, UnknownVolumeError, CacheMetaError, InvalidDriverConfigError,
  ImageTooLargeError, NoSpaceError, BusyError, RateLimitedError, DataDirLockedError, ImageStateError, PeerGoneError,
  PeerUnreachableError, NoNodeError, NodeGoneError, StorageError
].map(c => [c.code, c]))

/** Turns any thrown value into {@link ErrorInfo}. */
export function toErrorInfo (err: unknown): ErrorInfo {
  if (err instanceof Error) return { code: errorCode(err), name: err.name, message: err.message }
  return { code: 'ERR_INTERNAL', name: 'Error', message: String(err) }
}

/**
 * Rebuilds an error from {@link ErrorInfo}: an instance of the class its code belongs to (so
 * callers can branch on the class), else a {@link ShoalError} carrying the code and name.
 */
export function fromErrorInfo (info: ErrorInfo): ShoalError {
  const Class = BY_CODE.get(info.code)
  if (Class != null) return new Class(info.message)
  const err = new ShoalError(info.message, info.code)
  err.name = info.name
  return err
}
