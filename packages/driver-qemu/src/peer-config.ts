import { realpathSync } from 'node:fs'
import { homedir } from 'node:os'
import { join, sep } from 'node:path'
import { InvalidDriverConfigError } from '@shoal/core'
import { DEFAULT_QEMU_BINARY } from './constants.js'
import type { QemuConfig } from './qemu-config.js'

/** Where a node keeps the kernels its VMs boot, unless told otherwise. */
export function defaultTrustedDirs (): string[] {
  return ['/boot', '/var/lib/shoal', '/usr/share/shoal', process.env.SHOAL_GUEST_DIR ?? join(homedir(), '.cache', 'shoal', 'guest')]
}

/**
 * Checks a config that arrived from a migrating peer: the peer may not pick the program this host
 * runs (only the default QEMU binary, found on this node's PATH) nor make QEMU read a file
 * outside the trusted directories (kernel, initrd; symlinks resolved). Throws
 * {@link InvalidDriverConfigError} naming the field.
 */
export function checkPeerConfig (cfg: QemuConfig, trustedDirs: readonly string[]): void {
  if (cfg.binary !== DEFAULT_QEMU_BINARY) {
    throw new InvalidDriverConfigError(`binary ${JSON.stringify(cfg.binary)}: a migrating peer cannot choose the program this node runs (only ${DEFAULT_QEMU_BINARY})`)
  }
  const roots = trustedDirs.flatMap(d => { try { return [realpathSync(d)] } catch { return [] } })
  for (const [field, path] of [['kernel', cfg.kernel], ['initrd', cfg.initrd]] as const) {
    if (path == null) continue
    const real = realpathSync(path)
    if (!roots.some(r => real === r || real.startsWith(r.endsWith(sep) ? r : r + sep))) {
      throw new InvalidDriverConfigError(`${field} ${path}: not in a directory this node trusts for VMs migrated in (${trustedDirs.join(', ')})`)
    }
  }
}
