import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  checkName, decodeFrame, encodeFrameBytes, FrameType, InvalidArgumentError, InvalidFrameError, InvalidImageError, MAX_BLOCK_SIZE,
  MAX_PAGE_SIZE, MIN_BLOCK_SIZE, MIN_PAGE_SIZE, NAME_PATTERN, validateImageSpec
} from '@shoal/core'
import type { Frame, ImageSpec } from '@shoal/core'
import { checkCreateOptions } from '@shoal/cli'

const MiB = 2 ** 20
const sid = new Uint8Array(16).fill(1)

function specOf (name: string, memorySize: number, pageSize: number, cacheSize: number, blockSize: number): ImageSpec {
  return { name, driver: 'synthetic', driverConfig: { rate: 1 }, memory: { path: '/m', size: memorySize, pageSize }, cache: { path: '/c', size: cacheSize, blockSize } }
}

function helloOf (spec: ImageSpec): Frame {
  return {
    type: FrameType.Hello, sessionId: sid, image: spec.name, pageSize: spec.memory.pageSize, memorySize: spec.memory.size,
    blockSize: spec.cache.blockSize, cacheSize: spec.cache.size, lanes: 4, driver: spec.driver, driverConfig: JSON.stringify(spec.driverConfig)
  }
}

/** Whether `f` throws (any error). */
function refuses (f: () => unknown): boolean {
  try { f(); return false } catch { return true }
}

// Sizes around every edge of the rules: powers of two below, inside and above the ranges, odd values.
const pow2 = fc.integer({ min: 0, max: 26 }).map(e => 2 ** e)
const size = fc.oneof(pow2, fc.integer({ min: 0, max: 64 * MiB }), fc.integer({ min: 0, max: 64 }).map(n => n * 4096))
const name = fc.oneof(fc.constantFrom('vm1', 'a', '.x', '..', 'a/b', 'a b', '', 'x'.repeat(128), 'x'.repeat(129), 'é'), fc.string({ maxLength: 10 }))

describe('limits: one rule for the CLI, the node, the codec and the stores', () => {
  it('whatever image create accepts can be encoded in a HELLO and decoded (so it can migrate), and the reverse', () => {
    fc.assert(fc.property(name, size, pow2, size, pow2, (n, mem, page, cache, block) => {
      const spec = specOf(n, mem, page, cache, block)
      const created = !refuses(() => { validateImageSpec(spec) })
      const onTheWire = !refuses(() => decodeFrame(encodeFrameBytes(helloOf(spec))))
      // The same rule on both sides: a creatable image migrates, and an accepted HELLO can be stored.
      expect(onTheWire).toBe(created)
      if (created) {
        const back = decodeFrame(encodeFrameBytes(helloOf(spec))) as Extract<Frame, { type: FrameType.Hello }>
        expect([back.image, back.memorySize, back.pageSize, back.cacheSize, back.blockSize]).toEqual([n, mem, page, cache, block])
      }
      // The CLI's check (4 KiB pages) agrees with the node's, apart from the synthetic workload's own minimum.
      if (page === 4096 && mem >= 8192) {
        expect(!refuses(() => { checkCreateOptions(n, { driver: 'synthetic', memory: mem, cache, blockSize: block }) })).toBe(created)
      }
    }), { numRuns: 3000 })
  })

  it('refuses an 8 MiB block size at create (CLI and node), as the codec would', () => {
    const spec = specOf('vm1', 64 * MiB, 4096, 256 * MiB, 8 * MiB)
    expect(() => { validateImageSpec(spec) }).toThrow(InvalidImageError)
    expect(() => { validateImageSpec(spec) }).toThrow('cache.blockSize must be a power of two from 4 KiB to 4 MiB (got 8 MiB)')
    expect(() => { checkCreateOptions('vm1', { driver: 'synthetic', memory: 64 * MiB, cache: 256 * MiB, blockSize: 8 * MiB }) })
      .toThrow('--block-size must be a power of two from 4 KiB to 4 MiB (got 8 MiB)')
    expect(() => encodeFrameBytes(helloOf(spec))).toThrow(InvalidFrameError)
    // The edges are inside.
    for (const block of [MIN_BLOCK_SIZE, MAX_BLOCK_SIZE]) expect(() => { validateImageSpec(specOf('vm1', MiB, 4096, 4 * MiB, block)) }).not.toThrow()
    for (const page of [MIN_PAGE_SIZE, MAX_PAGE_SIZE]) expect(() => { validateImageSpec(specOf('vm1', MiB, page, 0, MIN_BLOCK_SIZE)) }).not.toThrow()
  })

  it('has one name rule, with the error class each caller asks for', () => {
    for (const bad of ['', '.', '..', '.hidden', 'a/b', 'a b', 'x'.repeat(129)]) {
      expect(NAME_PATTERN.test(bad), bad).toBe(false)
      expect(() => checkName(bad, 'image name')).toThrow(InvalidArgumentError)
      expect(() => checkName(bad, 'volume id', InvalidFrameError)).toThrow(/invalid volume id .*1-128 characters/)
    }
    for (const ok of ['vm1', 'a.b_c-d', 'x'.repeat(128)]) expect(checkName(ok, 'image name')).toBe(ok)
  })
})
