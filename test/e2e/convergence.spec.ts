import { afterEach, describe, expect, it } from 'vitest'
import { verifyImage } from '@shoal/workload'
import { startNode } from '../fixtures/nodes.js'
import { terminateAndWait } from '../fixtures/process-exit.js'

const MiB = 1024 * 1024

describe('convergence with real peers and a real workload process', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  it('a write-heavy workload that does not converge on its own converges with auto-converge, and the image verifies', async () => {
    const a = await startNode('127.0.0.1', cleanups)
    const b = await startNode('127.0.0.2', cleanups)
    b.allowPeer(a.peerId)
    a.allowPeer(b.peerId)
    // 20k page writes/s (90% to a 1.6k-page hot set) against a 16 MB/s cap: every round finds
    // ~8 MB dirty again, which takes ~0.5 s to send — far above a 100 ms target.
    await a.createImage({ name: 'hot', memorySize: 32 * MiB, cacheSize: MiB, fill: 'random', config: { rate: 20_000, recordRate: 0, arrivalCheck: 'full' } })
    await a.startImage('hot')
    await new Promise(resolve => setTimeout(resolve, 1500))
    const opts = { lanes: 2, maxRate: 16e6, downtimeTargetMs: 100, maxRounds: 30, adaptivePacing: false }

    const alone = await a.migrate('hot', b.addrs()[0]!, { ...opts, autoConverge: false })
    expect(alone.ok).toBe(true)
    expect(alone.convergence).toMatchObject({ converged: false, reason: 'stalled', maxThrottle: 0 })
    expect(alone.downtimeMs).toBeGreaterThan(100)

    // Back again, with auto-converge: the throttle steps up until the predicted pause fits.
    await new Promise(resolve => setTimeout(resolve, 1500))
    const helped = await b.migrate('hot', a.addrs()[0]!, { ...opts, autoConverge: true })
    expect(helped.ok).toBe(true)
    expect(helped.verified).toBe(true)
    expect(helped.convergence?.converged).toBe(true)
    expect(helped.convergence!.maxThrottle).toBeGreaterThan(0)
    expect(helped.rounds.some(r => (r.throttle ?? 0) > 0)).toBe(true)
    const last = helped.rounds.filter(r => !r.final).at(-1)!
    expect(last.predictedPauseMs).toBeLessThanOrEqual(100)

    // The workload runs on the first node again, unthrottled, with every write accounted for.
    const [img] = (await a.status()).images
    expect(img?.state).toBe('running')
    expect(img?.arrivalCheck?.ok).toBe(true)
    expect(img?.arrivalCheck?.detail).toMatch(/pages checked/)
    await terminateAndWait(img!.pid!)
    const v = await verifyImage({ memoryPath: img!.spec.memory.path, cachePath: img!.spec.cache.path })
    expect(v.ok).toBe(true)
  })
})
