import { createHash } from 'node:crypto'
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import { Bitmap, DestinationSession, KeptCacheBlocks, runSourceSession } from '@shoal/core'
import type { BlockResult, BlockSource, KeptCache, MigrationReport, PostCopyCache } from '@shoal/core'
import { processController } from '../fixtures/process-controller.js'
import { connect, sessionImage } from '../fixtures/session-image.js'

const BS = 64 * 1024
const BLOCKS = 32
const sha = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest()

/** A replica of `volume` whose answers wait for `gate` (so blocks are still missing at the switchover). */
function slowReplica (id: string, volume: Buffer, gate: Promise<void>, opts: { corrupt?: Set<number>, lose?: Set<number> } = {}): BlockSource & { asked: number[] } {
  const asked: number[] = []
  const indexOf = (hash: Uint8Array): number => Array.from({ length: BLOCKS }, (_, k) => k).find(k => sha(volume.subarray(k * BS, (k + 1) * BS)).equals(hash))!
  const answer = (want: Uint8Array[]): BlockResult[] => want.map((hash): BlockResult => {
    const i = indexOf(hash)
    asked.push(i)
    if (opts.lose?.has(i) === true) return { hash, missing: true }
    if (opts.corrupt?.has(i) === true) return { hash, corrupt: true }
    return { hash, data: volume.subarray(i * BS, (i + 1) * BS) }
  })
  return {
    id,
    asked,
    has: () => true,
    async fetch (want) { await gate; return answer(want) },
    async fetchUrgent (want) { return answer(want) }
  }
}


