import { afterEach, describe, expect, it } from 'vitest'
import { generateSwarmKey } from '@shoal/libp2p'
import { startNode } from '../fixtures/nodes.js'

const MiB = 1024 * 1024

describe('a private network (libp2p pre-shared key)', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  it('nodes with the key migrate between them; a node without it (or with another key) cannot even connect', async () => {
    const key = generateSwarmKey()
    const src = await startNode('127.0.0.1', cleanups, { privateNetworkKey: key })
    const dst = await startNode('127.0.0.2', cleanups, { privateNetworkKey: key })
    dst.allowPeer(src.peerId)
    await src.createImage({ name: 'vm', memorySize: 4 * MiB, cacheSize: 4 * MiB })
    await src.startImage('vm')
    const report = await src.migrate('vm', dst.addrs()[0]!)
    expect(report.verified).toBe(true)

    for (const outsider of [await startNode('127.0.0.3', cleanups), await startNode('127.0.0.4', cleanups, { privateNetworkKey: generateSwarmKey() })]) {
      // Allow-listed, so only the network key stands in the way.
      dst.allowPeer(outsider.peerId)
      await outsider.createImage({ name: 'intruder', memorySize: 4 * MiB, cacheSize: 0 })
      const err = await outsider.migrate('intruder', dst.addrs()[0]!).then(() => undefined, (e: Error & { code?: string }) => e)
      expect(err).toBeDefined()
      expect(err?.code).not.toBe('ERR_INTERNAL')
      expect((await outsider.status()).images[0]?.state).toBe('stopped')
      expect((await dst.status()).images.map(i => i.spec.name)).toEqual(['vm'])
      expect(dst.libp2p.getConnections().some(c => c.remotePeer.toString() === outsider.peerId)).toBe(false)
    }
  })

  it('refuses a malformed key at start with ERR_INVALID_ARGUMENT', async () => {
    await expect(startNode('127.0.0.1', cleanups, { privateNetworkKey: new TextEncoder().encode('not a key') })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
  })
})
