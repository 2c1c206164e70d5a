import { describe, expect, it } from 'vitest'
import { isStalled, predictPauseMs, shouldSwitchOver } from '@shoal/core'
import type { RoundStats } from '@shoal/core'

const r = (round: number, bytes: number, sendMs: number, scanMs = 10): RoundStats => ({ round, bytes, sendMs, scanMs, pages: 0, blocks: 0, final: false })
const limits = { maxRounds: 30, downtimeTargetMs: 300 }
const MB = 1e6

describe('round planner', () => {
  it('keeps copying while the predicted pause exceeds the target', () => {
    // 1 GB took 10 s (100 MB/s); round 2 carried 100 MB → ~1 s, the scan overlapping it.
    const rounds = [r(1, 1000 * MB, 10_000), r(2, 100 * MB, 1000)]
    expect(predictPauseMs(rounds)).toBeCloseTo(1000, 0)
    expect(predictPauseMs([r(1, 1000 * MB, 10_000), r(2, MB, 10, 400)])).toBe(400)
    expect(shouldSwitchOver(rounds, limits)).toBe(false)
  })

  it('switches over once the last round fits the target at the achieved bandwidth', () => {
    const rounds = [r(1, 1000 * MB, 10_000), r(2, 100 * MB, 1000), r(3, 20 * MB, 200)]
    expect(predictPauseMs(rounds)).toBeLessThan(300)
    expect(shouldSwitchOver(rounds, limits)).toBe(true)
  })

  it('switches over at the round limit even if not converged', () => {
    const rounds = Array.from({ length: 5 }, (_, i) => r(i + 1, (100 - i * 20) * MB, 1000))
    expect(shouldSwitchOver(rounds, { ...limits, maxRounds: 5 })).toBe(true)
    expect(shouldSwitchOver(rounds.slice(0, 4), { ...limits, maxRounds: 5 })).toBe(false)
  })

  it('detects a dirty set that stopped shrinking (a write-heavy workload)', () => {
    const steady = [r(1, 1000 * MB, 10_000), r(2, 50 * MB, 500), r(3, 49 * MB, 490), r(4, 50 * MB, 500), r(5, 48 * MB, 480)]
    expect(isStalled(steady)).toBe(true)
    expect(shouldSwitchOver(steady, limits)).toBe(true)
    const shrinking = [r(1, 1000 * MB, 10_000), r(2, 50 * MB, 500), r(3, 40 * MB, 400), r(4, 30 * MB, 300), r(5, 25 * MB, 250)]
    expect(isStalled(shrinking)).toBe(false)
    expect(isStalled(steady.slice(0, 4))).toBe(false)
  })

  it('an idle workload switches over right after the bulk copy', () => {
    expect(shouldSwitchOver([r(1, 1000 * MB, 10_000), r(2, 0, 0)], limits)).toBe(true)
  })
})
