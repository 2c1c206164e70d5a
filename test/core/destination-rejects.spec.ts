import { truncateSync, writeFileSync, existsSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import {
  Area, createMemoryLanePair, createWorkerPool, decodeFrame, DestinationSession, encodeFrame, encodeFrameBytes, FrameType, readLaneHello
} from '@shoal/core'
import type { DestinationHooks, Frame } from '@shoal/core'
import { tempDir } from '../fixtures/temp.js'

const sessionId = new Uint8Array(16).fill(1)
const hello: Frame = { type: FrameType.Hello, sessionId, image: 'img', pageSize: 4096, memorySize: 16 * 4096, blockSize: 65536, cacheSize: 2 * 65536, lanes: 1, driver: 'test', driverConfig: '{}' }

describe('destination session against a misbehaving source', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  const bad: Array<[string, (send: (f: Uint8Array[] | Uint8Array) => Promise<void>) => Promise<void>]> = [
    ['a run beyond the image', async (send) => { await send(encodeFrame({ type: FrameType.Data, round: 1, chunkId: 1, area: Area.Memory, runs: [{ start: 15, count: 2 }], payload: new Uint8Array(2 * 4096) })) }],
    ['a payload that does not match its runs', async (send) => { await send(encodeFrame({ type: FrameType.Data, round: 1, chunkId: 1, area: Area.Cache, runs: [{ start: 0, count: 1 }], payload: new Uint8Array(100) })) }],
    ['garbage bytes', async (send) => { await send(Buffer.from([9, 0, 0, 0, 1, 99, 1, 2, 3, 4, 5, 6, 7])) }],
    ['a control frame on a data lane', async (send) => { await send(encodeFrameBytes({ type: FrameType.Commit })) }]
  ]

  for (const [what, misbehave] of bad) {
    it(`aborts on ${what}: typed ABORT to the source, staging discarded, nothing committed`, async () => {
      const dir = tempDir('rogue', '/dev/shm')
      cleanups.push(dir.cleanup)
      const pool = createWorkerPool({ workers: 1 })
      cleanups.push(async () => { await pool.stop() })
      const mem = `${dir.path}/m`
      const cache = `${dir.path}/c`
      let committed = false
      const hooks: DestinationHooks = {
        async prepare () { writeFileSync(mem, ''); truncateSync(mem, 16 * 4096); writeFileSync(cache, ''); truncateSync(cache, 2 * 65536); return { memoryPath: mem, cachePath: cache } },
        async commit () { committed = true },
        async discard () { const { rmSync } = await import('node:fs'); rmSync(mem, { force: true }); rmSync(cache, { force: true }) }
      }
      const [srcCtl, dstCtl] = createMemoryLanePair()
      const [srcData, dstData] = createMemoryLanePair()
      const dest = new DestinationSession(dstCtl, { pool, hooks })
      void readLaneHello(dstData).then(({ frames }) => { dest.addLane(dstData, frames) })
      const running = dest.run()
      const ctl = srcCtl[Symbol.asyncIterator]()
      await srcCtl.send(encodeFrame(hello))
      expect(decodeFrame((await ctl.next()).value as Uint8Array).type).toBe(FrameType.Accept)
      await srcData.send(encodeFrame({ type: FrameType.LaneHello, sessionId, lane: 0 }))
      await misbehave(async (f) => { await srcData.send(f) })
      const result = await running
      expect(result.committed).toBe(false)
      expect(committed).toBe(false)
      expect(result.error?.code).toMatch(/^ERR_(INVALID_FRAME|PROTOCOL)$/)
      const abort = decodeFrame((await ctl.next()).value as Uint8Array)
      expect(abort).toMatchObject({ type: FrameType.Abort, code: result.error?.code })
      expect(existsSync(mem) || existsSync(cache)).toBe(false)
    })
  }
})
