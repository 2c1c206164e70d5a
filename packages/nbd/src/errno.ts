import { NBD_EINVAL, NBD_EIO, NBD_ENOSPC, NBD_EPERM, NBD_ESHUTDOWN } from './protocol.js'

/**
 * The NBD error value for a backend failure: the spec's restricted set, chosen from the error's
 * `code` (Node's system errors carry one). Anything unrecognised is `EIO`.
 */
export function nbdErrnoOf (err: unknown, aborted: boolean): number {
  if (aborted) return NBD_ESHUTDOWN
  const code = err instanceof Error ? (err as { code?: unknown }).code : undefined
  switch (code) {
    case 'ENOSPC': case 'EDQUOT': case 'EFBIG': return NBD_ENOSPC
    case 'EPERM': case 'EACCES': case 'EROFS': return NBD_EPERM
    case 'EINVAL': return NBD_EINVAL
    default: return NBD_EIO
  }
}
