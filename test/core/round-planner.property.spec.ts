import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { isStalled, planNextRound, predictPauseMs, STALL_ROUNDS, THROTTLE_INCREMENT, THROTTLE_INITIAL, THROTTLE_MAX } from '@shoal/core'
import type { PlannerDecision, PlannerLimits, RoundStats } from '@shoal/core'

// Properties of the round planner (packages/core/src/session/round-planner.ts), written against
// its exported API only: planNextRound, predictPauseMs, isStalled and the throttle constants.

const SWITCH_REASONS = new Set<PlannerDecision['reason']>(['converged', 'idle', 'max-rounds', 'stalled', 'scan-bound'])
const STAY_REASONS = new Set<PlannerDecision['reason']>(['throttle', 'continue'])

const round = fc.record({
  bytes: fc.oneof({ weight: 1, arbitrary: fc.constant(0) }, { weight: 6, arbitrary: fc.integer({ min: 1, max: 10_000_000_000 }) }),
  sendMs: fc.integer({ min: 0, max: 100_000 }),
  scanMs: fc.integer({ min: 0, max: 20_000 }),
  waitShare: fc.oneof(fc.constant(0), fc.double({ min: 0, max: 1, noNaN: true })),
  incomplete: fc.oneof({ weight: 9, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.constant(true) })
}).map(({ bytes, sendMs, scanMs, waitShare, incomplete }): RoundStats => ({
  round: 0, pages: 0, blocks: 0, final: false, bytes, sendMs, scanMs,
  ...(waitShare > 0 ? { scanWaitMs: Math.floor(scanMs * waitShare) } : {}),
  ...(incomplete != null ? { incomplete } : {})
}))
const rounds = (min = 1, max = 40): fc.Arbitrary<RoundStats[]> => fc.array(round, { minLength: min, maxLength: max }).map(rs => rs.map((r, i) => ({ ...r, round: i + 1 })))
const limitsArb: fc.Arbitrary<PlannerLimits> = fc.record({
  maxRounds: fc.integer({ min: 1, max: 40 }),
  downtimeTargetMs: fc.integer({ min: 1, max: 5000 }),
  autoConverge: fc.boolean(),
  fixedPauseMs: fc.option(fc.integer({ min: 0, max: 2000 }), { nil: undefined }),
  paced: fc.option(fc.boolean(), { nil: undefined })
}).map(l => Object.fromEntries(Object.entries(l).filter(([, v]) => v !== undefined)) as unknown as PlannerLimits)
/** Throttle values the session can hold: 0, or a step of the auto-converge ladder. */
const throttleArb = fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 10 }).map(k => Math.min(THROTTLE_MAX, THROTTLE_INITIAL + k * THROTTLE_INCREMENT)), fc.constant(THROTTLE_MAX))

const runs = { numRuns: 1000 }

