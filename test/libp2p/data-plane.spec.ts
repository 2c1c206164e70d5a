import { existsSync, readFileSync } from 'node:fs'
import { connect } from 'node:tls'
import { afterEach, describe, expect, it } from 'vitest'
import { createMemoryLanePair, DestinationSession, encodeFrameBytes, FrameType, isOffThreadLane, readLaneHello, runSourceSession } from '@shoal/core'
import type { DataSink, Lane, MigrationReport, OffThreadLane } from '@shoal/core'
import { createDataPlane, DATA_LANE_ALPN, loadOrCreateIdentity, parseEndpoint, peerIdOf } from '@shoal/libp2p'
import type { DataPlane } from '@shoal/libp2p'
import { processController } from '../fixtures/process-controller.js'
import { sessionImage } from '../fixtures/session-image.js'
import type { SessionImage } from '../fixtures/session-image.js'
import { tempDir } from '../fixtures/temp.js'


describe('data lanes on data worker threads (real TLS sockets, libp2p identities)', () => {
  const cleanups: Array<() => void | Promise<void>> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  async function plane (name: string, workers: number, onLane: (lane: OffThreadLane, info: { peerId: string }) => void = (l) => { l.abort() }, maxLanesPerPeer?: number): Promise<{ plane: DataPlane, peerId: string }> {
    const dir = tempDir(`dp-${name}`)
    cleanups.push(dir.cleanup)
    const key = await loadOrCreateIdentity(dir.path)
    const p = await createDataPlane({ workers, privateKey: key, listen: ['127.0.0.1'], onLane, ...(maxLanesPerPeer != null ? { maxLanesPerPeer } : {}) })
    cleanups.push(async () => { await p.stop() })
    return { plane: p, peerId: peerIdOf(key) }
  }

  /** Source and destination sessions whose data lanes are worker lanes between two data planes. */
  async function migrate (opts: { pages: number, lanes: number, srcWorkers: number, onDestLane?: (lane: OffThreadLane) => void, duringRun?: (src: DataPlane) => void }): Promise<{ outcome: MigrationReport | (Error & { report: MigrationReport }), dest: Awaited<ReturnType<DestinationSession['run']>>, img: SessionImage, controller: ReturnType<typeof processController> }> {
    const img = await sessionImage(cleanups, opts.pages, 16)
    const controller = processController(img.writer)
    let session: DestinationSession | undefined
    const dst = await plane('dst', 2, (lane) => {
      opts.onDestLane?.(lane)
      void readLaneHello(lane).then(({ frames }) => { session!.addLane(lane, frames) }, () => { lane.abort() })
    })
    const src = await plane('src', opts.srcWorkers)
    const [control, destControl] = createMemoryLanePair({ id: 'ctl' })
    session = new DestinationSession(destControl, { pool: img.pool, hooks: { ...img.hooks, dataEndpoints: () => dst.plane.endpoints() } })
    const open = async (accepted: { dataEndpoints?: string[] }): Promise<Lane[]> => {
      const endpoints = accepted.dataEndpoints!.map(parseEndpoint)
      const lanes = await Promise.all(Array.from({ length: opts.lanes }, async (_, i) => await src.plane.dial({ peer: dst.peerId, ...endpoints[i % endpoints.length]! })))
      opts.duringRun?.(src.plane)
      return lanes
    }
    const [outcome, dest] = await Promise.all([
      runSourceSession({ image: img.image, controller, control, lanes: { count: opts.lanes, open }, pool: img.pool }, { chunkBytes: 64 * 1024 })
        .then(r => r, (e: Error & { report: MigrationReport }) => e),
      session.run()
    ])
    return { outcome, dest, img, controller }
  }

  it('a migration over worker lanes verifies, with a lane killed mid-round; its chunks go to the other lanes', async () => {
    let killed = false
    const { outcome, dest, img } = await migrate({
      pages: 8192,
      lanes: 3,
      srcWorkers: 2,
      // The destination resets its first lane's connection at the third DATA frame it is asked about.
      onDestLane: (lane) => {
        if (killed) return
        killed = true
        let frames = 0
        const sinkData = lane.sinkData.bind(lane)
        lane.sinkData = (sink: DataSink) => {
          sinkData({ ...sink, admit: async (h, n) => { if (++frames === 3) lane.abort(); return await sink.admit(h, n) } })
        }
      }
    })
    const report = outcome as MigrationReport
    expect(report.ok, (outcome as Error).message).toBe(true)
    expect(report.verified).toBe(true)
    expect(dest.committed).toBe(true)
    // Every lane was a worker lane; one failed and its chunks were sent again elsewhere.
    expect(report.lanes.every(l => /#w\d\./.test(l.id))).toBe(true)
    const failed = report.lanes.filter(l => l.state === 'failed')
    expect(failed).toHaveLength(1)
    expect(failed[0]!.requeued).toBeGreaterThan(0)
    // The copy equals the source as it was at the pause (the writer is still stopped).
    expect(readFileSync(`${img.dir}/dst.mem`).equals(readFileSync(img.image.memory.path))).toBe(true)
    expect(readFileSync(`${img.dir}/dst.cache`).equals(readFileSync(img.image.cache.path))).toBe(true)
  })

  it('a data worker that crashes fails the migration cleanly: the source resumes, the copy is discarded, the worker comes back', async () => {
    let src: DataPlane | undefined
    const { outcome, dest, img, controller } = await migrate({
      pages: 16384,
      lanes: 2,
      srcWorkers: 1,
      // The source's only data worker dies as soon as its lanes are open.
      duringRun: (p) => { src = p; setTimeout(() => { void p.terminateWorker(0) }, 20) }
    })
    expect(outcome).toBeInstanceOf(Error)
    const err = outcome as Error & { report: MigrationReport }
    expect(err.name).toMatch(/NoLanesError|LaneClosedError/)
    expect(err.report.lanes.every(l => l.state === 'failed' && /data worker 0 stopped/.test(l.error ?? ''))).toBe(true)
    expect(dest.committed).toBe(false)
    expect(existsSync(`${img.dir}/dst.mem`)).toBe(false)
    expect(controller.calls).not.toContain('stop')
    expect(img.writer.exitCode).toBeNull()
    // Started again, on a new port.
    await expect.poll(() => src!.listening().length, { timeout: 5000 }).toBe(1)
  })

  it('one peer holds a bounded number of lanes at once, over all workers; a closed lane frees its place', async () => {
    const got: OffThreadLane[] = []
    const dst = await plane('dst', 2, (lane) => { got.push(lane) }, 2)
    const src = await plane('src', 1)
    const [a, b] = dst.plane.listening()
    const lanes = [
      await src.plane.dial({ peer: dst.peerId, ...a! }),
      await src.plane.dial({ peer: dst.peerId, ...b! })
    ]
    await expect.poll(() => got.length).toBe(2)
    // The third is refused: the destination drops it as soon as it proved who it is.
    const third = await src.plane.dial({ peer: dst.peerId, ...a! })
    const ended = await (async () => { try { for await (const f of third) void f; return 'closed' } catch { return 'broken' } })()
    expect(['closed', 'broken']).toContain(ended)
    expect(got).toHaveLength(2)
    lanes[0]!.abort()
    await expect.poll(async () => {
      const again = await src.plane.dial({ peer: dst.peerId, ...b! })
      await new Promise(resolve => setTimeout(resolve, 100))
      again.abort()
      return got.length
    }, { timeout: 5000 }).toBe(3)
  })

  it('a lane proves the peer ID on both ends: a dial expecting another peer fails, naming it', async () => {
    const dst = await plane('dst', 1)
    const other = await plane('other', 1)
    const src = await plane('src', 1)
    const [l] = dst.plane.listening()
    await expect(src.plane.dial({ peer: other.peerId, host: l!.host, port: l!.port })).rejects.toThrow(new RegExp(`the peer is not ${other.peerId}`))
  })

  it('a client without a libp2p certificate never becomes a lane; a lane that sends a malformed frame is ended with ERR_INVALID_FRAME', async () => {
    const got: OffThreadLane[] = []
    const dst = await plane('dst', 1, (lane) => { got.push(lane) })
    const [l] = dst.plane.listening()
    // Plain TLS, no client certificate: the handshake may complete, but no lane is handed over.
    await new Promise<void>((resolve) => {
      const s = connect({ host: l!.host, port: l!.port, rejectUnauthorized: false, ALPNProtocols: [DATA_LANE_ALPN] })
      s.on('error', () => { resolve() })
      s.on('close', () => { resolve() })
      s.on('secureConnect', () => { s.write(encodeFrameBytes({ type: FrameType.Commit })); setTimeout(() => { s.destroy() }, 300) })
    })
    expect(got).toHaveLength(0)
    // An authenticated peer that sends a frame whose length field lies.
    const src = await plane('src', 1)
    const lane = await src.plane.dial({ peer: dst.peerId, host: l!.host, port: l!.port })
    expect(isOffThreadLane(lane)).toBe(true)
    await expect.poll(() => got.length).toBe(1)
    const bad = Buffer.from(encodeFrameBytes({ type: FrameType.Commit }))
    bad.writeUInt32LE(2 ** 31, 0)
    await lane.send(bad)
    await expect((async () => { for await (const f of got[0]!) void f })()).rejects.toMatchObject({ code: 'ERR_INVALID_FRAME' })
  })
})
