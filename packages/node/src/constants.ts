/** Defaults of the peer daemon, in one place. */
import { availableParallelism } from 'node:os'

/** libp2p protocol of the control lane of a migration. */
export const MIGRATE_PROTOCOL = '/shoal/migrate/1.0.0'
/** libp2p protocol of a data lane. */
export const LANE_PROTOCOL = '/shoal/lane/1.0.0'
/** libp2p protocol serving blocks of replica volumes by content hash. */
export const BLOCKS_PROTOCOL = '/shoal/blocks/1.0.0'
/** Data lanes a migration opens when not told otherwise. */
export const DEFAULT_LANES = 4
/**
 * Most bytes of shadow copies a node keeps between migrations for reuse (also at most 1/8 of the
 * host's RAM): a drain of many images of one size then pays the shadow's page faults once.
 * Unused ones are let go after a minute.
 */
export const SHADOW_POOL_MAX_BYTES = 4 * 1024 ** 3
/**
 * Data worker threads per node (see ShoalNodeInit.dataWorkers): half the cores less one, at least
 * 1 and at most 16 (a migration has at most 16 lanes). Measured on this project's 2-core
 * machines, where both peers share the cores: 1 worker beat 0 and 2 (docs/PERFORMANCE.md). On a
 * large host the other half is left to the workload, the tracker pool and the main thread; that
 * split is a projection, not a measurement.
 */
export const DEFAULT_DATA_WORKERS = Math.max(1, Math.min(16, Math.floor(availableParallelism() / 2) - 1))
/** Name of the control socket inside the data directory. */
export const CONTROL_SOCKET = 'control.sock'
/** Where memory files live (tmpfs, so workloads and Shoal share them without disk I/O). */
export const DEFAULT_SHM_DIR = '/dev/shm'
/**
 * Block lanes a node opens to each replica it fetches from over libp2p streams: the first also
 * carries hash lists and urgent (on-demand) requests, the others the bulk requests.
 */
export const DEFAULT_REPLICA_STREAMS = 3
/** Peers asked at once whether they hold a volume. */
export const DISCOVERY_CONCURRENCY = 16
/** How long one peer may take to answer whether it holds a volume. */
export const DISCOVERY_TIMEOUT_MS = 3000
/** Largest cache an incoming image may have unless the node is told otherwise (16 TiB). */
export const DEFAULT_MAX_CACHE_BYTES = 16 * 2 ** 40
/** Incoming migrations at once on one node. */
export const DEFAULT_MAX_INCOMING = 4
/** Incoming migrations at once from one peer. */
export const DEFAULT_MAX_INCOMING_PER_PEER = 2
/** Free space always kept in the shm and data dirs and in host memory: at least this ... */
export const DEFAULT_SPACE_MARGIN_BYTES = 128 * 2 ** 20
/** ... or this share of the file system (or of host memory), whichever is larger. */
export const SPACE_MARGIN_FRACTION = 0.02
/** Data lanes one incoming migration may attach (each holds a few frames in flight). */
export const MAX_LANES_PER_SESSION = 16
/** Block requests per second a node answers to one peer (replica serving). */
export const DEFAULT_BLOCK_REQUESTS_PER_SEC = 4000
/** How long a stopping node waits for its incoming migrations to tell their sources why they end. */
export const STOP_DRAIN_MS = 2000
/** How long a source tries to reach a destination whose lanes all died, to tell "gone" from "lanes lost". */
export const PEER_CHECK_TIMEOUT_MS = 2000
/** Control lanes one connection may carry at once (one per migration; a peer has at most a few). */
export const MAX_CONTROL_STREAMS_PER_CONNECTION = 4
/** Block lanes one connection may carry at once (a destination opens 2 per replica per migration). */
export const MAX_BLOCK_STREAMS_PER_CONNECTION = 16
/** Largest frame a block lane's client sends (a BLOCK_REQUEST of 1024 hashes is 32 KiB). */
export const MAX_BLOCK_REQUEST_FRAME = 64 * 1024

/** Fault requests (R/W lines) one connection of a post-copy fault socket may have outstanding. */
export const POSTCOPY_FAULT_MAX_PENDING = 4096
/** How often a post-copy destination logs reads that wait for blocks no source holds. */
export const POSTCOPY_STALL_LOG_MS = 5000
/** How long a post-copy destination tries to tell the source that its copy may go. */
export const POSTCOPY_RELEASE_TIMEOUT_MS = 30_000
