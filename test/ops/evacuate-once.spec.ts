import { afterEach, describe, expect, it } from 'vitest'
import { until } from '../fixtures/chaos.js'
import { startNode } from '../fixtures/nodes.js'

const MiB = 2 ** 20

describe('one evacuation at a time', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  it('a second evacuation while one runs is ERR_BUSY and changes nothing; once the first is stopped, the next one runs', async () => {
    const src = await startNode('127.0.0.1', cleanups)
    const dst = await startNode('127.0.0.2', cleanups)
    dst.allowPeer(src.peerId)
    await src.createImage({ name: 'vm', memorySize: 16 * MiB, cacheSize: 0, fill: 'random', config: { rate: 200 } })
    await src.startImage('vm')

    // The first, slow (1 MiB/s: ~16 s to move the image), stopped by its caller.
    const stop = new AbortController()
    const first = src.evacuate({ to: [dst.addrs()[0]!], maxRate: MiB, signal: stop.signal }).then(r => r, (e: Error & { code?: string }) => e)
    await until('the first evacuation to migrate', async () => src.migrations().some(m => m.state === 'running') ? true : undefined, 20_000)
    const second = await src.evacuate({ to: [dst.addrs()[0]!] }).then(() => undefined, (e: Error & { code?: string }) => e)
    expect(second?.code).toBe('ERR_BUSY')
    expect(second?.message).toMatch(/an evacuation of this node is already running/)
    // Still the first's one migration, nothing else started.
    expect(src.migrations()).toHaveLength(1)

    stop.abort()
    await first
    expect((await src.status()).images.map(i => [i.spec.name, i.state])).toEqual([['vm', 'running']])
    expect((await dst.status()).images).toEqual([])

    // Stopped by its caller: its migration says so with the stable code, not as an internal error.
    const stopped = await first as { ok: boolean, images: Array<{ attempts: Array<{ error?: { code: string, message: string } }> }> }
    expect(stopped.ok).toBe(false)
    expect(stopped.images[0]!.attempts.at(-1)?.error).toMatchObject({ code: 'ERR_ABORTED', message: expect.stringMatching(/cancelled by its caller/) })
    expect(src.migrations().map(m => [m.state, m.error?.code])).toEqual([['failed', 'ERR_ABORTED']])
    // The destination lets the name go once its side has ended (a moment after the source's).
    await until('the destination to let the name go', async () => ((await dst.status()).arriving ?? []).length === 0 ? true : undefined, 20_000)
    // Free again: an evacuation at full speed moves the image.
    const third = await src.evacuate({ to: [dst.addrs()[0]!] })
    expect(third.ok).toBe(true)
    expect((await src.status()).images).toEqual([])
    expect((await dst.status()).images.map(i => [i.spec.name, i.state])).toEqual([['vm', 'running']])
  })
})
