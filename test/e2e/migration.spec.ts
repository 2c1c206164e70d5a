import { existsSync, readdirSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import { verifyImage } from '@shoal/workload'
import type { MigrationReport } from '@shoal/core'
import { startNode } from '../fixtures/nodes.js'
import { terminateAndWait } from '../fixtures/process-exit.js'

const MiB = 1024 * 1024

describe('live migration between two real libp2p peers on loopback', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  for (const dataWorkers of [1, 0]) {
  it(`migrates a 64 MiB memory + 256 MiB cache image while the workload writes (data lanes ${dataWorkers > 0 ? 'on data workers' : 'as libp2p streams on the main thread'}); the resumed workload lost nothing`, async () => {
    const src = await startNode('127.0.0.1', cleanups, { dataWorkers })
    const dst = await startNode('127.0.0.2', cleanups, { dataWorkers })
    dst.allowPeer(src.peerId)
    await src.createImage({ name: 'vm1', memorySize: 64 * MiB, cacheSize: 256 * MiB, fill: 'random', config: { rate: 5000, recordRate: 500 } })
    await src.startImage('vm1')
    await new Promise(resolve => setTimeout(resolve, 500))
    const progress: number[] = []
    const report = await src.migrate('vm1', dst.addrs()[0]!, { lanes: 4, onProgress: p => { progress.push(p.bytes) } })

    expect(report.ok).toBe(true)
    expect(report.verified).toBe(true)
    expect(report.bytes).toBeGreaterThan(64 * MiB)
    expect(report.lanes).toHaveLength(4)
    expect(report.lanes.every(l => l.bytes > 0 && l.state === 'closed')).toBe(true)
    // Worker lanes are named after their data worker (`#w<worker>.<lane>`).
    expect(report.lanes.every(l => /#w\d+\./.test(l.id))).toBe(dataWorkers > 0)
    expect(report.rounds.length).toBeGreaterThanOrEqual(2) // the workload kept dirtying pages during round 1
    expect(report.downtimeMs).toBeGreaterThan(0)
    expect(progress.length).toBeGreaterThan(0)

    // The source gave the image up; the destination runs it, after its own full check.
    expect((await src.status()).images).toEqual([])
    const [img] = (await dst.status()).images
    expect(img?.spec.name).toBe('vm1')
    expect(img?.state).toBe('running')
    expect(img?.arrivalCheck?.ok).toBe(true)
    expect(img?.pid).toBeGreaterThan(0)

    // Let it run on the destination, stop it, and check the whole image once more.
    await new Promise(resolve => setTimeout(resolve, 300))
    await terminateAndWait(img!.pid!)
    const v = await verifyImage({ memoryPath: img!.spec.memory.path, cachePath: img!.spec.cache.path })
    expect(v.ok).toBe(true)
    expect(v.writes).toBeGreaterThan(0)
  })
  }

  it('refuses a peer that is not on the allow-list, on both sides, and writes nothing', async () => {
    const src = await startNode('127.0.0.1', cleanups)
    const dst = await startNode('127.0.0.2', cleanups)
    await src.createImage({ name: 'vm2', memorySize: 4 * MiB, cacheSize: 4 * MiB })
    await src.startImage('vm2')
    const err = await src.migrate('vm2', dst.addrs()[0]!).then(() => undefined, (e: Error & { code?: string }) => e)
    expect(err).toBeDefined()
    expect(err!.code).toBe('ERR_UNAUTHORIZED_PEER') // the destination's own code, not a generic ERR_REMOTE_ABORT
    expect(err!.message).toMatch(/allow-list|not allowed|unauthori/i)
    expect((await src.status()).images[0]?.state).toBe('running')
    expect((await dst.status()).images).toEqual([])
    const dstData = await dst.status()
    expect(dstData.incoming).toBe(0)
  })

  it('killing the destination mid-migration leaves the source workload running and intact', async () => {
    const src = await startNode('127.0.0.1', cleanups)
    const dst = await startNode('127.0.0.2', cleanups)
    dst.allowPeer(src.peerId)
    await src.createImage({ name: 'vm3', memorySize: 64 * MiB, cacheSize: 256 * MiB, fill: 'random', config: { rate: 3000 } })
    await src.startImage('vm3')
    let stopped = false
    const outcome = await src.migrate('vm3', dst.addrs()[0]!, {
      onProgress: (p) => {
        if (!stopped && p.bytes > 32 * MiB) { stopped = true; void dst.stop() }
      }
    }).then(() => undefined, (e: Error & { report?: MigrationReport, code?: string }) => e)
    expect(stopped).toBe(true)
    expect(outcome).toBeDefined()
    expect(outcome!.report?.ok).toBe(false)
    // Said as what happened: the destination went away (not "no usable lane left").
    expect(outcome!.code).toBe('ERR_PEER_GONE')
    const [img] = (await src.status()).images
    expect(img?.state).toBe('running')
    expect(img?.pid).toBeGreaterThan(0)
    process.kill(img!.pid!, 0) // still alive: throws if not
    // Stop it and check every page and record it wrote, before and after the failed attempt.
    await terminateAndWait(img!.pid!)
    const v = await verifyImage({ memoryPath: img!.spec.memory.path, cachePath: img!.spec.cache.path })
    expect(v.ok).toBe(true)
    expect(v.writes).toBeGreaterThan(0)
  })
})
