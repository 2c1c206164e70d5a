import type { ImageSpec, WorkloadController } from '../image.js'
import type { DirtySource } from '../tracker/cooperative-tracker.js'

/**
 * An image as a driver sees it: its spec (memory and cache files, driver config) and a directory
 * the driver may use for the workload's runtime files (sockets, logs, pid file). The node owns
 * that directory's lifetime: it exists before `launch`/`prepareLaunch`/`adopt` is called.
 */
export interface DriverImage {
  spec: ImageSpec
  /** Runtime directory of this workload (e.g. a VM's QMP socket and serial log). */
  runDir: string
  /** What {@link RunningWorkload.runtime} said when the workload was started (for `adopt`). */
  runtime?: Record<string, unknown>
  /**
   * Set when the workload starts during a post-copy migration: its cache file is not complete
   * yet, and a block that is not present must be asked for before it is read (or partly written).
   */
  postcopy?: PostCopyAccess
}

/**
 * How a workload reaches the blocks of a cache that is still arriving (post-copy). The node
 * serves every way at once; a driver uses the one its workload understands.
 *
 * - `presentPath`: one byte per cache block, 1 when the block holds its final bytes. A block
 *   once present stays present. The node sets the byte only after the block's bytes are written.
 * - `faultSocket`: a unix socket taking lines `R <block>` (the block is about to be read or
 *   partly written: fetch it first) and `W <block>` (the whole block is about to be overwritten:
 *   no fetch, and no fetched copy may land afterwards); each is answered `OK <block>` once the
 *   block may be used, or `ERR <block> <code>` (a bad request; a block no source holds is
 *   waited for, never answered with other bytes).
 * - `nbd`: an NBD export of the cache file (unix socket, export name) whose reads and writes do
 *   the above themselves, for a workload that only speaks a block protocol (QEMU).
 */
export interface PostCopyAccess {
  presentPath: string
  faultSocket: string
  nbd?: { socket: string, exportName: string }
}

/** A workload running on this node. */
export interface RunningWorkload {
  readonly pid?: number
  readonly controller: WorkloadController
  /** Resolves when the workload ends, with its exit code (null when killed or unknown). */
  readonly exited: Promise<number | null>
  /** Ends it gracefully (used when the node stops or the image is removed). */
  terminate: () => Promise<void>
  /**
   * Post-copy: every block of the cache is present now; the workload leaves the fault path for
   * the plain file (a VM moves its drive from the NBD export to the local file, without a pause).
   */
  postcopyComplete?: () => Promise<void>
  /**
   * JSON the node keeps in the image record while the workload runs, handed back to
   * {@link Driver.adopt} after a node restart (e.g. the run directory and pid of a VM).
   */
  readonly runtime?: Record<string, unknown>
  /**
   * Optional: where a migration learns which cache blocks the workload wrote, instead of
   * scanning the cache each round (e.g. a VM's block dirty bitmaps). Undefined: scan.
   */
  cacheDirtySource?: (units: number, unitSize: number) => DirtySource | undefined
  /**
   * Optional: what the workload adds to every pause whatever the dirty set (capturing and
   * loading its device state, resuming, its arrival check), for the round planner's prediction.
   */
  readonly fixedPauseMs?: number
}

/** The outcome of a driver's own check of an image that just arrived. */
export interface ArrivalCheck { ok: boolean, detail: string }

/** A workload started ahead of an incoming migration's switchover, waiting for its image. */
export interface PreparedLaunch {
  /** Ends it when the migration it was prepared for fails. */
  cancel: () => Promise<void>
}

/** How migrations find changed pages and blocks of an image by default. */
export type TrackerKind = 'scan' | 'cooperative'

/** Sizes of an image, for a driver's config checks. */
export interface ImageGeometry { memorySize: number, pageSize: number, cacheSize: number, blockSize: number }

/** Options of {@link Driver.initImage}. */
export interface InitImageOptions {
  /** Initial content of memory and cache: zeros (sparse) or random bytes. */
  fill?: 'zero' | 'random'
}

/** Where a driver config comes from: this node's user (`local`) or a migrating peer (`peer`). */
export type ConfigOrigin = 'local' | 'peer'

/**
 * Runs one kind of workload (a synthetic process, a QEMU VM, ...). The node holds no
 * driver-specific code: everything a kind of workload needs goes through this seam.
 */
export interface Driver {
  readonly name: string
  /**
   * Checks an image's driver config and returns it normalised (defaults filled in). Called at
   * `image create` and on a destination when a HELLO arrives, before anything is staged.
   * Throws {@link InvalidDriverConfigError} naming the bad field.
   *
   * `origin: 'peer'` marks a config that came over the wire from a source: an allow-listed peer is
   * trusted to migrate images here, not to choose what this host executes or reads. A driver must
   * then refuse anything that names a program or a file outside what this node trusts.
   */
  validateConfig: (config: Record<string, unknown>, image: ImageGeometry, origin?: ConfigOrigin) => Record<string, unknown>
  /** The dirty tracker migrations of an image with this (validated) config use. */
  tracker: (config: Record<string, unknown>) => TrackerKind
  /** Lays out a new image's memory and cache files (the node created their directories). */
  initImage: (spec: ImageSpec, opts: InitImageOptions) => Promise<void>
  /**
   * Starts the image's workload. `deviceState` is set when it resumes after a migration (empty:
   * the source was not running, start fresh); `prepared` is what {@link Driver.prepareLaunch}
   * returned, if anything. When it resolves the workload runs (the driver's arrival check passed).
   */
  launch: (image: DriverImage, deviceState?: Uint8Array, prepared?: PreparedLaunch) => Promise<RunningWorkload>
  /**
   * Optional: starts what can be started before an incoming migration's switchover, given the
   * incoming image's spec (its paths are the staging files) and a run directory, so that the
   * pause does not include it (e.g. a VM started with `-incoming defer`).
   */
  prepareLaunch?: (image: DriverImage) => Promise<PreparedLaunch>
  /**
   * Optional: takes over a workload that kept running while the node was down (after a crash).
   * Resolves undefined when it is not running any more.
   */
  adopt?: (image: DriverImage) => Promise<RunningWorkload | undefined>
  /**
   * Optional: ends whatever this driver may have left running in a run directory no image owns
   * any more (a VM prepared for an incoming migration when the node crashed). The node deletes
   * the directory afterwards.
   */
  reap?: (runDir: string) => Promise<void>
  /** Device state of an image whose workload is not running (nothing to pause). */
  deviceState: (image: DriverImage) => Promise<Uint8Array>
  /** Checks a just-migrated image against the device state captured at pause, before it runs. */
  check: (image: DriverImage, deviceState: Uint8Array, prepared?: PreparedLaunch) => Promise<ArrivalCheck>
  /**
   * Optional: the workload's own check of its data (`shoal image verify`), `running` when its
   * workload runs now. `ok: undefined` when it cannot check in this state (the detail says why).
   */
  verify?: (image: DriverImage, running: boolean) => Promise<{ ok?: boolean, detail: string }>
}
