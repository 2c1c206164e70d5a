import { afterEach, describe, expect, it, vi } from 'vitest'
import { createShadowPool } from '@shoal/core'

describe('shadow pool', () => {
  afterEach(() => { vi.useRealTimers() })

  it('hands a returned shadow out again, zeroed where its bitmap says it held data (and only there is work done)', () => {
    const pool = createShadowPool({ maxBytes: 1 << 20 })
    const a = pool.acquire(64 * 1024)
    const view = new Uint8Array(a)
    // Units 1 and 9 of 4 KiB hold data; the bitmap marks exactly them.
    view.fill(7, 4096, 8192)
    view.fill(9, 9 * 4096, 10 * 4096)
    const bits = new SharedArrayBuffer(2)
    new Uint8Array(bits).set([0b0000_0010, 0b0000_0010])
    pool.release(a, { bits, unitSize: 4096 })
    expect(pool.keptBytes).toBe(64 * 1024)
    const b = pool.acquire(64 * 1024)
    expect(b).toBe(a)
    expect(new Uint8Array(b).every(x => x === 0)).toBe(true)
    expect(pool.keptBytes).toBe(0)
    // Another size gets a fresh buffer.
    pool.release(b)
    expect(pool.acquire(32 * 1024)).not.toBe(b)
  })

  it('without a bitmap zeroes all of it; keeps at most maxBytes, oldest out first; lets idle ones go', () => {
    vi.useFakeTimers()
    const pool = createShadowPool({ maxBytes: 3 * 4096, idleMs: 1000 })
    const [a, b, c] = [pool.acquire(8192), pool.acquire(4096), pool.acquire(4096)]
    new Uint8Array(a).fill(1)
    pool.release(a)
    pool.release(b)
    expect(pool.keptBytes).toBe(3 * 4096)
    pool.release(c) // a (the oldest) makes room
    expect(pool.keptBytes).toBe(2 * 4096)
    expect(pool.acquire(8192)).not.toBe(a)
    pool.release(pool.acquire(1 << 20)) // larger than the pool: not kept
    expect(pool.keptBytes).toBe(2 * 4096)
    vi.advanceTimersByTime(1001)
    expect(pool.keptBytes).toBe(0)
  })
})