describe('post-copy of the cache (sessions over in-memory lanes)', () => {
  const cleanups: Array<() => void | Promise<void>> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  it('switches over before the clean blocks arrived, serves reads on demand, and ends with the whole cache', async () => {
    const { image, pool, writer, dir, hooks } = await sessionImage(cleanups, 2048, BLOCKS)
    const cache = readFileSync(image.cache.path)
    const hashes = Buffer.concat(Array.from({ length: BLOCKS }, (_, i) => sha(cache.subarray(i * BS, (i + 1) * BS))))
    const dirty = new Bitmap(BLOCKS); dirty.set(1)
    const hot = new Bitmap(BLOCKS); hot.set(2)
    let open!: () => void
    const gate = new Promise<void>(resolve => { open = resolve })
    // Block 9 is corrupt at the replica: a read of it must get it from the source instead.
    const replica = slowReplica('replica', cache, gate, { corrupt: new Set([9]) })
    let handed: PostCopyCache | undefined
    let kept: KeptCache | undefined
    let dropped = false
    const net = connect(2)
    const dest = new DestinationSession(net.destControl, {
      pool,
      hooks: { ...hooks, cacheSources: async () => ({ sources: [replica], close: async () => {} }), commit: async (_s, _m, p) => { handed = p } }
    })
    net.attach(dest)
    const [report, result] = await Promise.all([
      runSourceSession({
        image,
        controller: processController(writer),
        control: net.control,
        lanes: net.data,
        pool,
        cacheManifest: { volume: 'vol', hashes, dirty, hot },
        keepCache: async (k) => { kept = k; return async () => { dropped = true } }
      }, { chunkBytes: 64 * 1024, cacheMode: 'postcopy' }),
      dest.run()
    ])
    expect(report.ok).toBe(true)
    expect(report.verified).toBe(true)
    expect(result.committed).toBe(true)
    expect(report.cacheMode).toBe('postcopy')
    expect(dropped).toBe(false)
    // Every clean, cold block was claimed, and none had arrived: the replica was held back.
    expect(report.postcopy?.deferredBlocks).toBe(BLOCKS - 2)
    expect(kept?.servable.count()).toBe(BLOCKS - 2)
    expect(handed).toBeDefined()
    const pc = handed!
    cleanups.push(async () => { await pc.stop() })
    const dst = (): Buffer => readFileSync(`${dir}/dst.cache`)
    // Hot and dirty blocks came before the switchover.
    expect(pc.isPresent(1) && pc.isPresent(2)).toBe(true)
    expect(dst().subarray(BS, 3 * BS).equals(cache.subarray(BS, 3 * BS))).toBe(true)
    expect(pc.isPresent(5)).toBe(false)
    // The source's node serves its kept copy: one more source, as after a real switchover.
    const keptBlocks = await KeptCacheBlocks.open(image.cache.path, kept!.volume, kept!.blockSize, kept!.hashes, kept!.servable)
    cleanups.push(async () => { await keptBlocks.close() })
    pc.addSource({
      id: 'source',
      has: i => keptBlocks.has(i),
      async fetch (want) {
        return await Promise.all(want.map(async (hash): Promise<BlockResult> => {
          const i = keptBlocks.indexOf(hash)
          return i == null ? { hash, missing: true } : { hash, data: await keptBlocks.read(i) }
        }))
      }
    })
    // A read of a missing block is served at once, ahead of the (held) stream.
    await pc.demand(5)
    expect(pc.isPresent(5)).toBe(true)
    expect(dst().subarray(5 * BS, 6 * BS).equals(cache.subarray(5 * BS, 6 * BS))).toBe(true)
    await pc.demand(9)
    expect(dst().subarray(9 * BS, 10 * BS).equals(cache.subarray(9 * BS, 10 * BS))).toBe(true)
    // A writer that overwrites block 7 whole needs no fetch, and the stream never lands over it.
    await pc.own(7)
    const mine = Buffer.alloc(BS, 0x77)
    const fd = openSync(`${dir}/dst.cache`, 'r+')
    writeSync(fd, mine, 0, BS, 7 * BS)
    closeSync(fd)
    open()
    const outcome = await pc.outcome
    expect(outcome.complete).toBe(true)
    expect(outcome.stats.postcopy?.onDemand.fetches).toBe(2)
    expect(outcome.stats.sources.replica!.corrupt).toBeGreaterThanOrEqual(1)
    const final = dst()
    for (let i = 0; i < BLOCKS; i++) {
      const want = i === 7 ? mine : cache.subarray(i * BS, (i + 1) * BS)
      expect(final.subarray(i * BS, (i + 1) * BS).equals(want), `block ${i}`).toBe(true)
    }
  })

  it('holds the bulk stream until the switchover unless prefetch is asked for: no block is asked before the pause', async () => {
    const { image, pool, writer, dir, hooks } = await sessionImage(cleanups, 2048, BLOCKS)
    const cache = readFileSync(image.cache.path)
    const hashes = Buffer.concat(Array.from({ length: BLOCKS }, (_, i) => sha(cache.subarray(i * BS, (i + 1) * BS))))
    // The replica answers at once: only the hold keeps it idle during the rounds.
    const replica = slowReplica('replica', cache, Promise.resolve())
    let handed: PostCopyCache | undefined
    const net = connect(2)
    const dest = new DestinationSession(net.destControl, {
      pool,
      hooks: { ...hooks, cacheSources: async () => ({ sources: [replica], close: async () => {} }), commit: async (_s, _m, p) => { handed = p } }
    })
    net.attach(dest)
    const base = processController(writer)
    let askedAtPause = -1
    // The rounds last a while (the pause waits 300 ms): time enough for a prefetching stream.
    const controller = { ...base, async pause () { await new Promise(resolve => setTimeout(resolve, 300)); askedAtPause = replica.asked.length; await base.pause() } }
    const [report] = await Promise.all([
      runSourceSession({
        image, controller, control: net.control, lanes: net.data, pool,
        cacheManifest: { volume: 'vol', hashes, dirty: new Bitmap(BLOCKS), hot: new Bitmap(BLOCKS) },
        keepCache: async () => async () => {}
      }, { chunkBytes: 64 * 1024, cacheMode: 'postcopy' }),
      dest.run()
    ])
    expect(report.ok).toBe(true)
    expect(askedAtPause).toBe(0)
    expect(report.postcopy?.deferredBlocks).toBe(BLOCKS)
    expect(handed).toBeDefined()
    const pc = handed!
    cleanups.push(async () => { await pc.stop() })
    // Released at the switchover: the stream brings every block.
    const outcome = await pc.outcome
    expect(outcome.complete).toBe(true)
    expect(new Set(replica.asked).size).toBe(BLOCKS)
    expect(readFileSync(`${dir}/dst.cache`).equals(cache)).toBe(true)
  })

  it('refuses prefetch without post-copy', async () => {
    const { image, pool, writer, hooks } = await sessionImage(cleanups, 2048, BLOCKS)
    const controller = processController(writer)
    const net = connect(1)
    const dest = new DestinationSession(net.destControl, { pool, hooks })
    net.attach(dest)
    const outcome = await runSourceSession({ image, controller, control: net.control, lanes: net.data, pool }, { postcopyPrefetch: true })
      .then(() => undefined, (e: Error & { code?: string }) => e)
    expect(outcome?.code).toBe('ERR_INVALID_ARGUMENT')
    expect(outcome?.message).toMatch(/prefetch needs cache mode postcopy/)
    expect(controller.calls).toEqual([])
    await net.destControl.close()
  })

  it('a destination whose present blocks differ from the source fails verification: the source resumes and keeps nothing', async () => {
    const { image, pool, writer, hooks } = await sessionImage(cleanups, 2048, BLOCKS)
    const cache = readFileSync(image.cache.path)
    const hashes = Buffer.concat(Array.from({ length: BLOCKS }, (_, i) => sha(cache.subarray(i * BS, (i + 1) * BS))))
    // The replica serves block 3 with the wrong bytes under the right hash (a lying replica the
    // client-side hash check would catch is simulated here past that check).
    const wrong = Buffer.from(cache)
    wrong.fill(0xee, 3 * BS, 4 * BS)
    const liar: BlockSource = {
      id: 'liar',
      has: () => true,
      async fetch (want) {
        return want.map((hash): BlockResult => {
          const i = Array.from({ length: BLOCKS }, (_, k) => k).find(k => hashes.subarray(k * 32, k * 32 + 32).equals(hash))!
          return { hash, data: wrong.subarray(i * BS, (i + 1) * BS) }
        })
      }
    }
    let dropped = false
    let committed = false
    const net = connect(2)
    const dest = new DestinationSession(net.destControl, {
      pool,
      hooks: { ...hooks, cacheSources: async () => ({ sources: [liar], close: async () => {} }), commit: async () => { committed = true } }
    })
    net.attach(dest)
    const controller = processController(writer)
    const [outcome] = await Promise.all([
      runSourceSession({
        image, controller, control: net.control, lanes: net.data, pool,
        cacheManifest: { volume: 'vol', hashes, dirty: new Bitmap(BLOCKS), hot: new Bitmap(BLOCKS) },
        keepCache: async () => async () => { dropped = true }
      }, { chunkBytes: 64 * 1024, cacheMode: 'postcopy', postcopyPrefetch: true }).then(() => undefined, (e: Error & { report: MigrationReport }) => e),
      dest.run()
    ])
    expect(outcome?.name).toBe('VerificationFailedError')
    expect(committed).toBe(false)
    expect(controller.calls).toContain('resume')
    expect(dropped).toBe(false) // never kept: verification failed before
  })

  it('when every claimed block arrived before the switchover, it commits like pre-copy: no stream, nothing kept', async () => {
    const { image, pool, writer, dir, hooks } = await sessionImage(cleanups, 2048, BLOCKS)
    const cache = readFileSync(image.cache.path)
    const hashes = Buffer.concat(Array.from({ length: BLOCKS }, (_, i) => sha(cache.subarray(i * BS, (i + 1) * BS))))
    let fetched!: () => void
    const allFetched = new Promise<void>(resolve => { fetched = resolve })
    let served = 0
    const replica = slowReplica('replica', cache, Promise.resolve())
    const counting: BlockSource = { ...replica, async fetch (want) { const r = await replica.fetch(want); served += r.length; if (served >= BLOCKS) fetched(); return r } }
    let handed: PostCopyCache | undefined = undefined
    let kept = false
    const net = connect(2)
    const dest = new DestinationSession(net.destControl, {
      pool,
      hooks: { ...hooks, cacheSources: async () => ({ sources: [counting], close: async () => {} }), commit: async (_s, _m, p) => { handed = p } }
    })
    net.attach(dest)
    // The switchover waits until the replica served every block: nothing can be deferred.
    const base = processController(writer)
    const controller = { ...base, async pause () { await allFetched; await base.pause() } }
    const [report, result] = await Promise.all([
      runSourceSession({
        image, controller, control: net.control, lanes: net.data, pool,
        cacheManifest: { volume: 'vol', hashes, dirty: new Bitmap(BLOCKS), hot: new Bitmap(BLOCKS) },
        keepCache: async () => { kept = true; return async () => {} }
      }, { chunkBytes: 64 * 1024, cacheMode: 'postcopy', postcopyPrefetch: true }),
      dest.run()
    ])
    expect(report.ok).toBe(true)
    expect(result.committed).toBe(true)
    expect(report.postcopy?.deferredBlocks).toBe(0)
    expect(handed).toBeUndefined()
    expect(kept).toBe(false)
    expect(readFileSync(`${dir}/dst.cache`).equals(cache)).toBe(true)
  })

  it('post-copy of a cache that caches no volume is refused before anything moves', async () => {
    const { image, pool, writer, hooks } = await sessionImage(cleanups, 2048, BLOCKS)
    const controller = processController(writer)
    const net = connect(1)
    const dest = new DestinationSession(net.destControl, { pool, hooks })
    net.attach(dest)
    const outcome = await runSourceSession({ image, controller, control: net.control, lanes: net.data, pool }, { cacheMode: 'postcopy' })
      .then(() => undefined, (e: Error & { code?: string }) => e)
    expect(outcome?.code).toBe('ERR_INVALID_ARGUMENT')
    expect(outcome?.message).toMatch(/caches a volume/)
    expect(controller.calls).toEqual([])
    await net.destControl.close()
  })
})
