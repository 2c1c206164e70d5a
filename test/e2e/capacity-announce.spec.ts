import { CAPACITY_ANNOUNCE_PROTOCOL, changedEnough } from '@shoal/node'
import type { NodeCapacity, ShoalNode } from '@shoal/node'
import { createLibp2pLaneTransport } from '@shoal/libp2p'
import { afterEach, describe, expect, it } from 'vitest'
import { until } from '../fixtures/chaos.js'
import { startNode } from '../fixtures/nodes.js'

const MiB = 2 ** 20
const capacityOf = async (from: ShoalNode, peer: ShoalNode): Promise<NodeCapacity & { ageMs: number } | undefined> =>
  (await from.peers()).find(p => p.peerId === peer.peerId)?.capacity

describe('peers announce what they can take', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  it('a peer that takes images from this node tells its free memory, disk and images unasked, on connecting and when they change; one that does not, tells nothing', async () => {
    const a = await startNode('127.0.0.1', cleanups)
    const b = await startNode('127.0.0.2', cleanups, { admission: { maxMemoryBytes: 512 * MiB } })
    const c = await startNode('127.0.0.3', cleanups)
    b.allowPeer(a.peerId)
    await a.libp2p.dial(b.libp2p.getMultiaddrs()[0]!)
    await a.libp2p.dial(c.libp2p.getMultiaddrs()[0]!)

    // B heard about A connecting and told it at once.
    const first = await until('B to announce', async () => await capacityOf(a, b), 10_000)
    expect(first.maxMemoryBytes).toBe(512 * MiB)
    expect(first.images).toBe(0)
    expect(first.memoryFree).toBeGreaterThan(0)
    expect(first.cacheFree).toBeGreaterThan(0)
    expect(first.ageMs).toBeGreaterThanOrEqual(0)

    // An image on B: A hears of it without asking.
    await b.createImage({ name: 'vm', memorySize: 4 * MiB, cacheSize: 1 * MiB })
    const after = await until('B to announce its image', async () => { const x = await capacityOf(a, b); return x?.images === 1 ? x : undefined }, 10_000)
    expect(after.maxMemoryBytes).toBe(512 * MiB)

    // C does not take images from A: it announces nothing, and A shows nothing for it.
    await new Promise(resolve => setTimeout(resolve, 2500))
    expect(await capacityOf(a, c)).toBeUndefined()
    expect((await a.peers()).find(p => p.peerId === c.peerId)?.connected).toBe(true)
    // A takes from nobody: B heard nothing from it.
    expect(await capacityOf(b, a)).toBeUndefined()

    // B disconnects: its announcement is dropped with the connection.
    await a.libp2p.hangUp(b.libp2p.peerId)
    await until('the announcement to be dropped', async () => (await capacityOf(a, b)) == null ? true : undefined, 10_000)
  })

  it('a malformed, oversized or silent announcement is dropped and changes nothing; the node keeps serving', async () => {
    const a = await startNode('127.0.0.1', cleanups)
    const c = await startNode('127.0.0.3', cleanups)
    await c.libp2p.dial(a.libp2p.getMultiaddrs()[0]!)
    const hostile = createLibp2pLaneTransport(c.libp2p)
    const send = async (frame: Uint8Array): Promise<void> => {
      const [lane] = await hostile.openLanes(a.peerId, CAPACITY_ANNOUNCE_PROTOCOL, 1)
      await lane!.send(frame).catch(() => {})
      await lane!.close().catch(() => {})
    }
    const frame = (type: number, body: Uint8Array): Uint8Array => {
      const f = Buffer.alloc(6 + body.byteLength)
      f.writeUInt32LE(body.byteLength + 2, 0)
      f.writeUInt8(1, 4)
      f.writeUInt8(type, 5)
      f.set(body, 6)
      return f
    }
    await send(frame(0xc0, Buffer.from('{not json')))
    await send(frame(0xc0, Buffer.from(JSON.stringify({ memoryFree: -1 }))))
    await send(frame(0xc0, Buffer.alloc(64 * 1024, 0x20)))
    await send(frame(0x01, Buffer.alloc(8)))
    // A lane opened and left silent times out on its own.
    const [silent] = await hostile.openLanes(a.peerId, CAPACITY_ANNOUNCE_PROTOCOL, 1)
    cleanups.push(() => { silent!.abort() })
    await new Promise(resolve => setTimeout(resolve, 1000))
    expect(await capacityOf(a, c)).toBeUndefined()
    expect((await a.status()).peers.find(p => p.peerId === c.peerId)?.connected).toBe(true)
    // A still answers its own announcements' peer list and takes images.
    await a.createImage({ name: 'ok', memorySize: 4 * MiB, cacheSize: 1 * MiB })
    expect((await a.status()).images.map(i => i.spec.name)).toEqual(['ok'])
  })
})

describe('changedEnough', () => {
  const base: NodeCapacity = {
    memoryFree: 8 * 2 ** 30, cacheFree: 100 * 2 ** 30, sharedSpace: false, maxMemoryBytes: 16 * 2 ** 30, maxCacheBytes: 2 ** 40,
    maxIncoming: 4, maxIncomingPerPeer: 2, incoming: 0, incomingFromYou: 0, heldFromYou: { memory: 0, cache: 0 }, images: 3
  }
  it('tells counts and limits at once, free space only when it moved by more than max(5 %, 64 MiB)', () => {
    expect(changedEnough(base, { ...base })).toBe(false)
    expect(changedEnough(base, { ...base, images: 4 })).toBe(true)
    expect(changedEnough(base, { ...base, incoming: 1 })).toBe(true)
    expect(changedEnough(base, { ...base, heldFromYou: { memory: 1, cache: 0 } })).toBe(true)
    expect(changedEnough(base, { ...base, memoryFree: base.memoryFree - 100 * MiB })).toBe(false)
    expect(changedEnough(base, { ...base, memoryFree: base.memoryFree - 500 * MiB })).toBe(true)
    expect(changedEnough(base, { ...base, cacheFree: base.cacheFree + 4 * 2 ** 30 })).toBe(false)
    expect(changedEnough(base, { ...base, cacheFree: base.cacheFree + 6 * 2 ** 30 })).toBe(true)
    const small = { ...base, memoryFree: 200 * MiB }
    expect(changedEnough(small, { ...small, memoryFree: 150 * MiB })).toBe(false)
    expect(changedEnough(small, { ...small, memoryFree: 100 * MiB })).toBe(true)
  })
})
