import type { CacheFetchStats } from '../volume/cache-fetch.js'
import type { PacingReport } from '../pacing/pacer.js'
import type { LaneStats } from './lane-pump.js'

/** Figures of one pre-copy round (the last one is the switchover round). */
export interface RoundStats {
  round: number
  /** Dirty memory pages sent. */
  pages: number
  /** Dirty cache blocks sent. */
  blocks: number
  /** Payload bytes sent. */
  bytes: number
  /** Wall time of the scan that found them (sending starts while it runs). */
  scanMs: number
  /** Wall time of the round, scan included: from its start to the last acknowledgement. */
  sendMs: number
  /** True for the round run while the workload was paused. */
  final: boolean
  /** Bytes dirtied per second while the previous round ran (this round's bytes over its duration). */
  dirtyRate?: number
  /** Bytes per second this round achieved (bytes over `sendMs`). */
  bandwidth?: number
  /** Pause the planner predicted after this round. */
  predictedPauseMs?: number
  /** Fraction of time the workload was held paused during this round (auto-converge). */
  throttle?: number
  /** The scan could not see everything (a cooperative workload did not answer in time). */
  incomplete?: boolean
  /** Part of `scanMs` spent waiting for the workload (cooperative tracker), not scanning. */
  scanWaitMs?: number
  /** Scan time of each area (memory, cache), waiting excluded: which area's tracker costs the scan. */
  areaScanMs?: number[]
  /** Bytes the scans skipped as holes of sparse files (not read). */
  holeBytes?: number
  /**
   * Some area's scan this round was its tracker's one-off first read of the whole area (the
   * cooperative tracker: later scans cost only what changed; it also checks every block the
   * destination gets elsewhere against its hash). Such a scan says nothing about the final
   * scan's cost, so the planner's scan-bound rule does not judge by it.
   */
  initialScan?: boolean
}

/** What a finished (or failed) migration reports. */
export interface MigrationReport {
  image: string
  /** True when the destination runs the workload on a verified copy. */
  ok: boolean
  rounds: RoundStats[]
  lanes: LaneStats[]
  /** Payload bytes sent over all lanes, re-sends included. */
  bytes: number
  totalMs: number
  /** Pause on the source → workload running on the destination. */
  downtimeMs?: number
  /**
   * Breakdown of the downtime: `pauseMs` stopping the workload, `finalScanMs` the final scan,
   * `finalSendMs` the final round from its start to its last acknowledgement (scan included),
   * `deviceStateMs` capturing and sending the device state, `verifyMs` the VERIFY round trip,
   * `commitMs` COMMIT to COMMITTED (the destination's check and start of the workload).
   */
  downtime?: { pauseMs?: number, finalScanMs: number, finalSendMs: number, deviceStateMs?: number, verifyMs: number, commitMs: number }
  /** The pause against its target and its prediction, and the part that missed it (see {@link PauseVerdict}). */
  pause?: PauseVerdict
  /**
   * Things the user should know, each with a stable code (also sent with progress as they
   * arise): `WARN_TRACKER_TOO_SLOW` (the tracker's final scan alone cannot meet the downtime
   * target for this image), `WARN_DOWNTIME_MISSED` (the pause exceeded its target).
   */
  warnings?: MigrationWarning[]
  /** Result of comparing digests at switchover. */
  verified: boolean
  memoryDigest?: string
  cacheDigest?: string
  /** Error code and message when `ok` is false. */
  error?: { code: string, message: string }
  /** Lanes the control conversation moved to after its lane broke or went silent, in order. */
  controlMoves?: string[]
  /**
   * How pre-copy ended: `converged` when the dirty set got as small as it gets (the predicted pause
   * fitted the target, nothing was dirty, or the pause is bound by the final scan), `targetMet`
   * when the predicted pause fitted the target, the planner's reason, and the highest
   * auto-converge throttle used.
   */
  convergence?: { converged: boolean, targetMet: boolean, reason: string, maxThrottle: number }
  /** What adaptive pacing did (when the workload reports its progress). */
  pacing?: PacingReport
  /** Whether the source workload was resumed after a failure. */
  sourceResumed?: boolean
  /**
   * For a cache that caches a volume: what the destination got elsewhere (per replica, dedup),
   * as it last reported, and `sourceBlocks`, the cache blocks the source sent itself.
   */
  cache?: CacheFetchStats & { sourceBlocks: number }
  /** `precopy` or `postcopy` (see `SourceSessionOptions.cacheMode`). */
  cacheMode?: 'precopy' | 'postcopy'
  /**
   * Post-copy: the cache blocks the destination did not hold yet at the switchover (they stream
   * in afterwards, each checked against its hash), and their bytes.
   */
  postcopy?: { deferredBlocks: number, deferredBytes: number }
}

/** Parts of the pause, in the order they happen. */
export type PausePart = 'pause' | 'final-scan' | 'final-send' | 'device-state' | 'verify' | 'commit'

/**
 * The pause against its target: what the planner predicted when it switched over (`predicted`:
 * the dirty part, scan and send overlapped, and the fixed part: device state, verification,
 * commit), what each part took, and, when the target was missed, `missedBy` (ms over the target)
 * and `culprit`, the part that ran furthest over what was expected of it.
 */
export interface PauseVerdict {
  targetMs: number
  actualMs: number
  predictedMs: number
  met: boolean
  /** Predicted and actual milliseconds of the dirty part (final scan + send) and the fixed part. */
  predicted: { dirtyMs: number, fixedMs: number }
  /** Actual milliseconds of each part (the dirty part's scan and send overlap: send counts after the scan). */
  parts: Record<PausePart, number>
  missedBy?: number
  culprit?: PausePart
}

/** Stable codes of {@link MigrationWarning}. */
export type MigrationWarningCode = 'WARN_TRACKER_TOO_SLOW' | 'WARN_DOWNTIME_MISSED'

/** A warning of a migration: a stable code, a plain sentence, and the figures behind it. */
export interface MigrationWarning {
  code: MigrationWarningCode
  message: string
  /** WARN_TRACKER_TOO_SLOW: the area whose tracker is too slow, the tracker, and what would do. */
  area?: 'memory' | 'cache'
  tracker?: string
  /** Trackers that cost what changed instead of the image size (`cooperative`, `dirty-bitmap`). */
  suggested?: string[]
  /** The final scan's cost: estimated from the data to read, or measured in a round. */
  scanMs?: number
  basis?: 'estimate' | 'measured'
  downtimeTargetMs?: number
  /** WARN_DOWNTIME_MISSED: the part that missed, and by how much the pause exceeded the target. */
  part?: PausePart
  overByMs?: number
}

/** A progress snapshot, emitted about every 250 ms and at each phase change. */
export interface MigrationProgress {
  phase: 'handshake' | 'precopy' | 'switchover' | 'verify' | 'commit' | 'done' | 'aborted'
  round: number
  /** Payload bytes acknowledged so far. */
  bytes: number
  /** Bytes still queued or in flight in the current round. */
  remaining: number
  /** Recent rate, bytes per second. */
  rate: number
  /** Estimated milliseconds to finish the current round (undefined when unknown). */
  etaMs?: number
  lanes: LaneStats[]
  /** Cache blocks the destination fetches elsewhere (replicas, dedup), as it last reported. */
  cache?: CacheFetchStats
  /** Warnings raised so far (see {@link MigrationReport.warnings}). */
  warnings?: MigrationWarning[]
}
