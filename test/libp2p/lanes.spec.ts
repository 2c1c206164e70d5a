import { randomBytes } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import { Area, decodeFrame, encodeFrame, encodeFrameBytes, FrameType, InvalidFrameError, LaneClosedError } from '@shoal/core'
import { createShoalLibp2p, handleLanes, loadOrCreateIdentity, openLanes } from '@shoal/libp2p'
import type { Frame, Lane } from '@shoal/core'
import type { LaneInfo, ShoalLibp2p } from '@shoal/libp2p'
import { tempDir } from '../fixtures/temp.js'

const PROTOCOL = '/shoal-test/lane/1'
const MiB = 1024 * 1024

describe('libp2p lanes over loopback', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) {
      try { await c() } catch { /* keep cleaning */ }
    }
  })

  async function node (ip: string): Promise<ShoalLibp2p> {
    const dir = tempDir('lanes')
    cleanups.push(dir.cleanup)
    const n = await createShoalLibp2p({ privateKey: await loadOrCreateIdentity(dir.path), listen: [`/ip4/${ip}/tcp/0`], localAddress: ip })
    cleanups.push(async () => { await n.stop() })
    return n
  }

  /** Two started nodes, `b` accepting lanes (allowed: only `a`) into the returned array. */
  async function pair (onLane?: (lane: Lane, info: LaneInfo) => void): Promise<{ a: ShoalLibp2p, b: ShoalLibp2p, accepted: Lane[] }> {
    const a = await node('127.0.0.1')
    const b = await node('127.0.0.2')
    const accepted: Lane[] = []
    await handleLanes(b, PROTOCOL, (lane, info) => {
      accepted.push(lane)
      onLane?.(lane, info)
    }, { isAllowed: peer => peer === a.peerId.toString() })
    await Promise.all([a.start(), b.start()])
    return { a, b, accepted }
  }

  async function open (a: ShoalLibp2p, b: ShoalLibp2p, count: number, streamsPerConnection = 1): Promise<Lane[]> {
    const lanes = await openLanes(a, { peerId: b.peerId, addrs: b.getMultiaddrs() }, PROTOCOL, count, { streamsPerConnection })
    cleanups.push(() => { for (const l of lanes) l.abort() })
    return lanes
  }

  function data (chunkId: number, payload: Uint8Array): Uint8Array[] {
    return encodeFrame({ type: FrameType.Data, round: 1, chunkId, area: Area.Cache, runs: [{ start: chunkId, count: 1 }], payload })
  }

  async function echo (lane: Lane): Promise<void> {
    for await (const frame of lane) await lane.send(frame)
    await lane.close()
  }

  it('spreads 4 lanes over 2 connections and round-trips frames in order both ways, 4 MiB included', async () => {
    const { a, b } = await pair(lane => { void echo(lane).catch(() => {}) })
    const lanes = await open(a, b, 4, 2)
    expect(new Set(lanes.map(l => l.id)).size).toBe(4)
    expect(lanes.map(l => l.id.split('#')[1])).toEqual(['c0s0', 'c1s0', 'c0s1', 'c1s1'])
    expect(lanes[0]!.id.startsWith('127.0.0.1>127.0.0.2#')).toBe(true)
    expect(a.getConnections(b.peerId).length).toBeGreaterThanOrEqual(2)

    const sizes = [1, 4096, MiB, 4 * MiB, 17, 64 * 1024 + 3]
    await Promise.all(lanes.map(async (lane, li) => {
      const sent = sizes.map(n => randomBytes(n))
      const reader = (async () => {
        const got: Frame[] = []
        for await (const frame of lane) {
          got.push(decodeFrame(frame))
          if (got.length === sent.length) break
        }
        return got
      })()
      for (const [i, payload] of sent.entries()) await lane.send(data(li * 100 + i, payload))
      const got = await reader
      expect(got.map(f => f.type === FrameType.Data ? f.chunkId : -1)).toEqual(sent.map((_, i) => li * 100 + i))
      for (const [i, f] of got.entries()) {
        expect(f.type === FrameType.Data && Buffer.from(f.payload).equals(sent[i]!)).toBe(true)
      }
    }))
  })

  it('applies back-pressure: 64 MiB to a slow reader completes with bounded bytes in flight', async () => {
    let reader: Promise<number> | undefined
    let consumed = 0
    const { a, b } = await pair(lane => {
      reader = (async () => {
        let expected = 0
        for await (const frame of lane) {
          const f = decodeFrame(frame)
          if (f.type !== FrameType.Data || f.chunkId !== expected++) throw new Error('out of order')
          consumed += f.payload.byteLength
          await new Promise(resolve => setTimeout(resolve, 15))
        }
        return consumed
      })()
    })
    const [lane] = await open(a, b, 1)
    const payload = randomBytes(MiB)
    let accepted = 0
    let maxAhead = 0
    for (let i = 0; i < 64; i++) {
      await lane!.send(data(i, payload))
      accepted += payload.byteLength
      maxAhead = Math.max(maxAhead, accepted - consumed)
    }
    await lane!.close()
    expect(await reader).toBe(64 * MiB)
    // lane high-water mark (8 MiB) + 2 yamux windows (2 × 16 MiB, see StreamLane.updateFlow)
    // + a few 1 MiB frames in transit; without back-pressure it would reach 64 MiB
    expect(maxAhead).toBeLessThanOrEqual(44 * MiB)
    expect(maxAhead).toBeGreaterThan(0)
  })

  it('throws InvalidFrameError when the peer sends an oversized length prefix, and resets the stream', async () => {
    let laneError: unknown
    let done!: () => void
    const finished = new Promise<void>(resolve => { done = resolve })
    const { a, b } = await pair(lane => {
      void (async () => {
        try { for await (const _ of lane) { /* nothing valid arrives */ } } catch (err) { laneError = err }
        done()
      })()
    })
    const stream = await a.dialProtocol(b.getMultiaddrs()[0]!, PROTOCOL)
    const header = Buffer.alloc(6)
    header.writeUInt32LE(0xfffffff0, 0)
    header.writeUInt8(1, 4)
    header.writeUInt8(FrameType.Data, 5)
    const closed = new Promise(resolve => { stream.addEventListener('close', resolve, { once: true }) })
    stream.send(header)
    await finished
    expect(laneError).toBeInstanceOf(InvalidFrameError)
    await closed
    expect(stream.status).toBe('reset')
  })

  it('refuses a peer that is not allowed with an ABORT frame, and never calls onLane', async () => {
    const a = await node('127.0.0.1')
    const b = await node('127.0.0.2')
    let called = false
    await handleLanes(b, PROTOCOL, () => { called = true }, { isAllowed: () => false })
    await Promise.all([a.start(), b.start()])
    const [lane] = await open(a, b, 1)
    const frames: Frame[] = []
    let error: unknown
    try {
      for await (const frame of lane!) frames.push(decodeFrame(frame))
    } catch (err) {
      error = err
    }
    expect(error === undefined || error instanceof LaneClosedError).toBe(true)
    expect(frames).toHaveLength(1)
    expect(frames[0]).toMatchObject({ type: FrameType.Abort, code: 'ERR_UNAUTHORIZED_PEER' })
    await expect(lane!.send(encodeFrameBytes({ type: FrameType.Commit }))).rejects.toBeInstanceOf(LaneClosedError)
    expect(called).toBe(false)
  })

  it('ends the peer\'s iterator on close and makes it throw on abort', async () => {
    const { a, b, accepted } = await pair()
    const [l1, l2] = await open(a, b, 2)
    await l1!.send(encodeFrameBytes({ type: FrameType.Pause, round: 3 }))
    await l2!.send(encodeFrameBytes({ type: FrameType.Pause, round: 4 }))
    while (accepted.length < 2) await new Promise(resolve => setTimeout(resolve, 10))
    const [r1, r2] = [...accepted].sort((x, y) => x.id.localeCompare(y.id))

    const drain = async (lane: Lane): Promise<{ frames: Frame[], error?: unknown }> => {
      const frames: Frame[] = []
      try {
        for await (const f of lane) frames.push(decodeFrame(f))
      } catch (error) {
        return { frames, error }
      }
      return { frames }
    }
    const ends = Promise.all([drain(r1!), drain(r2!)])
    await l1!.close()
    l2!.abort(new Error('test abort'))
    const results = await ends
    const byRound = (round: number): { frames: Frame[], error?: unknown } =>
      results.find(r => r.frames.some(f => f.type === FrameType.Pause && f.round === round)) ?? results.find(r => r.frames.length === 0)!
    const closed = byRound(3)
    const aborted = results.find(r => r !== closed)!
    expect(closed.error).toBeUndefined()
    expect(closed.frames).toMatchObject([{ type: FrameType.Pause, round: 3 }])
    expect(aborted.error).toBeInstanceOf(LaneClosedError)
    // a closed lane refuses to send, locally and on the peer's side
    await expect(l1!.send(encodeFrameBytes({ type: FrameType.Commit }))).rejects.toBeInstanceOf(LaneClosedError)
  })

  it('fails the lane with LaneClosedError when the peer node goes away', async () => {
    const { a, b, accepted } = await pair()
    const [lane] = await open(a, b, 1)
    await lane!.send(encodeFrameBytes({ type: FrameType.Pause, round: 1 }))
    while (accepted.length < 1) await new Promise(resolve => setTimeout(resolve, 10))
    const ended = (async () => {
      try {
        for await (const _ of lane!) { /* nothing is sent back */ }
      } catch (err) {
        return err
      }
      return undefined
    })()
    await b.stop()
    expect(await ended).toBeInstanceOf(LaneClosedError)
  })
})
