/** Defaults and limits of the synthetic driver, in one place. */
import { PAGE_SIZE } from '@shoal/workload'

/** Page writes per second of a synthetic workload. */
export const DEFAULT_WORKLOAD_RATE = 2000
/** Cache records appended per second. */
export const DEFAULT_RECORD_RATE = 200
/** How long a throttled workload runs between two stops (two ticks of the synthetic workload). */
export const THROTTLE_RUN_MS = 20
/** How long a workload process may take to boot and report ready. */
export const READY_TIMEOUT_MS = 30_000
/**
 * Smallest memory of a synthetic image: the workload keeps its header in the first page and
 * writes at least one data page. Checked by the driver (node, incoming HELLO) and by the CLI.
 */
export const SYNTHETIC_MIN_MEMORY_SIZE = 2 * PAGE_SIZE
/** The pause's part that does not depend on the dirty set for a quick arrival check (device state, commit). */
export const FIXED_PAUSE_MS = 20
/** What a full arrival check costs per GiB of image (`shoal-workload verify`: ~0.3 s per GiB here, with margin). */
export const FULL_CHECK_MS_PER_GIB = 350
/** Cache blocks read (and checked against the volume's hashes) per second: none unless configured. */
export const DEFAULT_CACHE_READ_RATE = 0
