/** Defaults of the peer daemon, in one place. */

/** libp2p protocol of the control lane of a migration. */
export const MIGRATE_PROTOCOL = '/shoal/migrate/1.0.0'
/** libp2p protocol of a data lane. */
export const LANE_PROTOCOL = '/shoal/lane/1.0.0'
/** libp2p protocol serving blocks of replica volumes by content hash. */
export const BLOCKS_PROTOCOL = '/shoal/blocks/1.0.0'
/** Data lanes a migration opens when not told otherwise. */
export const DEFAULT_LANES = 4
/** Name of the control socket inside the data directory. */
export const CONTROL_SOCKET = 'control.sock'
/** Where memory files live (tmpfs, so workloads and Shoal share them without disk I/O). */
export const DEFAULT_SHM_DIR = '/dev/shm'
/** Block lanes (requests in flight) a node opens to each replica it fetches from. */
export const DEFAULT_REPLICA_STREAMS = 2
/** Peers asked at once whether they hold a volume. */
export const DISCOVERY_CONCURRENCY = 16
/** How long one peer may take to answer whether it holds a volume. */
export const DISCOVERY_TIMEOUT_MS = 3000
