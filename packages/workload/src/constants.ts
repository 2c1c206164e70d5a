/**
 * Sizes, magic numbers and defaults of the synthetic workload, in one place so that the
 * formats, the writer and the verifier cannot drift apart.
 */

/** Size of one memory page; the unit of every page write and of dirty tracking. */
export const PAGE_SIZE = 4096

/** Version stored in the header; bumped whenever an on-disk layout changes. */
export const FORMAT_VERSION = 1

/** `"SHWL"` read as a little-endian u32: the header page magic. */
export const HEADER_MAGIC = 0x4c574853

/** `"SHPG"` read as a little-endian u32: the stamp at the start of every written data page. */
export const PAGE_MAGIC = 0x47504853

/** `"SHRC"` read as a little-endian u32: the start of every record in the cache file. */
export const RECORD_MAGIC = 0x43524853

/** Bytes before a record's payload: magic u32, sequence u64, length u32. */
export const RECORD_PREFIX_SIZE = 16

/** Bytes after a record's payload: crc32 u32. */
export const RECORD_SUFFIX_SIZE = 4

/** Default payload size: makes a whole record exactly one 4 KiB page. */
export const DEFAULT_RECORD_SIZE = PAGE_SIZE - RECORD_PREFIX_SIZE - RECORD_SUFFIX_SIZE

/** Default share of page writes that land in the hot set. */
export const DEFAULT_HOT_PERCENT = 90

/** Default hot set size as a fraction of the data pages (at least one page). */
export const DEFAULT_HOT_FRACTION = 0.1

/** Period of the writer's rate loop. */
export const TICK_MS = 10

/**
 * Most write debt the rate loop may carry: one tick (covers timer jitter). Time spent stopped
 * (SIGSTOP) is work not done, as for a stopped vCPU: catching it up would defeat throttling
 * (auto-converge) and write in bursts.
 */
export const MAX_CATCH_UP_MS = 10

/** How often the ops file is rewritten. */
export const OPS_INTERVAL_MS = 1000

/** Read/write chunk for filling and verifying images: large enough to amortise syscalls. */
export const IO_CHUNK_SIZE = 1024 * 1024

/** How many bad pages and bad records a verification lists (the counts are always total). */
export const MAX_REPORTED_PROBLEMS = 20

/** First wait before reconnecting to a post-copy fault socket that refused or dropped us. */
export const FAULT_RETRY_MIN_MS = 10

/** Longest wait between two reconnects to the fault socket (the node may take a while to restart). */
export const FAULT_RETRY_MAX_MS = 1000

/**
 * How often outstanding faults are re-checked in the present file while connected: an answer
 * lost by a node that restarted under an open connection must not leave a block waiting forever.
 */
export const FAULT_PRESENT_POLL_MS = 1000

/** Most cache reads (`--cache-reads`) waiting on a fault at once; further reads are skipped, not queued. */
export const MAX_PENDING_CACHE_READS = 64

/** Suffix of the file beside a volume cache holding the volume's block hashes (@shoal/core `cacheMetaPaths`). */
export const CACHE_HASHES_SUFFIX = '.hashes'
