/** Defaults of every option, in one place. */

/** Wire protocol version spoken by this build. */
export const PROTOCOL_VERSION = 1
/** Memory page size in bytes. */
export const DEFAULT_PAGE_SIZE = 4096
/** Cache block size in bytes. */
export const DEFAULT_BLOCK_SIZE = 256 * 1024
/** Largest frame body accepted on the wire (a data chunk plus its header). */
export const MAX_FRAME_SIZE = 4 * 1024 * 1024 + 64 * 1024
/** Largest device state accepted. */
export const MAX_DEVICE_STATE = 64 * 1024 * 1024
/** Target payload bytes per data chunk. */
export const DEFAULT_CHUNK_BYTES = 1024 * 1024
/**
 * Bytes a running round's scan may queue ahead of the lanes before it waits for them: enough to
 * keep lanes busy while the next slices are scanned (a 64 MiB slice takes tens of ms), little
 * enough that the scan does not take the cores the lanes need (measured: on 2 cores a first scan
 * running 10 s ahead of the lanes cost them ~10% of a 4 x 200 Mbit/s round).
 */
export const SCAN_LOOKAHEAD_BYTES = 256 * 1024 * 1024
/** Unacknowledged bytes allowed in flight per lane. */
export const DEFAULT_LANE_WINDOW = 8 * 1024 * 1024
/** Pre-copy rounds before switching over regardless of the dirty set. */
export const DEFAULT_MAX_ROUNDS = 30
/** Downtime the planner aims for, in milliseconds. */
export const DEFAULT_DOWNTIME_TARGET_MS = 300
/** Size of a verification region (one SHA-256 per region, then a hash of hashes). */
export const VERIFY_REGION_BYTES = 16 * 1024
/** Bytes one tracker worker reads per system call. */
export const SCAN_READ_BYTES = 4 * 1024 * 1024
/** How long a peer may stay silent during a control exchange. */
export const DEFAULT_CONTROL_TIMEOUT_MS = 60_000
/** How long the source waits for a final verification / commit answer. */
export const DEFAULT_COMMIT_TIMEOUT_MS = 30_000
/** Areas up to this size are tracked with a shadow copy (fast compares, RAM = size); larger ones by SHA-256 per unit. */
export const DEFAULT_SHADOW_LIMIT = 2 * 1024 * 1024 * 1024
/** A lane with unacknowledged bytes and no acknowledgement for this long is declared dead. */
export const DEFAULT_LANE_STALL_MS = 3000
/** How often a session with fewer lanes than it started with tries to open replacements. */
export const DEFAULT_LANE_RETRY_MS = 1000
/** How long the source waits for a control answer on one lane before re-sending it on another. */
export const DEFAULT_CONTROL_ATTEMPT_MS = 5000
/** A destination that hears nothing from its source for this long gives the migration up. */
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000
/** How long the cooperative tracker waits for the workload to acknowledge a new marks epoch. */
export const COOPERATIVE_ACK_TIMEOUT_MS = 1000
/**
 * Scan rate per worker assumed before a migration's first round measures it, bytes per second
 * (2 vCPU EPYC, `pnpm bench scan`, bench/results/scan.json: shadow compare 3.3–3.6 GB/s per
 * worker from tmpfs, SHA-256 per 4 KiB page 0.49–0.55 GB/s per worker). Only used to warn early
 * that a tracker is too slow; the first round's measured scan replaces it.
 */
export const SCAN_ESTIMATE_SHADOW_BPS = 3e9
export const SCAN_ESTIMATE_HASH_BPS = 0.5e9
/**
 * Post-copy: bulk bytes asked of one source at a time (all its lanes together). A read on demand
 * waits behind at most this much at that source (2 MiB: ~85 ms at 200 Mbit/s), which still
 * covers the bandwidth-delay product of a LAN path many times over.
 */
export const POSTCOPY_BULK_BYTES_PER_SOURCE = 2 * 1024 * 1024
