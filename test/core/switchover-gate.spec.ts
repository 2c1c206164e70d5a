import { describe, expect, it } from 'vitest'
import { SwitchoverGate } from '@shoal/core'

describe('SwitchoverGate: one pause at a time among migrations that share it', () => {
  it('is held by one, waits the others, and frees them on release (also when aborted)', async () => {
    const gate = new SwitchoverGate()
    const a = Symbol('a')
    const b = Symbol('b')
    expect(gate.tryAcquire(a)).toBe(true)
    expect(gate.tryAcquire(a)).toBe(true)
    expect(gate.tryAcquire(b)).toBe(false)
    expect(gate.heldByOther(b)).toBe(true)
    expect(gate.heldByOther(a)).toBe(false)
    let bHas = false
    const waiting = gate.acquire(b).then(() => { bHas = true })
    let lanesWaited = true
    const lanes = gate.whileHeldByOther(b).then(() => { lanesWaited = false })
    await new Promise(resolve => setTimeout(resolve, 20))
    expect(bHas).toBe(false)
    expect(lanesWaited).toBe(true)
    gate.release(b) // not the holder: nothing happens
    expect(gate.heldByOther(b)).toBe(true)
    gate.release(a)
    await waiting
    await lanes
    expect(bHas).toBe(true)
    expect(gate.heldByOther(a)).toBe(true)
    // A bounded wait ends without a release; an aborted one rejects with the reason.
    const t0 = performance.now()
    await gate.changed(undefined, 30)
    expect(performance.now() - t0).toBeGreaterThanOrEqual(25)
    const ac = new AbortController()
    const aborted = gate.acquire(a, ac.signal)
    ac.abort(new Error('cancelled'))
    await expect(aborted).rejects.toThrow('cancelled')
    gate.release(b)
    expect(gate.tryAcquire(a)).toBe(true)
  })
})
