import type { RoundStats } from './report.js'

/** Inputs of {@link planNextRound}. */
export interface PlannerLimits {
  /** Switch over after this many pre-copy rounds, converged or not. */
  maxRounds: number
  /** Pause to aim for. */
  downtimeTargetMs: number
  /** Throttle the workload step by step when the dirty set stops shrinking. */
  autoConverge?: boolean
  /** Part of the pause that does not depend on the dirty set: device state, verification, commit. */
  fixedPauseMs?: number
  /**
   * Rounds are slowed by a bandwidth budget (the final round is not): predict the final send from
   * the achieved bandwidth, not from how long the last round took.
   */
  paced?: boolean
}

/** What to do after a pre-copy round. */
export interface PlannerDecision {
  /** Pause the workload and run the final round now. */
  switchOver: boolean
  /** Fraction of time the workload should be held paused from now on (0 = run freely). */
  throttle: number
  /** The pause predicted if the workload were paused now. */
  predictedPauseMs: number
  /**
   * Why: `converged` (fits the target), `idle` (nothing dirty), `max-rounds`, `stalled` (not
   * shrinking, no auto-converge), `scan-bound` (the final scan alone exceeds the target and the
   * dirty set is not what costs: throttling cannot help), `throttle` (auto-converge stepped up),
   * `continue`.
   */
  reason: 'converged' | 'idle' | 'max-rounds' | 'stalled' | 'scan-bound' | 'throttle' | 'continue'
}

/** Rounds without shrinking after which pre-copy stops (without auto-converge). */
export const STALL_ROUNDS = 3
/** Auto-converge: first throttle step, increment, and ceiling (as QEMU's cpu-throttle). */
export const THROTTLE_INITIAL = 0.2
export const THROTTLE_INCREMENT = 0.1
export const THROTTLE_MAX = 0.99
/** A round counts as scan-bound when its dirty set costs at most this multiple of its scan. */
export const SCAN_BOUND_SLACK = 1.25
/** Rounds whose scans the scan-bound rule looks at (it takes their fastest). */
export const SCAN_BOUND_ROUNDS = 3
/** Default estimate of the pause's fixed part. */
export const DEFAULT_FIXED_PAUSE_MS = 20

/** Bandwidth achieved so far in bytes per millisecond (0 when nothing was measured). */
export function achievedBandwidth (rounds: readonly RoundStats[]): number {
  let bytes = 0
  let ms = 0
  for (const r of rounds) {
    if (r.bytes === 0) continue
    bytes += r.bytes
    ms += r.sendMs
  }
  return ms > 0 ? bytes / ms : 0
}

/**
 * Predicts the pause if the workload were paused now: the final round looks like the last one —
 * it carries about what the last round carried (what was dirtied while it ran), at the bandwidth
 * achieved so far, overlapped with the scan that finds it, and takes at least as long as the last
 * round did (small rounds are latency-bound, slower than the bulk bandwidth; not when `paced`,
 * since a budget slowed that round and the final round runs unpaced); plus the fixed part.
 */
export function predictPauseMs (rounds: readonly RoundStats[], fixedPauseMs = 0, paced = false): number {
  const last = rounds[rounds.length - 1]
  if (last == null) return Infinity
  const bw = achievedBandwidth(rounds)
  // Waiting for a cooperative workload's acknowledgement is not part of the final round.
  const wait = last.scanWaitMs ?? 0
  if (last.bytes === 0) return last.scanMs - wait + fixedPauseMs
  if (bw === 0) return Infinity
  return Math.max(last.bytes / bw, last.scanMs - wait, paced ? 0 : last.sendMs - wait) + fixedPauseMs
}

/**
 * True when the dirty set stopped shrinking: each of the last `window` rounds carried at least
 * 90% of the round before it. More rounds would only copy the same hot pages again.
 */
