import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { Bitmap, maskRegionSlots } from '@shoal/core'

/** The rule, one region at a time: a region in a masked unit gets 32 bytes of 0xff. */
function naive (slots: Uint8Array, first: number, n: number, regionSize: number, units: Bitmap, unitSize: number): void {
  const perUnit = Math.max(1, unitSize / regionSize)
  for (let i = 0; i < n; i++) if (units.get(Math.floor((first + i) / perUnit))) slots.fill(0xff, i * 32, i * 32 + 32)
}

describe('maskRegionSlots (run-filled) equals the region-by-region rule', () => {
  it('for any mask, any batch window and unit sizes of 1 and 16 regions', () => {
    fc.assert(fc.property(
      fc.constantFrom(1, 16), fc.integer({ min: 1, max: 300 }), fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.nat(), fc.nat(),
      (perUnit, unitCount, seed, a, b) => {
        const units = new Bitmap(unitCount)
        let x = seed
        for (let u = 0; u < unitCount; u++) { x = (x * 1103515245 + 12345) >>> 0; if ((x >>> 16) % 3 === 0) units.set(u) }
        const regions = unitCount * perUnit
        const first = a % regions
        const n = 1 + (b % (regions - first))
        const fast = new Uint8Array(n * 32).fill(7)
        const slow = new Uint8Array(n * 32).fill(7)
        maskRegionSlots(fast, first, n, 16384, { units, unitSize: 16384 * perUnit })
        naive(slow, first, n, 16384, units, 16384 * perUnit)
        expect(Buffer.from(fast).equals(Buffer.from(slow))).toBe(true)
      }), { numRuns: 500 })
  })
})
