import type { RoundStats } from './report.js'

/** Inputs of {@link shouldSwitchOver}. */
export interface PlannerLimits {
  /** Switch over after this many pre-copy rounds, converged or not. */
  maxRounds: number
  /** Pause to aim for. */
  downtimeTargetMs: number
}

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
 * Predicts the final round's share of the pause if the workload were paused now: it will carry
 * about what the last round carried (the pages dirtied while it ran, at a shrinking or steady
 * rate), sent at the bandwidth achieved so far, overlapped with the scan that finds it.
 */
export function predictPauseMs (rounds: readonly RoundStats[]): number {
  const last = rounds[rounds.length - 1]
  if (last == null) return Infinity
  const bw = achievedBandwidth(rounds)
  if (last.bytes === 0) return last.scanMs
  if (bw === 0) return Infinity
  return Math.max(last.bytes / bw, last.scanMs)
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

/** Rounds without shrinking after which pre-copy stops. */
export const STALL_ROUNDS = 3

/**
 * Decides after each pre-copy round whether to pause the workload and switch over: when the
 * predicted pause fits the target, when the dirty set stopped shrinking, or at the round limit.
 */
export function shouldSwitchOver (rounds: readonly RoundStats[], limits: PlannerLimits): boolean {
  if (rounds.length >= limits.maxRounds) return true
  if (isStalled(rounds)) return true
  return predictPauseMs(rounds) <= limits.downtimeTargetMs
}
