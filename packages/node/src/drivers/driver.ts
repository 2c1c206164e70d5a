import type { WorkloadController } from '@shoal/core'
import type { ImageRecord } from '../image-store.js'

/** A workload running on this node. */
export interface RunningWorkload {
  readonly pid?: number
  readonly controller: WorkloadController
  /** Resolves when the workload ends, with its exit code (null when killed by a signal). */
  readonly exited: Promise<number | null>
  /** Ends it gracefully (used when the node stops). */
  terminate: () => Promise<void>
}

/** The outcome of a driver's own check of an image that just arrived. */
export interface ArrivalCheck { ok: boolean, detail: string }

/** A workload process started ahead of time, waiting to be told which image to run. */
export interface PreparedLaunch {
  /** Ends it when the migration it was prepared for fails. */
  cancel: () => Promise<void>
}

/** Runs one kind of workload (a synthetic process, a QEMU VM, ...). Drivers are pluggable. */
export interface Driver {
  readonly name: string
  /**
   * Starts the image's workload. `deviceState` is set when it resumes after a migration;
   * `prepared` is what {@link Driver.prepareLaunch} returned, if anything.
   */
  launch: (rec: ImageRecord, deviceState?: Uint8Array, prepared?: PreparedLaunch) => Promise<RunningWorkload>
  /**
   * Optional: starts what can be started before an incoming migration's switchover (e.g. the
   * workload process, waiting for its image), so that the pause does not include it.
   */
  prepareLaunch?: () => Promise<PreparedLaunch>
  /** Device state of an image whose workload is not running (nothing to pause). */
  deviceState: (rec: ImageRecord) => Promise<Uint8Array>
  /** Checks a just-migrated image against the device state captured at pause, before it runs. */
  check: (rec: ImageRecord, deviceState: Uint8Array) => Promise<ArrivalCheck>
}
