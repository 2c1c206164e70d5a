import { describe, expect, it } from 'vitest'
import { ChunkScheduler, NoLanesError } from '@shoal/core'

const chunks = (n: number): Array<{ id: number, bytes: number }> => Array.from({ length: n }, (_, i) => ({ id: i + 1, bytes: 10 }))

describe('chunk scheduler', () => {
  it('hands chunks to whichever lane asks, so a faster lane takes more', async () => {
    const s = new ChunkScheduler()
    s.addLane('fast'); s.addLane('slow')
    s.push(chunks(10))
    const got: Record<string, number[]> = { fast: [], slow: [] }
    const slow = await s.take('slow')
    got.slow!.push(slow!.id)
    for (let i = 0; i < 9; i++) {
      const c = await s.take('fast')
      got.fast!.push(c!.id)
      s.complete('fast', c!.id)
    }
    s.complete('slow', slow!.id)
    await s.idle()
    expect(got.slow).toEqual([1])
    expect(got.fast).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10])
  })

  it("re-queues a failed lane's in-flight chunks at the front for the other lanes", async () => {
    const s = new ChunkScheduler()
    s.addLane('a'); s.addLane('b')
    s.push(chunks(4))
    const a1 = await s.take('a'); const a2 = await s.take('a')
    const b1 = await s.take('b')
    s.complete('a', a1!.id)
    expect(s.failLane('a')).toBe(1)
    expect(s.lanes).toEqual(['b'])
    expect(await s.take('a')).toBeUndefined()
    const next = await s.take('b')
    expect(next!.id).toBe(a2!.id)
    s.complete('b', b1!.id); s.complete('b', next!.id)
    const last = await s.take('b')
    expect(last!.id).toBe(4)
    const idle = s.idle()
    s.complete('b', last!.id)
    await idle
    expect(s.pending).toBe(0)
  })

  it('ignores unknown and duplicate acks', async () => {
    const s = new ChunkScheduler()
    s.addLane('a')
    s.push(chunks(1))
    const c = await s.take('a')
    expect(s.complete('a', 99)).toBeUndefined()
    expect(s.complete('a', c!.id)).toBe(c)
    expect(s.complete('a', c!.id)).toBeUndefined()
  })

  it('fails idle() with NoLanesError when the last lane dies with work left', async () => {
    const s = new ChunkScheduler()
    s.addLane('a')
    s.push(chunks(2))
    await s.take('a')
    const idle = s.idle()
    s.failLane('a')
    await expect(idle).rejects.toBeInstanceOf(NoLanesError)
  })

  it('wakes a waiting taker when chunks arrive and ends it on close', async () => {
    const s = new ChunkScheduler()
    s.addLane('a')
    const waiting = s.take('a')
    s.push(chunks(1))
    expect((await waiting)!.id).toBe(1)
    const ended = s.take('a')
    s.close()
    expect(await ended).toBeUndefined()
  })

  it('tells a producer when the queue is short again: below() waits while queued bytes reach the limit, counting re-queued chunks', async () => {
    const s = new ChunkScheduler<{ id: number, bytes: number }>()
    s.addLane('a')
    s.addLane('b')
    s.push([1, 2, 3].map(id => ({ id, bytes: 100 })))
    expect(s.queuedBytes).toBe(300)
    let short = false
    const waiting = s.below(150).then(() => { short = true })
    await s.take('a')
    await Promise.resolve()
    expect(short).toBe(false) // 200 still queued
    await s.take('b')
    await waiting
    expect(s.queuedBytes).toBe(100)
    // A failed lane's chunks count again; a closed scheduler releases every waiter.
    s.failLane('a')
    expect(s.queuedBytes).toBe(200)
    const closed = s.below(50)
    s.close()
    await closed
  })
})
