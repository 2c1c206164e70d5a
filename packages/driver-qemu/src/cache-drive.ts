import { POSTCOPY_NBD_OPEN_TIMEOUT_S, POSTCOPY_NBD_RECONNECT_DELAY_S } from './constants.js'
import type { QmpClient } from './qmp-client.js'

/** The `-drive` id of a Shoal VM's cache disk: the BlockBackend the virtio-blk device uses. */
export const CACHE_DRIVE = 'cache0'
/** Node name of the cache disk's `raw` format node: the guest's disk, whose `file` child is moved. */
export const CACHE_RAW_NODE = 'cache0-raw'
/** Node name of the `file` node on the local cache file (the raw node's child outside post-copy). */
export const CACHE_FILE_NODE = 'cache0-file'
/** Node name of the `nbd` node on the node's post-copy export (the raw node's child during post-copy). */
export const CACHE_NBD_NODE = 'cache0-nbd'

/** Where a post-copy cache is served (see `PostCopyAccess.nbd` in `@shoal/core`). */
export interface CacheExport { socket: string, exportName: string }

/**
 * What every node of the cache drive shares, in QMP form; the `-drive` of `qemuArgs` says the
 * same (`cache=writeback,discard=unmap`). `blockdev-reopen` resets every option it is not given,
 * so the raw node's reopen repeats these and changes only its `file`.
 */
const COMMON = { discard: 'unmap', cache: { direct: false, 'no-flush': false } } as const

/** The raw node with `file` as its child, every other option as `qemuArgs` set it. */
function rawNode (file: string): Record<string, unknown> {
  return { driver: 'raw', 'node-name': CACHE_RAW_NODE, file, ...COMMON }
}

/**
 * The local file node, as `-drive`'s `file.*` opened it: threads for AIO, and `drop-cache=off`
 * (see `qemuArgs`). Opened by the run directory's `disk` link, the name QEMU knows the disk by.
 */
function fileNode (disk: string): Record<string, unknown> {
  return { driver: 'file', 'node-name': CACHE_FILE_NODE, filename: disk, aio: 'threads', 'drop-cache': false, ...COMMON }
}

/**
 * The nbd node on the post-copy export. `reconnect-delay`: when the export goes away (its node
 * restarts) requests wait that long for the client to reconnect and are then sent again, instead
 * of failing at once; `open-timeout`: the first connection is retried briefly.
 */
function nbdNode (exp: CacheExport): Record<string, unknown> {
  return {
    driver: 'nbd',
    'node-name': CACHE_NBD_NODE,
    server: { type: 'unix', path: exp.socket },
    export: exp.exportName,
    'reconnect-delay': POSTCOPY_NBD_RECONNECT_DELAY_S,
    'open-timeout': POSTCOPY_NBD_OPEN_TIMEOUT_S,
    ...COMMON
  }
}

/** One entry of `query-named-block-nodes`. */
interface NamedNode { 'node-name': string, drv: string, file: string }

/** The VM's named block nodes, by name. */
export async function cacheDriveNodes (qmp: QmpClient): Promise<Map<string, NamedNode>> {
  const nodes = await qmp.execute<NamedNode[]>('query-named-block-nodes', { flat: true })
  return new Map(nodes.map(n => [n['node-name'], n]))
}

/**
 * Post-copy: moves the cache drive of a VM that has not run yet (paused, its device state loaded
 * or not) onto the node's NBD export: `blockdev-add` of an nbd node, then `blockdev-reopen` of the
 * raw node with that node as its `file`. Once the reopen answered, every request of the guest goes
 * through the export, which waits for blocks that have not arrived; the reopen also frees
 * `-drive`'s implicit file node (nothing else holds it), so QEMU keeps no handle on the local
 * file. Two commands and no query: this runs inside the migration's pause.
 */
export async function moveCacheToNbd (qmp: QmpClient, exp: CacheExport): Promise<void> {
  await qmp.execute('blockdev-add', nbdNode(exp))
  await qmp.execute('blockdev-reopen', { options: [rawNode(CACHE_NBD_NODE)] })
}

/**
 * Post-copy complete: moves a running VM's cache drive from the NBD export back to the local
 * file, without a pause: `blockdev-add` of the file node (on the `disk` link), `blockdev-reopen`
 * of the raw node onto it (QEMU drains the node first: requests in flight finish on the export),
 * `blockdev-del` of the nbd node (QEMU hangs up on the export). Works from the block graph alone,
 * so it can be repeated and finishes a move an earlier call left half done. Resolves false when
 * the drive was not on the export.
 */
export async function moveCacheToFile (qmp: QmpClient, disk: string): Promise<boolean> {
  const nodes = await cacheDriveNodes(qmp)
  if (!nodes.has(CACHE_NBD_NODE)) return false
  if (!nodes.has(CACHE_FILE_NODE)) await qmp.execute('blockdev-add', fileNode(disk))
  await qmp.execute('blockdev-reopen', { options: [rawNode(CACHE_FILE_NODE)] })
  await qmp.execute('blockdev-del', { 'node-name': CACHE_NBD_NODE })
  return true
}