export function isStalled (rounds: readonly RoundStats[], window = STALL_ROUNDS): boolean {
  if (rounds.length < window + 2) return false // round 1 is the bulk copy; judge the rounds after it
  for (let i = rounds.length - window; i < rounds.length; i++) {
    if (rounds[i]!.bytes < 0.9 * rounds[i - 1]!.bytes) return false
  }
  return true
}

/**
 * Decides after each pre-copy round: switch over when the predicted pause fits the target (or
 * nothing is dirty); at the round limit switch over regardless. Otherwise, when the dirty set
 * stopped shrinking: with auto-converge, throttle the workload one step more (first after
 * {@link STALL_ROUNDS} flat rounds, then after every round that did not shrink by 10%); without
 * it, give up pre-copy and switch over with the pause it takes.
 */
export function planNextRound (rounds: readonly RoundStats[], throttle: number, limits: PlannerLimits): PlannerDecision {
  const fixed = limits.fixedPauseMs ?? DEFAULT_FIXED_PAUSE_MS
  const predictedPauseMs = predictPauseMs(rounds, fixed, limits.paced)
  const last = rounds[rounds.length - 1]
  const prev = rounds[rounds.length - 2]
  const decide = (switchOver: boolean, reason: PlannerDecision['reason'], t = throttle): PlannerDecision => ({ switchOver, throttle: t, predictedPauseMs, reason })
  // A round that could not see every change (the workload did not answer) says nothing about
  // convergence: judge again after the next one.
  if (last?.incomplete === true) return rounds.length >= limits.maxRounds ? decide(true, 'max-rounds') : decide(false, 'continue')
  if (last != null && last.bytes === 0) return decide(true, 'idle')
  if (predictedPauseMs <= limits.downtimeTargetMs) return decide(true, 'converged')
  if (rounds.length >= limits.maxRounds) return decide(true, 'max-rounds')
  // Scan-bound: the final scan alone (the last round's measured scan, the image's data read in
  // full) plus the fixed part exceeds the target, and the round was the scan: sending what it
  // found took no longer than the scan (within SCAN_BOUND_SLACK). Then every further round lasts
  // a scan too and finds about as much, and a throttle can shorten neither the scan nor the pause
  // much: switch over now, from round 1 on, instead of throttling the workload for whole scans.
  // A round whose sending outlasts its scan (a bulk copy, or a dirty rate above the bandwidth)
  // goes on as usual: more rounds, or a throttle, do shorten that part.
  // The scan's cost is the image's, not the round's: the smallest of the last rounds' scans, so
  // one scan slowed by a busy CPU does not end pre-copy early (a truly slow scan is slow every time).
  // A tracker's one-off first read (initialScan) is no such measure: with the cooperative tracker
  // the later scans cost only what changed, so the rule waits for a round that was not one.
  const judged = rounds.slice(-SCAN_BOUND_ROUNDS).filter(r => r.initialScan !== true)
  const scan = judged.length > 0 ? Math.min(...judged.map(r => r.scanMs - (r.scanWaitMs ?? 0))) : 0
  if (judged.length > 0 && scan + fixed > limits.downtimeTargetMs && predictedPauseMs - fixed <= SCAN_BOUND_SLACK * scan) {
    return decide(true, 'scan-bound')
  }
  const flat = last != null && prev != null && rounds.length >= 3 && last.bytes >= 0.9 * prev.bytes
  if (limits.autoConverge === true) {
    if ((throttle === 0 && isStalled(rounds)) || (throttle > 0 && flat)) {
      return decide(false, 'throttle', throttle === 0 ? THROTTLE_INITIAL : Math.min(THROTTLE_MAX, throttle + THROTTLE_INCREMENT))
    }
    return decide(false, 'continue')
  }
  if (isStalled(rounds)) return decide(true, 'stalled')
  return decide(false, 'continue')
}

/** Whether {@link planNextRound} would switch over now, for a session without auto-converge. */
export function shouldSwitchOver (rounds: readonly RoundStats[], limits: PlannerLimits): boolean {
  return planNextRound(rounds, 0, { ...limits, fixedPauseMs: limits.fixedPauseMs ?? 0 }).switchOver
}
