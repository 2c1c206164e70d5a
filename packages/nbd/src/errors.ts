import { ShoalError } from '@shoal/core/errors'

/** The server could not listen on its unix socket path (in use by a live server, no permission, ...). */
export class NbdListenError extends ShoalError {
  static override readonly code = 'ERR_NBD_LISTEN'
  constructor (message = 'NBD server could not listen on its socket', options?: ErrorOptions) { super(message, undefined, options) }
}

/** A client broke the NBD protocol (bad magic, unknown client flags, oversized WRITE); its connection was closed. */
export class NbdProtocolError extends ShoalError {
  static override readonly code = 'ERR_NBD_PROTOCOL'
  constructor (message = 'NBD client broke the protocol', options?: ErrorOptions) { super(message, undefined, options) }
}

/** A client asked for an export that does not exist; it was refused. */
export class NbdUnknownExportError extends ShoalError {
  static override readonly code = 'ERR_NBD_UNKNOWN_EXPORT'
  /** The name the client asked for. */
  readonly exportName: string
  constructor (exportName: string, message = `unknown NBD export ${JSON.stringify(exportName)}`, options?: ErrorOptions) {
    super(message, undefined, options)
    this.exportName = exportName
  }
}

/**
 * An export's backend failed a request (its `cause` is the backend's error); the client got an
 * error reply carrying `errno` and the connection stays usable.
 */
export class NbdBackendError extends ShoalError {
  static override readonly code = 'ERR_NBD_BACKEND'
  /** The NBD command that failed (`READ`, `WRITE`, `FLUSH`, `TRIM`, `WRITE_ZEROES`). */
  readonly command: string
  /** The NBD error value sent to the client (5 `EIO`, 28 `ENOSPC`, ...). */
  readonly errno: number
  constructor (command: string, errno: number, message = `NBD ${command} failed in the export's backend`, options?: ErrorOptions) {
    super(message, undefined, options)
    this.command = command
    this.errno = errno
  }
}

/** An export's description is invalid (size, block size); clients are refused it. */
export class NbdInvalidExportError extends ShoalError {
  static override readonly code = 'ERR_NBD_INVALID_EXPORT'
  constructor (message = 'invalid NBD export', options?: ErrorOptions) { super(message, undefined, options) }
}
