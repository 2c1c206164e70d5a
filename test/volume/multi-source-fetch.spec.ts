import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { fetchFromSources } from '@shoal/core'
import type { BlockResult, BlockSource, FetchItem } from '@shoal/core'

const block = (i: number): Buffer => Buffer.alloc(1024, i & 255)
const hashOf = (b: Uint8Array): Uint8Array => createHash('sha256').update(b).digest()
const items: FetchItem[] = Array.from({ length: 100 }, (_, index) => ({ index, hash: hashOf(block(index)) }))
const byHash = new Map(items.map(it => [Buffer.from(it.hash).toString('hex'), it.index]))
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

function source (id: string, opts: { delayMs?: number, holds?: (i: number) => boolean, corruptEvery?: number, failAfter?: number }): BlockSource {
  let calls = 0
  let served = 0
  return {
    id,
    has: opts.holds ?? (() => true),
    async fetch (hashes) {
      if (opts.failAfter != null && ++calls > opts.failAfter) throw new Error('connection reset')
      await sleep(opts.delayMs ?? 1)
      return hashes.map((hash): BlockResult => {
        const i = byHash.get(Buffer.from(hash).toString('hex'))!
        if (!(opts.holds ?? (() => true))(i)) return { hash, missing: true }
        if (opts.corruptEvery != null && ++served % opts.corruptEvery === 0) return { hash, corrupt: true }
        return { hash, data: block(i) }
      })
    }
  }
}

describe('multi-source fetch', () => {
  it('gets every block once, from many sources, dropping a corrupting and a failing one; faster sources serve more', async () => {
    const written = new Map<number, string>()
    const report = await fetchFromSources(items, [
      source('fast', { delayMs: 1 }),
      source('slow', { delayMs: 25 }),
      source('liar', { delayMs: 1, corruptEvery: 2 }),
      source('even', { delayMs: 2, holds: i => i % 2 === 0 }),
      source('flaky', { delayMs: 1, failAfter: 2 })
    ], async (item, data, from) => {
      expect(written.has(item.index)).toBe(false)
      expect(Buffer.from(hashOf(data)).equals(item.hash)).toBe(true)
      written.set(item.index, from)
    }, { batch: 4 })
    expect(written.size).toBe(100)
    expect(report.leftover).toEqual([])
    expect(report.dropped.liar).toMatch(/corrupt/)
    expect(report.dropped.flaky).toMatch(/connection reset/)
    expect(report.blocks.fast!).toBeGreaterThan(report.blocks.slow!)
    expect([...written.entries()].filter(([i, from]) => from === 'even' && i % 2 === 1)).toEqual([])
    expect(Object.values(report.blocks).reduce((a, b) => a + b, 0)).toBe(100)
  })

  it('returns the blocks no replica holds, for the migrating source to send', async () => {
    const report = await fetchFromSources(items, [source('low', { holds: i => i < 60 })], async () => {})
    expect(report.leftover.map(i => i.index)).toEqual(Array.from({ length: 40 }, (_, k) => 60 + k))
    expect(report.blocks.low).toBe(60)
  })

  it('with no replica at all everything is left over', async () => {
    const report = await fetchFromSources(items.slice(0, 5), [], async () => {})
    expect(report.leftover).toHaveLength(5)
  })
})
