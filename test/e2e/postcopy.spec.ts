import { createHash, randomBytes } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { MigrationReport } from '@shoal/core'
import { createShoalNode } from '@shoal/node'
import type { ShoalNode } from '@shoal/node'
import { createSyntheticDriver } from '@shoal/driver-synthetic'
import { readHeader, verifyImage } from '@shoal/workload'
import { afterEach, describe, expect, it } from 'vitest'
import { startNode } from '../fixtures/nodes.js'
import { terminateAndWait } from '../fixtures/process-exit.js'
import { tempDir } from '../fixtures/temp.js'
import { until } from '../fixtures/chaos.js'

const BS = 256 * 1024
const BLOCKS = 96
const sha = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest()

interface Cluster { src: ShoalNode, dst: ShoalNode, replicas: ShoalNode[], volume: Buffer }

describe('post-copy of the cache between real nodes', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  /**
   * Source, destination and `n` replicas of a random volume on 127.0.0.x, replicas serving slowly
   * so the stream outlasts the switchover. The source holds no replica store of the volume (only
   * its image's cache), so what it serves after the switchover is the cache it kept.
   */
  async function cluster (n: number, serveRate = 2 * 2 ** 20): Promise<Cluster> {
    // The source serves its kept cache slowly too: on a fast machine an unthrottled source would
    // finish the stream before the test looks at the destination mid-stream.
    const src = await startNode('127.0.0.1', cleanups, { serveRate })
    const dst = await startNode('127.0.0.2', cleanups)
    dst.allowPeer(src.peerId)
    const volume = randomBytes(BLOCKS * BS)
    const file = tempDir('vol')
    cleanups.push(file.cleanup)
    writeFileSync(join(file.path, 'v.img'), volume)
    await src.importVolume('base', join(file.path, 'v.img'), BS)
    const replicas: ShoalNode[] = []
    for (let k = 0; k < n; k++) {
      const r = await startNode(`127.0.0.${3 + k}`, cleanups, { serveRate })
      r.allowPeer(dst.peerId)
      await r.importVolume('base', join(file.path, 'v.img'), BS)
      await dst.libp2p.dial(r.libp2p.getMultiaddrs()[0]!)
      replicas.push(r)
    }
    return { src, dst, replicas, volume }
  }

  /** An image whose cache caches the volume; its workload appends records and reads clean blocks (checking their hash). */
  async function cachedImage (c: Cluster, name: string): Promise<void> {
    await c.src.createImage({ name, memorySize: 8 * 2 ** 20, cacheSize: 0, cacheVolume: 'base', fill: 'random', config: { rate: 500, recordRate: 100, cacheReadRate: 200 } })
    // The source keeps no replica store: after the switchover it serves the cache it kept.
    await c.src.removeVolume('base')
    await c.src.startImage(name)
    await new Promise(resolve => setTimeout(resolve, 500))
  }

  /** Waits for the destination's post-copy to end; checks the cache, the reads and the records. */
  async function expectComplete (c: Cluster, name: string, report: MigrationReport): Promise<void> {
    expect(report.ok).toBe(true)
    expect(report.verified).toBe(true)
    expect(report.cacheMode).toBe('postcopy')
    const img = await until('the post-copy to complete', async () => {
      const i = (await c.dst.status()).images.find(x => x.spec.name === name)
      return i != null && i.postcopy == null ? i : undefined
    }, 60_000)
    expect(img.state).toBe('running')
    expect(existsSync(`${img.spec.cache.path}.present`)).toBe(false)
    // The source's node dropped its copy once the destination had every block.
    await until('the source to drop its copy', async () => (await c.src.status()).kept?.length === 0 ? true : undefined, 10_000)
    // The workload read clean blocks throughout, each checked against the volume's hash: none was wrong.
    const ops = JSON.parse(readFileSync(join(img.spec.cache.path, '..', 'ops.json'), 'utf8')) as { cacheReads: number, badCacheReads: number }
    expect(ops.badCacheReads).toBe(0)
    expect(ops.cacheReads).toBeGreaterThan(0)
    await terminateAndWait(img.pid!)
    // Every block beyond the records is the volume's; the records verify.
    const v = await verifyImage({ memoryPath: img.spec.memory.path, cachePath: img.spec.cache.path })
    expect(v.ok).toBe(true)
    const cache = readFileSync(img.spec.cache.path)
    const frontier = Math.ceil((await readHeader(img.spec.memory.path)).cacheBytes / BS)
    expect(frontier).toBeLessThan(BLOCKS)
    for (let i = frontier; i < BLOCKS; i++) expect(sha(cache.subarray(i * BS, (i + 1) * BS)).equals(sha(c.volume.subarray(i * BS, (i + 1) * BS))), `block ${i}`).toBe(true)
  }

  /** Waits for the destination's post-copy to end with the source out of it; checks the reads and the records. */
  async function expectCompleteWithoutSource (c: Cluster, name: string): Promise<void> {
    const img = await until('the post-copy to complete', async () => {
      const i = (await c.dst.status()).images.find(x => x.spec.name === name)
      return i != null && i.postcopy == null ? i : undefined
    }, 60_000)
    const ops = JSON.parse(readFileSync(join(img.spec.cache.path, '..', 'ops.json'), 'utf8')) as { badCacheReads: number }
    expect(ops.badCacheReads).toBe(0)
    await terminateAndWait(img.pid!)
    expect((await verifyImage({ memoryPath: img.spec.memory.path, cachePath: img.spec.cache.path })).ok).toBe(true)
  }

  it('switches over before the cache arrived; the workload reads missing blocks on demand; replicas and the source stream the rest', async () => {
    const c = await cluster(2)
    await cachedImage(c, 'vm')
    const report = await c.src.migrate('vm', c.dst.addrs()[0]!, { lanes: 2, cacheMode: 'postcopy' })
    expect(report.postcopy!.deferredBlocks).toBeGreaterThan(0)
    // Right after the switchover the destination runs the workload while blocks are still missing.
    const during = (await c.dst.status()).images.find(x => x.spec.name === 'vm')
    expect(during?.state).toBe('running')
    expect(during?.postcopy).toBeDefined()
    expect((await c.src.status()).kept).toHaveLength(1)
    await expectComplete(c, 'vm', report)
    // The workload's reads of blocks not there yet were fetched on demand, ahead of the stream.
    const done = (await c.dst.status()).images.find(x => x.spec.name === 'vm')!.postcopyResult!
    expect(done.complete).toBe(true)
    expect(done.onDemand!.fetches).toBeGreaterThan(0)
    expect(Object.keys(done.sources)).toContain(c.src.peerId)
  })

  it('a replica killed during the stream: the other replica and the source finish it', async () => {
    const c = await cluster(2)
    await cachedImage(c, 'vm')
    const report = await c.src.migrate('vm', c.dst.addrs()[0]!, { lanes: 2, cacheMode: 'postcopy' })
    await c.replicas[0]!.stop()
    await expectComplete(c, 'vm', report)
  })

  it('the source node stopped during the stream: the replicas finish it', async () => {
    const c = await cluster(2)
    await cachedImage(c, 'vm')
    const report = await c.src.migrate('vm', c.dst.addrs()[0]!, { lanes: 2, cacheMode: 'postcopy' })
    await c.src.stop()
    // Without the source, completion is checked on the destination only.
    expect(report.ok).toBe(true)
    await expectCompleteWithoutSource(c, 'vm')
  })

  it('an operator may drop a kept cache: refused while its destination is connected, then forced; the replicas finish the stream', async () => {
    const c = await cluster(2)
    await cachedImage(c, 'vm')
    const report = await c.src.migrate('vm', c.dst.addrs()[0]!, { lanes: 2, cacheMode: 'postcopy' })
    const [kept] = c.src.keptCaches()
    expect(kept).toMatchObject({ peer: c.dst.peerId, volume: 'base' })
    const code = async (p: Promise<unknown>): Promise<string | undefined> => await p.then(() => undefined, (e: Error & { code?: string }) => e.code)
    expect(await code(c.src.dropKeptCache('xyz'))).toBe('ERR_INVALID_ARGUMENT')
    expect(await code(c.src.dropKeptCache('00000000'))).toBe('ERR_UNKNOWN_KEPT_CACHE')
    expect(await code(c.src.dropKeptCache(kept!.session.slice(0, 8)))).toBe('ERR_IMAGE_STATE')
    expect(c.src.keptCaches()).toHaveLength(1)
    expect((await c.src.dropKeptCache(kept!.session.slice(0, 8), true)).session).toBe(kept!.session)
    expect(c.src.keptCaches()).toEqual([])
    // Without the source's copy, the replicas serve what is missing: the workload's data is whole.
    expect(report.ok).toBe(true)
    await expectCompleteWithoutSource(c, 'vm')
  })

  it('the destination node restarting mid-stream takes the stream up again; the workload never reads a missing block', async () => {
    const c = await cluster(2)
    await cachedImage(c, 'vm')
    // A destination that leaves its workloads running when it stops (as a daemon under systemd).
    const data = tempDir('dst-data')
    const shm = tempDir('dst-shm', '/dev/shm')
    cleanups.push(data.cleanup, shm.cleanup)
    const make = async (): Promise<ShoalNode> => {
      const n = await createShoalNode({ dataDir: data.path, shmDir: shm.path, listen: ['/ip4/127.0.0.9/tcp/0'], workers: 2, keepWorkloadsOnStop: true, drivers: [createSyntheticDriver()], ...(process.env.SHOAL_TEST_LOG === '1' ? { logger: { info: (m: string, f?: unknown) => { console.error('INFO', m, JSON.stringify(f)) }, warn: (m: string, f?: unknown) => { console.error('WARN', m, JSON.stringify(f)) }, error: (m: string, f?: unknown) => { console.error('ERROR', m, JSON.stringify(f)) } } } : {}) })
      await n.start()
      return n
    }
    let dst = await make()
    cleanups.push(async () => {
      await dst.stop().catch(() => {})
      for (const i of (await dst.status().catch(() => undefined))?.images ?? []) if (i.pid != null) await terminateAndWait(i.pid).catch(() => {})
    })
    dst.allowPeer(c.src.peerId)
    for (const r of c.replicas) { r.allowPeer(dst.peerId); await dst.libp2p.dial(r.libp2p.getMultiaddrs()[0]!) }
    const report = await c.src.migrate('vm', dst.addrs()[0]!, { lanes: 2, cacheMode: 'postcopy' })
    expect(report.ok).toBe(true)
    const before = (await dst.status()).images.find(x => x.spec.name === 'vm')!
    expect(before.postcopy).toBeDefined()
    const pid = before.pid!
    await dst.stop()
    dst = await make()
    // Taken up again: the same workload process (adopted), the stream resumed, then complete.
    const img = await until('the resumed post-copy to complete', async () => {
      const i = (await dst.status()).images.find(x => x.spec.name === 'vm')
      return i?.postcopyResult?.complete === true ? i : undefined
    }, 60_000)
    expect(img.pid).toBe(pid)
    expect(img.postcopyPending).toBeUndefined()
    const ops = JSON.parse(readFileSync(join(img.spec.cache.path, '..', 'ops.json'), 'utf8')) as { badCacheReads: number }
    expect(ops.badCacheReads).toBe(0)
    await terminateAndWait(pid)
    const v = await verifyImage({ memoryPath: img.spec.memory.path, cachePath: img.spec.cache.path })
    expect(v.ok).toBe(true)
    const cache = readFileSync(img.spec.cache.path)
    const frontier = Math.ceil((await readHeader(img.spec.memory.path)).cacheBytes / BS)
    for (let i = frontier; i < BLOCKS; i++) expect(sha(cache.subarray(i * BS, (i + 1) * BS)).equals(sha(c.volume.subarray(i * BS, (i + 1) * BS))), `block ${i}`).toBe(true)
  })

  it('post-copy of an image whose cache caches no volume is refused, naming the cause; the image keeps running', async () => {
    const c = await cluster(0)
    await c.src.createImage({ name: 'plain', memorySize: 8 * 2 ** 20, cacheSize: 4 * 2 ** 20 })
    await c.src.startImage('plain')
    const err = await c.src.migrate('plain', c.dst.addrs()[0]!, { cacheMode: 'postcopy' }).then(() => undefined, (e: Error & { code?: string }) => e)
    expect(err?.code).toBe('ERR_INVALID_ARGUMENT')
    expect(err?.message).toMatch(/caches a volume/)
    expect((await c.src.status()).images.find(i => i.spec.name === 'plain')?.state).toBe('running')
    expect((await c.dst.status()).images).toEqual([])
  })
})
