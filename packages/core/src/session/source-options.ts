import type { Bitmap } from '../bitmap.js'
import type { ImageSpec, WorkloadController } from '../image.js'
import type { AcceptFrame } from '../wire/frames.js'
import type { DirtySource } from '../tracker/cooperative-tracker.js'
import type { WorkerPool } from '../tracker/worker-pool.js'
import type { ShadowPool } from '../tracker/shadow-pool.js'
import type { Lane } from '../transport/lane.js'
import type { CacheManifest } from '../volume/cache-manifest.js'
import type { LaneStats } from './lane-pump.js'
import type { MigrationProgress } from './report.js'
import type { TokenBucket } from '../pacing/token-bucket.js'
import type { SwitchoverGate } from './switchover-gate.js'

/** When the cache's clean blocks move: before the switchover, or streaming after it. */
export type CacheMode = 'precopy' | 'postcopy'

/** What the source keeps serving after a post-copy switchover (see {@link SourceSessionDeps.keepCache}). */
export interface KeptCache {
  sessionId: Uint8Array
  volume: string
  blockSize: number
  /** 32 bytes per block: the volume's hashes. */
  hashes: Uint8Array
  /** Blocks the destination may still ask for (claimed, unchanged here since the manifest). */
  servable: Bitmap
}

/** Options of a source session; every field has a default in constants.ts. */
export interface SourceSessionOptions {
  /** Payload bytes per data chunk. */
  chunkBytes?: number
  /** Unacknowledged bytes per lane. */
  laneWindow?: number
  /** Pre-copy rounds before switching over regardless. */
  maxRounds?: number
  /** Pause the planner aims for. */
  downtimeTargetMs?: number
  /** Throttle the workload step by step when its dirty set stops shrinking (default true). */
  autoConverge?: boolean
  /** Estimate of the pause's fixed part (device state, verification, commit) used by the planner. */
  fixedPauseMs?: number
  /** Bandwidth cap over all lanes, bytes per second (default none). */
  maxRate?: number
  /** Bandwidth cap per lane, bytes per second (default none). */
  laneRate?: number
  /**
   * A budget this migration shares with others (e.g. every migration of a host evacuation under
   * one `--max-rate`): every lane pays it too, beside `maxRate`. Adaptive pacing never changes it.
   */
  sharedBudget?: TokenBucket
  /**
   * A gate shared with other migrations (a host evacuation): one of them switches over at a time;
   * while another holds it, this one keeps copying rounds and its lanes wait.
   */
  switchoverGate?: SwitchoverGate
  /** Share of a core each scan worker may use while the workload runs (0 < share ≤ 1, default 1). */
  scanCpuShare?: number
  /**
   * Adaptive pacing (default on when the workload reports its progress): back off when its ops/s
   * drop by more than `pacingDrop` (default 0.1) against before the migration, speed up again
   * when they recover.
   */
  adaptivePacing?: boolean
  pacingDrop?: number
  /** How long the destination may take to answer a control frame. */
  controlTimeoutMs?: number
  /** How long to wait for a control answer on one lane before trying another. */
  controlAttemptMs?: number
  /** How long verification and commit may take on the destination. */
  commitTimeoutMs?: number
  /** A lane with bytes in flight and no acknowledgement for this long is declared dead. */
  laneStallMs?: number
  /** How often to try to replace failed lanes (when `replenish` is given). */
  laneRetryMs?: number
  /** Areas up to this many bytes are tracked by shadow copy, larger ones by fingerprints. */
  shadowLimitBytes?: number
  /**
   * Scans skip the holes of sparse files (SEEK_DATA/SEEK_HOLE; default true). `false` reads every
   * byte, as before hole skipping: for comparisons in benchmarks.
   */
  skipHoles?: boolean
  /**
   * `precopy` (default): the whole cache is on the destination, verified, before the switchover.
   * `postcopy`: the switchover waits only for memory, device state and the cache's hot and dirty
   * blocks; clean blocks stream in afterwards from every replica and from this node, which keeps
   * its copy until the destination has every block. Needs a cache that caches a volume.
   */
  cacheMode?: CacheMode
  /**
   * Post-copy: let the destination stream clean blocks from the replicas during the pre-copy
   * rounds as well (default false: the stream starts at the switchover, so the rounds have the
   * destination's CPU, disk and links to themselves and the workload resumes sooner). Worth it
   * when the destination has cores to spare: the cache completes sooner by what the rounds'
   * time carried.
   */
  postcopyPrefetch?: boolean
  /** Called with progress snapshots. */
  onProgress?: (p: MigrationProgress) => void
  /** Aborts the migration (the source resumes). */
  signal?: AbortSignal
}

/** What a source session works with. */
export interface SourceSessionDeps {
  image: ImageSpec
  controller: WorkloadController
  /** No workload runs the image here: the destination keeps it stopped too. */
  stopped?: boolean
  /** Control lane to the destination. */
  control: Lane
  /**
   * Data lanes to the destination (at least one), or a function that opens them, called once the
   * destination accepted the session (so a refused session opens no lanes).
   */
  lanes: Lane[] | { count: number, open: (accepted: AcceptFrame) => Promise<Lane[]> }
  /** Worker threads for scans and digests. */
  pool: WorkerPool
  /** Shadow copies kept across migrations (a long-lived node's); without it each is fresh. */
  shadows?: ShadowPool
  /**
   * Opens replacement lanes while fewer lanes are active than the session started with (a NIC
   * came back): given the lanes still active, returns new lanes (possibly none). Errors are
   * ignored and retried.
   */
  replenish?: (active: LaneStats[]) => Promise<Lane[]>
  /**
   * The cache's metadata when the cache caches a volume: the destination may then take clean,
   * cold blocks from replicas or its own stores, and the source sends only hot and dirty ones
   * (plus whatever the destination could not get elsewhere).
   */
  cacheManifest?: CacheManifest
  /**
   * The memory's dirty-marks file when the workload marks the pages it writes (cooperative
   * tracking: rounds cost what changed); without it, memory is scanned.
   */
  memoryMarks?: string
  /** The cache's dirty-marks file when the workload marks the blocks it writes (one mark per block). */
  cacheMarks?: string
  /**
   * Where the cache's written blocks come from when neither the workload's marks nor a scan
   * (e.g. a hypervisor's dirty bitmaps of the disk): rounds then cost what changed.
   */
  cacheDirtySource?: DirtySource
  /**
   * Post-copy: called once the copy is verified, before COMMIT, so that this node serves the
   * cache's clean blocks to the destination from then on (the workload is paused: the file no
   * longer changes). Returns what drops it again if the migration aborts after all; after a
   * commit the node keeps it until the destination releases it.
   */
  keepCache?: (kept: KeptCache) => Promise<() => Promise<void>>
}
