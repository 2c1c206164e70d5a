import { createHash } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import {
  Bitmap, createShadowPool, DestinationSession, ImageExistsError, runSourceSession
} from '@shoal/core'
import type { BlockResult, BlockSource, CacheMetaInit, Lane, MigrationProgress, MigrationReport } from '@shoal/core'
import { processController } from '../fixtures/process-controller.js'
import { connect, sessionImage } from '../fixtures/session-image.js'
import type { SessionImage } from '../fixtures/session-image.js'


/** Wraps a lane so that it breaks after `after` sends. */
function breakingLane (lane: Lane, after: number): Lane {
  let sends = 0
  return {
    id: lane.id,
    async send (f) { if (++sends === after) { lane.abort() } return await lane.send(f) },
    [Symbol.asyncIterator]: () => lane[Symbol.asyncIterator](),
    close: async () => { await lane.close() },
    abort: (e) => { lane.abort(e) }
  }
}

describe('source and destination sessions over in-memory lanes', () => {
  const cleanups: Array<() => void | Promise<void>> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  async function setup (pages = 2048, blocks = 8): Promise<SessionImage> {
    return await sessionImage(cleanups, pages, blocks)
  }


  it('migrates a running image over 3 lanes and the copy equals the source at pause', async () => {
    const { image, pool, writer, dir, hooks } = await setup()
    const controller = processController(writer)
    const net = connect(3)
    const dest = new DestinationSession(net.destControl, { pool, hooks })
    net.attach(dest)
    const [report, result] = await Promise.all([
      runSourceSession({ image, controller, control: net.control, lanes: net.data, pool }, { chunkBytes: 64 * 1024, downtimeTargetMs: 5 }),
      dest.run()
    ])
    expect(report.ok).toBe(true)
    expect(report.verified).toBe(true)
    expect(result.committed).toBe(true)
    expect(controller.calls).toEqual(['pause', 'deviceState', 'stop'])
    expect(hooks.committed).toEqual([new Uint8Array([1, 2, 3])])
    expect(readFileSync(`${dir}/dst.mem`).equals(readFileSync(image.memory.path))).toBe(true)
    expect(readFileSync(`${dir}/dst.cache`).equals(readFileSync(image.cache.path))).toBe(true)
    expect(report.rounds.length).toBeGreaterThan(1)
    expect(report.rounds.at(-1)!.final).toBe(true)
    expect(report.lanes.filter(l => l.bytes > 0).length).toBe(3)
    expect(report.downtimeMs).toBeGreaterThan(0)
  })

  it('a shadow kept from one migration serves the next of the same size: the second copy equals its own source', async () => {
    const shadows = createShadowPool({ maxBytes: 64 * 1024 * 1024 })
    for (let i = 0; i < 2; i++) {
      const { image, pool, writer, dir, hooks } = await setup(2048)
      const net = connect(2)
      const dest = new DestinationSession(net.destControl, { pool, hooks })
      net.attach(dest)
      const [report] = await Promise.all([
        runSourceSession({ image, controller: processController(writer), control: net.control, lanes: net.data, pool, shadows }, { chunkBytes: 64 * 1024 }),
        dest.run()
      ])
      expect(report.ok).toBe(true)
      expect(readFileSync(`${dir}/dst.mem`).equals(readFileSync(image.memory.path))).toBe(true)
      // Both shadows (memory 8 MiB, cache 512 KiB) went back to the pool, zeroed; the second run
      // took them again (had it made new ones, the pool would now hold two sets).
      expect(shadows.keptBytes).toBe(8 * 1024 * 1024 + 512 * 1024)
      for (const c of cleanups.splice(0).reverse()) await c()
    }
  })

  it('says up front when the scan tracker cannot meet the target, and after the pause which part missed it', async () => {
    const { image, pool, writer, hooks } = await setup()
    const controller = processController(writer)
    const net = connect(2)
    // A destination whose commit (its check and start of the workload) takes 150 ms.
    const slow = { ...hooks, async commit (state: Uint8Array) { await new Promise(resolve => setTimeout(resolve, 150)); await hooks.commit(state) } }
    const dest = new DestinationSession(net.destControl, { pool, hooks: slow })
    net.attach(dest)
    const progress: MigrationProgress[] = []
    const [report] = await Promise.all([
      runSourceSession({ image, controller, control: net.control, lanes: net.data, pool }, {
        // Hash mode for both areas: 8.5 MB of data at 0.5 GB/s per worker is ~8.5 ms of final scan.
        shadowLimitBytes: 0, downtimeTargetMs: 8, fixedPauseMs: 2, onProgress: (p) => { progress.push(p) }
      }),
      dest.run()
    ])
    expect(report.ok).toBe(true)
    const slowTracker = report.warnings?.find(w => w.code === 'WARN_TRACKER_TOO_SLOW')
    expect(slowTracker).toMatchObject({ area: 'memory', basis: 'estimate', downtimeTargetMs: 8, suggested: ['cooperative'] })
    // Up front: the first progress snapshot of pre-copy already carries it.
    expect(progress.find(p => p.phase === 'precopy')?.warnings?.map(w => w.code)).toContain('WARN_TRACKER_TOO_SLOW')
    expect(report.pause).toMatchObject({ met: false, culprit: 'commit', targetMs: 8 })
    expect(report.pause!.missedBy).toBeGreaterThan(0)
    expect(report.pause!.parts.commit).toBeGreaterThanOrEqual(150)
    expect(report.warnings?.find(w => w.code === 'WARN_DOWNTIME_MISSED')).toMatchObject({ part: 'commit' })
  })

  it('leaves clean cold cache blocks to a replica; what it cannot serve, and a block mislabelled clean, come from the source', async () => {
    const { image, pool, writer, dir, hooks } = await setup()
    const cache = readFileSync(image.cache.path)
    const BS = image.cache.blockSize
    const blockAt = (i: number): Buffer => cache.subarray(i * BS, (i + 1) * BS)
    const sha = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest()
    // The volume: the cache's blocks, except block 6, which was written without being marked dirty.
    const volumeBlock = (i: number): Buffer => i === 6 ? Buffer.alloc(BS, 6) : blockAt(i)
    const hashes = Buffer.concat(Array.from({ length: 8 }, (_, i) => sha(volumeBlock(i))))
    const dirty = new Bitmap(8); dirty.set(7)
    const hot = new Bitmap(8); hot.set(3)
    // A replica that says it holds everything, but has lost block 4 and corrupts block 5.
    const replica: BlockSource = {
      id: 'replica',
      has: () => true,
      async fetch (want) {
        return want.map((hash): BlockResult => {
          const i = Array.from({ length: 8 }, (_, k) => k).find(k => sha(volumeBlock(k)).equals(hash))!
          if (i === 4) return { hash, missing: true }
          if (i === 5) return { hash, corrupt: true }
          return { hash, data: volumeBlock(i) }
        })
      }
    }
    let meta: CacheMetaInit | undefined
    const net = connect(2)
    const dest = new DestinationSession(net.destControl, {
      pool,
      hooks: { ...hooks, cacheSources: async () => ({ sources: [replica], close: async () => {} }), commit: async (_s, m) => { meta = m } }
    })
    net.attach(dest)
    const [report, result] = await Promise.all([
      runSourceSession({ image, controller: processController(writer), control: net.control, lanes: net.data, pool, cacheManifest: { volume: 'vol', hashes, dirty, hot } }, { chunkBytes: 64 * 1024 }),
      dest.run()
    ])
    expect(report.ok).toBe(true)
    expect(result.committed).toBe(true)
    expect(readFileSync(`${dir}/dst.cache`).equals(readFileSync(image.cache.path))).toBe(true)
    // Claimed: 0, 1, 2, 4, 5, 6 (not dirty 7, not hot 3). The replica served 0, 1, 2 and 6;
    // 4 (missing) and 5 (corrupt) were left for the source.
    expect(result.cache).toMatchObject({ claimedBlocks: 6, leftoverBlocks: 2, done: true })
    expect(result.cache!.sources.replica).toMatchObject({ blocks: 4, corrupt: 1 })
    expect(report.cache!.sourceBlocks).toBeGreaterThanOrEqual(5) // 3, 7, 6 (mislabelled), then 4 and 5
    // The destination keeps the metadata: the source's dirty block stays dirty.
    expect(meta?.volume).toBe('vol')
    expect(meta?.dirty?.get(7)).toBe(true)
  })

  it("finishes and verifies when a lane breaks mid-transfer; its chunks go to the other lanes", async () => {
    const { image, pool, writer, dir, hooks } = await setup()
    const net = connect(3, (l, i) => i === 1 ? breakingLane(l, 5) : l)
    const dest = new DestinationSession(net.destControl, { pool, hooks })
    net.attach(dest)
    const [report] = await Promise.all([
      runSourceSession({ image, controller: processController(writer), control: net.control, lanes: net.data, pool }, { chunkBytes: 64 * 1024 }),
      dest.run()
    ])
    expect(report.ok).toBe(true)
    const broken = report.lanes.find(l => l.state === 'failed')
    expect(broken?.id).toBe('lane1:a')
    expect(readFileSync(`${dir}/dst.mem`).equals(readFileSync(image.memory.path))).toBe(true)
  })

  it('a refusal from the destination leaves the source running and untouched', async () => {
    const { image, pool, writer, hooks } = await setup()
    const before = readFileSync(image.cache.path)
    const controller = processController(writer)
    const net = connect(1)
    const dest = new DestinationSession(net.destControl, { pool, hooks: { ...hooks, prepare: async () => { throw new ImageExistsError('image img already exists') } } })
    net.attach(dest)
    const [outcome, result] = await Promise.all([
      runSourceSession({ image, controller, control: net.control, lanes: net.data, pool }).then(() => undefined, (e: Error & { report: MigrationReport }) => e),
      dest.run()
    ])
    expect(outcome?.name).toBe('RemoteAbortError')
    expect(outcome?.report.error?.message).toMatch(/already exists/)
    expect(result.error?.code).toBe('ERR_IMAGE_EXISTS')
    expect(controller.calls).toEqual([])
    expect(readFileSync(image.cache.path).equals(before)).toBe(true)
  })

  it('the destination dying mid-migration resumes the source and discards the partial copy', async () => {
    const { image, pool, writer, dir, hooks } = await setup(8192)
    const controller = processController(writer)
    const net = connect(2, (l, i) => i === 0 ? breakingLane(l, 8) : breakingLane(l, 8))
    const dest = new DestinationSession(net.destControl, { pool, hooks })
    net.attach(dest)
    // Kill the destination's control lane as soon as the second lane breaks: nothing is left.
    const [outcome, result] = await Promise.all([
      runSourceSession({ image, controller, control: net.control, lanes: net.data, pool }, { chunkBytes: 16 * 1024 }).then(() => undefined, (e: Error & { report: MigrationReport }) => e),
      dest.run()
    ])
    expect(outcome?.name).toBe('NoLanesError')
    expect(result.committed).toBe(false)
    expect(existsSync(`${dir}/dst.mem`)).toBe(false)
    expect(controller.calls).not.toContain('stop')
    expect(writer.exitCode).toBeNull()
  })

  it('a destination whose node stops before COMMIT aborts (the source resumes); once committing, it finishes', async () => {
    for (const when of ['verify', 'commit'] as const) {
      const { image, pool, writer, dir, hooks } = await setup()
      const controller = processController(writer)
      const stopping = new AbortController()
      const reason = new Error('node x is stopping')
      const net = connect(2)
      // 'verify': the node stops while the destination computes its digests (before COMMIT).
      // 'commit': it stops while the commit hook runs (after COMMIT arrived).
      const dest = new DestinationSession(net.destControl, {
        pool,
        hooks: {
          ...hooks,
          async commit (state: Uint8Array) {
            if (when === 'commit') stopping.abort(reason)
            await hooks.commit(state)
          }
        }
      }, { signal: stopping.signal })
      net.attach(dest)
      const onProgress = (p: MigrationProgress): void => { if (when === 'verify' && p.phase === 'verify') stopping.abort(reason) }
      const [outcome, result] = await Promise.all([
        runSourceSession({ image, controller, control: net.control, lanes: net.data, pool }, { chunkBytes: 64 * 1024, onProgress }).then(r => r, (e: Error & { report: MigrationReport }) => e),
        dest.run()
      ])
      if (when === 'verify') {
        expect(outcome.name).toBe('RemoteAbortError')
        expect(result.committed).toBe(false)
        expect(result.error?.code).toBe('ERR_PEER_GONE')
        expect(hooks.committed).toEqual([])
        expect(existsSync(`${dir}/dst.mem`)).toBe(false)
        // Paused for the switchover, resumed after the abort.
        expect(controller.calls.at(-1)).toBe('resume')
      } else {
        expect((outcome as MigrationReport).ok).toBe(true)
        expect(result.committed).toBe(true)
        expect(hooks.committed).toHaveLength(1)
      }
      for (const c of cleanups.splice(0).reverse()) await c()
    }
  })
})