describe('round planner properties', () => {
  it('throttle stays in [0, THROTTLE_MAX], never decreases, moves only with reason "throttle" and only under auto-converge', () => {
    fc.assert(fc.property(rounds(), throttleArb, limitsArb, (rs, t, limits) => {
      const d = planNextRound(rs, t, limits)
      expect(d.throttle).toBeGreaterThanOrEqual(0)
      expect(d.throttle).toBeLessThanOrEqual(THROTTLE_MAX)
      expect(d.throttle).toBeGreaterThanOrEqual(t)
      if (d.throttle !== t) {
        expect(d.reason).toBe('throttle')
        expect(limits.autoConverge).toBe(true)
        // one step of the ladder: the first step from 0, then +increment up to the ceiling
        expect(d.throttle).toBeCloseTo(t === 0 ? THROTTLE_INITIAL : Math.min(THROTTLE_MAX, t + THROTTLE_INCREMENT), 10)
      }
    }), runs)
  })

  it('never switches over without a reason, and never stays without one', () => {
    fc.assert(fc.property(rounds(), throttleArb, limitsArb, (rs, t, limits) => {
      const d = planNextRound(rs, t, limits)
      expect(d.switchOver ? SWITCH_REASONS.has(d.reason) : STAY_REASONS.has(d.reason)).toBe(true)
      // and each reason is true of its inputs
      const last = rs[rs.length - 1]!
      if (d.reason === 'idle') expect(last.bytes).toBe(0)
      if (d.reason === 'converged') expect(d.predictedPauseMs).toBeLessThanOrEqual(limits.downtimeTargetMs)
      if (d.reason === 'max-rounds') expect(rs.length).toBeGreaterThanOrEqual(limits.maxRounds)
      if (d.reason === 'stalled') { expect(limits.autoConverge).not.toBe(true); expect(isStalled(rs)).toBe(true) }
      if (d.reason === 'scan-bound' || d.reason === 'stalled') expect(d.predictedPauseMs).toBeGreaterThan(limits.downtimeTargetMs)
      expect(d.predictedPauseMs).toBe(predictPauseMs(rs, limits.fixedPauseMs ?? 20, limits.paced))
    }), runs)
  })

  it('the round limit always ends pre-copy: at maxRounds rounds it switches over, whatever the rounds look like', () => {
    fc.assert(fc.property(rounds(1, 40), throttleArb, limitsArb, (rs, t, limits) => {
      fc.pre(rs.length >= limits.maxRounds)
      expect(planNextRound(rs, t, limits).switchOver).toBe(true)
    }), runs)
  })

  it('a migration driven round by round switches over by round maxRounds, with a throttle that only climbs the ladder', () => {
    fc.assert(fc.property(rounds(40, 40), limitsArb, (rs, limits) => {
      let throttle = 0
      let switchedAt: number | undefined
      for (let n = 1; n <= rs.length; n++) {
        const d = planNextRound(rs.slice(0, n), throttle, limits)
        expect(d.throttle).toBeGreaterThanOrEqual(throttle)
        throttle = d.throttle
        if (d.switchOver) { switchedAt = n; break }
      }
      expect(switchedAt).toBeDefined()
      expect(switchedAt!).toBeLessThanOrEqual(limits.maxRounds)
    }), runs)
  })

  it('a round that could not see every change never switches over before the round limit', () => {
    fc.assert(fc.property(rounds(), throttleArb, limitsArb, (rs, t, limits) => {
      const last = { ...rs[rs.length - 1]!, incomplete: true }
      const d = planNextRound([...rs.slice(0, -1), last], t, limits)
      expect(d.switchOver).toBe(rs.length >= limits.maxRounds)
      expect(d.throttle).toBe(t)
    }), runs)
  })

  it('a complete round that found nothing dirty always switches over ("idle")', () => {
    fc.assert(fc.property(rounds(), throttleArb, limitsArb, (rs, t, limits) => {
      const last: RoundStats = { ...rs[rs.length - 1]!, bytes: 0 }
      delete last.incomplete
      const d = planNextRound([...rs.slice(0, -1), last], t, limits)
      expect(d).toMatchObject({ switchOver: true, reason: 'idle' })
    }), runs)
  })

  it('the predicted pause is monotone: more fixed pause, more bytes, a longer scan or a slower last round never predict less', () => {
    fc.assert(fc.property(rounds(), fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 0, max: 1_000_000_000 }), fc.integer({ min: 0, max: 10_000 }), fc.boolean(), (rs, fixed, moreBytes, moreMs, paced) => {
      const base = predictPauseMs(rs, fixed, paced)
      // up to float rounding: bytes / (bytes / ms) is not always ms exactly
      const atLeast = (x: number, y: number): void => { if (Number.isFinite(y)) expect(x).toBeGreaterThanOrEqual(y - Math.abs(y) * 1e-12); else expect(x).toBe(y) }
      const last = rs[rs.length - 1]!
      const withLast = (r: Partial<RoundStats>): number => predictPauseMs([...rs.slice(0, -1), { ...last, ...r }], fixed, paced)
      atLeast(predictPauseMs(rs, fixed + 1, paced), base)
      atLeast(withLast({ bytes: last.bytes + moreBytes }), base)
      atLeast(withLast({ scanMs: last.scanMs + moreMs }), base)
      // (from a measured bandwidth: a round of 0 ms predicts Infinity, "unknown", which any measurement lowers)
      if (Number.isFinite(base)) atLeast(withLast({ sendMs: last.sendMs + moreMs }), base)
      // a paced round predicts no longer than the same round unpaced (the final round runs unpaced)
      atLeast(predictPauseMs(rs, fixed, false), predictPauseMs(rs, fixed, true))
    }), runs)
  })

  it('a looser target or a lower round limit never turns a switch-over into another round', () => {
    fc.assert(fc.property(rounds(), throttleArb, limitsArb, fc.integer({ min: 0, max: 10_000 }), fc.integer({ min: 0, max: 40 }), (rs, t, limits, looser, fewer) => {
      const d = planNextRound(rs, t, limits)
      if (d.reason === 'converged' || d.reason === 'idle') {
        const e = planNextRound(rs, t, { ...limits, downtimeTargetMs: limits.downtimeTargetMs + looser })
        expect(e.switchOver).toBe(true)
        expect(['converged', 'idle']).toContain(e.reason)
      }
      if (d.switchOver) {
        expect(planNextRound(rs, t, { ...limits, maxRounds: Math.max(1, limits.maxRounds - fewer) }).switchOver).toBe(true)
      }
    }), runs)
  })

  it('the dirty set is never judged stalled before the bulk copy and STALL_ROUNDS rounds after it', () => {
    fc.assert(fc.property(rounds(1, STALL_ROUNDS + 1), (rs) => {
      expect(isStalled(rs)).toBe(false)
    }), { numRuns: 200 })
  })
})
