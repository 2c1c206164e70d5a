import { randomBytes } from 'node:crypto'
import { closeSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { CacheMeta } from '@shoal/core'
import type { MigrationReport } from '@shoal/core'
import type { ShoalNode } from '@shoal/node'
import { afterEach, describe, expect, it } from 'vitest'
import { startNode } from '../fixtures/nodes.js'
import { tempDir } from '../fixtures/temp.js'

const BS = 256 * 1024

/**
 * A volume of `blocks` random blocks, except four zero blocks (40..43) and two copies of block 20
 * (at 50 and 51), so dedup has something to find.
 */
function volumeBytes (blocks: number): Buffer {
  const data = randomBytes(blocks * BS)
  data.fill(0, 40 * BS, 44 * BS)
  data.copy(data, 50 * BS, 20 * BS, 21 * BS)
  data.copy(data, 51 * BS, 20 * BS, 21 * BS)
  return data
}

interface Cluster {
  src: ShoalNode
  dst: ShoalNode
  replicas: ShoalNode[]
  dataDirs: Map<ShoalNode, string>
  volume: Buffer
}

describe('migration with cold cache blocks from replicas', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  /** Source, destination and `n` replica nodes on 127.0.0.x; every node holds the volume except the destination. */
  async function cluster (n: number, opts: { blocks?: number, serveRate?: number, allowDst?: boolean[] } = {}): Promise<Cluster> {
    const dataDirs = new Map<ShoalNode, string>()
    const start = async (ip: string, serveRate?: number): Promise<ShoalNode> => {
      const d = tempDir('data')
      cleanups.push(d.cleanup)
      const node = await startNode(ip, cleanups, { dataDir: d.path, ...(serveRate != null ? { serveRate } : {}) })
      dataDirs.set(node, d.path)
      return node
    }
    const src = await start('127.0.0.1')
    const dst = await start('127.0.0.2')
    dst.allowPeer(src.peerId)
    const volume = volumeBytes(opts.blocks ?? 64)
    const file = tempDir('vol')
    cleanups.push(file.cleanup)
    writeFileSync(join(file.path, 'v.img'), volume)
    await src.importVolume('base', join(file.path, 'v.img'))
    const replicas: ShoalNode[] = []
    for (let k = 0; k < n; k++) {
      const r = await start(`127.0.0.${3 + k}`, opts.serveRate)
      if (opts.allowDst?.[k] !== false) r.allowPeer(dst.peerId)
      await r.importVolume('base', join(file.path, 'v.img'))
      // The destination knows the replica (address and protocols, via identify).
      await dst.libp2p.dial(r.libp2p.getMultiaddrs()[0]!)
      replicas.push(r)
    }
    return { src, dst, replicas, dataDirs, volume }
  }

  /** An image on the source whose cache caches the volume; the workload appends records (dirtying the first blocks). */
  async function cachedImage (c: Cluster, name: string, tracker: 'scan' | 'cooperative' = 'scan'): Promise<void> {
    await c.src.createImage({ name, memorySize: 8 * 2 ** 20, cacheSize: 0, cacheVolume: 'base', tracker, fill: 'random', config: { rate: 500, recordRate: 100, arrivalCheck: 'full' } })
    await c.src.startImage(name)
    await new Promise(resolve => setTimeout(resolve, 600))
  }

  async function expectArrived (c: Cluster, name: string, report: MigrationReport): Promise<void> {
    expect(report.ok).toBe(true)
    expect(report.verified).toBe(true)
    const img = (await c.dst.status()).images.find(i => i.spec.name === name)
    expect(img?.state).toBe('running')
    expect(img?.arrivalCheck?.ok).toBe(true)
    // The destination keeps the cache's metadata: same volume, and the blocks written at the source are dirty there.
    const meta = CacheMeta.open(img!.spec.cache.path)
    expect(meta.volume).toBe('base')
    expect(meta.dirty().get(0)).toBe(true)
    expect(Buffer.from(meta.hashes).equals(Buffer.from(CacheMeta.open(img!.spec.cache.path).hashes))).toBe(true)
  }

  const replicaBytes = (r: MigrationReport, n: ShoalNode): number => r.cache?.sources[n.peerId]?.bytes ?? 0

  for (const tracker of ['scan', 'cooperative'] as const) it(`${tracker} tracker: takes clean cold blocks from two replicas, hot and dirty ones from the source, and dedups`, async () => {
    const c = await cluster(2)
    await cachedImage(c, 'vm', tracker)
    c.src.markHot('vm', 10, 12)
    const report = await c.src.migrate('vm', c.dst.addrs()[0]!, { lanes: 2 })
    await expectArrived(c, 'vm', report)
    const cache = report.cache!
    expect(cache.done).toBe(true)
    // Both replicas served blocks; together they served every claimed block that was not deduplicated.
    expect(replicaBytes(report, c.replicas[0]!)).toBeGreaterThan(0)
    expect(replicaBytes(report, c.replicas[1]!)).toBeGreaterThan(0)
    expect(cache.dedup.zeroBytes).toBe(4 * BS)
    expect(cache.dedup.duplicateBytes).toBe(2 * BS)
    expect(cache.leftoverBlocks).toBe(0)
    // The source sent the dirty and hot blocks (and blocks written during the migration), not the cold ones.
    expect(cache.sourceBlocks).toBeGreaterThanOrEqual(3)
    expect(cache.sourceBlocks).toBeLessThan(64 - cache.claimedBlocks + 8)
    const fetched = replicaBytes(report, c.replicas[0]!) + replicaBytes(report, c.replicas[1]!)
    expect(fetched + cache.dedup.zeroBytes + cache.dedup.duplicateBytes).toBe(cache.claimedBlocks * BS)
  })
  it('detects a replica serving corrupt blocks, discards them and gets them elsewhere', async () => {
    const c = await cluster(2)
    // Every 4th block of the first replica's store is garbage on disk (it serves what it reads).
    const fd = openSync(join(c.dataDirs.get(c.replicas[0]!)!, 'volumes', 'base.blocks'), 'r+')
    try { for (let i = 0; i < 64; i += 4) writeSync(fd, randomBytes(BS), 0, BS, i * BS) } finally { closeSync(fd) }
    await cachedImage(c, 'vm')
    const report = await c.src.migrate('vm', c.dst.addrs()[0]!, { lanes: 2 })
    await expectArrived(c, 'vm', report)
    expect(report.cache!.sources[c.replicas[0]!.peerId]!.corrupt).toBeGreaterThan(0)
    expect(replicaBytes(report, c.replicas[1]!)).toBeGreaterThan(0)
    expect(report.cache!.leftoverBlocks).toBe(0)
  })

  it('reassigns the requests of a replica killed mid-fetch', async () => {
    // Replicas serve 1 MiB/s each (16 MiB of blocks: ~8 s), so the victim still has requests
    // queued when the destination's figures first show it served bytes and the kill lands (at
    // 4 MiB/s it could finish its share before, and nothing was reassigned: a CI failure).
    const c = await cluster(2, { serveRate: 2 ** 20 })
    await cachedImage(c, 'vm')
    const victim = c.replicas[0]!
    let killed: Promise<void> | undefined
    const report = await c.src.migrate('vm', c.dst.addrs()[0]!, {
      lanes: 2,
      onProgress: (p) => {
        if (killed == null && (p.cache?.sources[victim.peerId]?.bytes ?? 0) > 0) killed = victim.stop()
      }
    })
    await killed
    expect(killed).toBeDefined()
    await expectArrived(c, 'vm', report)
    expect(report.cache!.dropped[victim.peerId]).toMatch(/failed/)
    expect(replicaBytes(report, c.replicas[1]!)).toBeGreaterThan(replicaBytes(report, victim))
    expect(report.cache!.leftoverBlocks).toBe(0)
  })

  it('without replicas the source sends every block that is not all zeros', async () => {
    const c = await cluster(0)
    await cachedImage(c, 'vm')
    const report = await c.src.migrate('vm', c.dst.addrs()[0]!, { lanes: 2 })
    await expectArrived(c, 'vm', report)
    expect(report.cache!.sources).toEqual({})
    expect(report.cache!.claimedBlocks).toBe(4) // the zero blocks: the destination already holds zeros
    expect(report.cache!.sourceBlocks).toBeGreaterThanOrEqual(60)
  })

  it('a replica refuses a destination that is not on its allow-list; the others serve', async () => {
    const c = await cluster(2, { allowDst: [true, false] })
    const refusing = c.replicas[1]!
    const client = await c.dst.blockClient(refusing.addrs()[0]!)
    await expect(client.summary('base')).rejects.toMatchObject({ name: 'RemoteAbortError', remoteCode: 'ERR_UNAUTHORIZED_PEER' })
    await cachedImage(c, 'vm')
    const report = await c.src.migrate('vm', c.dst.addrs()[0]!, { lanes: 2 })
    await expectArrived(c, 'vm', report)
    expect(report.cache!.sources[refusing.peerId]).toBeUndefined()
    expect(replicaBytes(report, c.replicas[0]!)).toBeGreaterThan(0)
  })

  it('a node becomes a replica by pulling a volume from two others at once', async () => {
    const c = await cluster(2)
    const report = await c.dst.pullVolume('base', { from: c.replicas.map(r => r.addrs()[0]!) })
    expect(report.leftover).toBe(0)
    expect(Object.values(report.sources).every(s => s.bytes > 0)).toBe(true)
    // Both ends have data workers (the default): blocks came over their TLS lanes.
    expect(Object.values(report.sources).map(s => s.via)).toEqual(['data-workers', 'data-workers'])
    expect(report.bytes + report.dedupBytes).toBe(64 * BS)
    expect((await c.dst.status()).volumes).toEqual([{ id: 'base', blockSize: BS, blockCount: 64, held: 64 }])
    const blocks = readFileSync(join(c.dataDirs.get(c.dst)!, 'volumes', 'base.blocks'))
    expect(blocks.equals(c.volume)).toBe(true)
    await expect(c.dst.pullVolume('base')).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
    await c.dst.removeVolume('base')
    expect((await c.dst.status()).volumes).toEqual([])
  })
})
