import { ShoalError } from '@shoal/core'

/** The identity key file exists but cannot be used (corrupt, truncated or not an Ed25519 key). */
export class InvalidIdentityError extends ShoalError {
  static override readonly code = 'ERR_INVALID_IDENTITY'
  constructor (message = 'identity key file is not a valid Ed25519 private key', options?: ErrorOptions) {
    super(message, undefined, options)
  }
}
