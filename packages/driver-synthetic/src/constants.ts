/** Defaults of the synthetic driver, in one place. */

/** Page writes per second of a synthetic workload. */
export const DEFAULT_WORKLOAD_RATE = 2000
/** Cache records appended per second. */
export const DEFAULT_RECORD_RATE = 200
/** How long a throttled workload runs between two stops (two ticks of the synthetic workload). */
export const THROTTLE_RUN_MS = 20
/** How long a workload process may take to boot and report ready. */
export const READY_TIMEOUT_MS = 30_000
