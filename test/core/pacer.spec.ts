import { describe, expect, it } from 'vitest'
import { Pacer, TokenBucket } from '@shoal/core'

const MB = 1e6

describe('adaptive pacing', () => {
  it('halves the rate (from what is actually sent) when the workload slows down by more than the threshold', () => {
    // Baseline 5000 ops/s; 4000 is a 20% drop (> 10%): back off from the 80 MB/s being sent.
    expect(Pacer.decide(5000, 4000, Infinity, 80 * MB, Infinity, 0.1, MB)).toBe(40 * MB)
    expect(Pacer.decide(5000, 4000, 30 * MB, 80 * MB, Infinity, 0.1, MB)).toBe(15 * MB)
    // Never below the floor.
    expect(Pacer.decide(5000, 100, 1.5 * MB, 80 * MB, Infinity, 0.1, MB)).toBe(MB)
  })

  it('holds inside the band and speeds up by half once recovered, never above the cap', () => {
    expect(Pacer.decide(5000, 4600, 20 * MB, 20 * MB, Infinity, 0.1, MB)).toBe(20 * MB) // 8% down: hold
    expect(Pacer.decide(5000, 4900, 20 * MB, 20 * MB, Infinity, 0.1, MB)).toBe(30 * MB) // 2% down: recovered
    expect(Pacer.decide(5000, 5000, 40 * MB, 40 * MB, 50 * MB, 0.1, MB)).toBe(50 * MB)
    expect(Pacer.decide(5000, 5000, 50 * MB, 50 * MB, 50 * MB, 0.1, MB)).toBe(50 * MB)
    // Nothing to compare with: leave the rate alone.
    expect(Pacer.decide(0, 10, 20 * MB, 20 * MB, Infinity, 0.1, MB)).toBe(20 * MB)
  })
})

describe('token bucket', () => {
  it('rejects bad rates, lets everything through uncapped, and changes rate on the fly', async () => {
    expect(() => new TokenBucket(0)).toThrow(RangeError)
    expect(() => new TokenBucket(-5)).toThrow(RangeError)
    const free = new TokenBucket(Infinity)
    for (let i = 0; i < 100; i++) await free.take(1 << 30)
    const b = new TokenBucket(10 * MB)
    expect(b.rate).toBe(10 * MB)
    b.setRate(Infinity)
    await b.take(1 << 30) // an uncapped bucket never waits
    expect(() => { b.setRate(0) }).toThrow(RangeError)
    const ac = new AbortController()
    const slow = new TokenBucket(1)
    ac.abort()
    await expect(slow.take(10 * MB, ac.signal)).rejects.toThrow()
  })
})
