// The compliance suite every LaneTransport runs (as js-libp2p's interface-compliance-tests do for
// transports): ordering, large frames and the frame limit, back-pressure, close, abort, buffer
// ownership, refusal, independent lanes. See LaneTransport's docs for the contract.
import { afterEach, describe, expect, it as itVitest } from 'vitest'
import { Area, decodeFrame, encodeFrameBytes, FrameType, LaneClosedError } from '@shoal/core'
import type { Lane, LaneTransport } from '@shoal/core'

/** Two peers of one transport; `close` releases everything they hold. */
export interface TransportPair {
  a: LaneTransport
  b: LaneTransport
  /** How `a` addresses `b` in `openLanes`. */
  bAddress: string
  close: () => Promise<void>
}

const PROTOCOL = '/shoal/compliance/1.0.0'
const MiB = 2 ** 20

/** A DATA frame whose payload encodes `n` (so order and content can be checked). */
function frame (n: number, payloadBytes = 4096): Uint8Array {
  const payload = new Uint8Array(payloadBytes).fill(n & 0xff)
  new DataView(payload.buffer).setUint32(0, n)
  return encodeFrameBytes({ type: FrameType.Data, round: 1, chunkId: n, area: Area.Memory, runs: [{ start: 0, count: payloadBytes / 4096 }], payload })
}
function idOf (raw: Uint8Array): number {
  const f = decodeFrame(raw)
  if (f.type !== FrameType.Data) throw new Error(`expected DATA, got ${FrameType[f.type]}`)
  return f.chunkId
}

/** Accepts lanes on b and hands them out in order. */
function acceptor (): { onLane: (lane: Lane) => void, next: () => Promise<Lane> } {
  const ready: Lane[] = []
  const waiting: Array<(l: Lane) => void> = []
  return {
    onLane: (lane) => { const w = waiting.shift(); if (w != null) w(lane); else ready.push(lane) },
    next: async () => await new Promise<Lane>(resolve => { const l = ready.shift(); if (l != null) resolve(l); else waiting.push(resolve) })
  }
}

/**
 * Runs the suite against `makePair`. `skip` names tests that do not apply to a transport, each
 * with the reason (reported as skipped, never silently passed).
 */
export function laneTransportCompliance (name: string, makePair: () => Promise<TransportPair>, skip: Record<string, string> = {}): void {
  const it = (title: string, fn: () => Promise<void>): void => {
    const why = skip[title]
    if (why != null) itVitest.skip(`${title} — not applicable: ${why}`, fn)
    else itVitest(title, fn)
  }
  describe(`LaneTransport compliance: ${name}`, () => {
    let pair: TransportPair | undefined
    afterEach(async () => { await pair?.close(); pair = undefined })

    const connected = async (opts: { allowed?: boolean, maxFrameSize?: number } = {}): Promise<{ mine: Lane, theirs: () => Promise<Lane> }> => {
      pair = await makePair()
      const acc = acceptor()
      const a = pair.a.peerId
      await pair.b.handle(PROTOCOL, (lane) => { acc.onLane(lane) }, { isAllowed: p => (opts.allowed ?? true) && p === a, ...(opts.maxFrameSize != null ? { maxFrameSize: opts.maxFrameSize } : {}) })
      const [mine] = await pair.a.openLanes(pair.bAddress, PROTOCOL, 1)
      return { mine: mine!, theirs: acc.next }
    }

    it('delivers frames whole, in order, byte-exact', async () => {
      const { mine, theirs } = await connected()
      const sizes = [4096, 8192, 65536, 4096, 1 * MiB]
      const n = 300
      const sending = (async () => { for (let i = 0; i < n; i++) await mine.send(frame(i, sizes[i % sizes.length])) })()
      const lane = await theirs()
      let i = 0
      for await (const raw of lane) {
        expect(idOf(raw)).toBe(i)
        expect(raw.byteLength).toBe(frame(i, sizes[i % sizes.length]).byteLength)
        expect(Buffer.from(raw).equals(Buffer.from(frame(i, sizes[i % sizes.length])))).toBe(true)
        if (++i === n) break
      }
      await sending
      expect(i).toBe(n)
    })

    it('carries a frame at the size limit, and a frame over the receiver\'s limit fails that lane', async () => {
      const { mine, theirs } = await connected({ maxFrameSize: 2 * MiB + 4096 })
      await mine.send(frame(1, 2 * MiB))
      const lane = await theirs()
      const it = lane[Symbol.asyncIterator]()
      const first = await it.next()
      expect(first.done).toBe(false)
      expect(idOf(first.value as Uint8Array)).toBe(1)
      void mine.send(frame(2, 4 * MiB)).catch(() => {})
      await expect(it.next()).rejects.toThrow()
    })

    it('applies back-pressure: sends stop resolving while the receiver does not read, and resume when it does', async () => {
      const { mine, theirs } = await connected()
      const total = 256
      let resolved = 0
      const sending = (async () => { for (let i = 0; i < total; i++) { await mine.send(frame(i, 1 * MiB)); resolved++ } })()
      const lane = await theirs()
      await new Promise(resolve => setTimeout(resolve, 1500))
      // 256 MiB were offered; a bounded window must have held most of them back.
      expect(resolved).toBeLessThan(total)
      let got = 0
      for await (const raw of lane) { expect(idOf(raw)).toBe(got); if (++got === total) break }
      await sending
      expect(resolved).toBe(total)
    })

    it('close() delivers every frame sent before it, then the peer\'s iterator ends', async () => {
      const { mine, theirs } = await connected()
      for (let i = 0; i < 20; i++) await mine.send(frame(i))
      await mine.close()
      const got: number[] = []
      for await (const raw of await theirs()) got.push(idOf(raw))
      expect(got).toEqual(Array.from({ length: 20 }, (_, i) => i))
    })

    it('abort() fails the lane on both sides: later sends reject, the peer\'s iterator throws', async () => {
      const { mine, theirs } = await connected()
      await mine.send(frame(0))
      const lane = await theirs()
      const it = lane[Symbol.asyncIterator]()
      expect(idOf((await it.next()).value as Uint8Array)).toBe(0)
      mine.abort()
      await expect(mine.send(frame(1))).rejects.toBeInstanceOf(Error)
      await expect((async () => { while (!(await it.next()).done); throw new Error('ended without an error') })()).rejects.toThrow()
      await expect((async () => { for (let i = 0; i < 64; i++) await lane.send(frame(i)) })()).rejects.toBeInstanceOf(LaneClosedError)
    })

    it('owns a sent buffer only until send resolves: changing it afterwards changes nothing the peer gets', async () => {
      const { mine, theirs } = await connected()
      const buf = frame(7, 65536)
      const copy = Buffer.from(buf)
      await mine.send(buf)
      buf.fill(0xee)
      const parts = [frame(8, 4096).subarray(0, 10), frame(8, 4096).subarray(10)]
      await mine.send(parts)
      parts[0]!.fill(0xee)
      const it = (await theirs())[Symbol.asyncIterator]()
      expect(Buffer.from((await it.next()).value as Uint8Array).equals(copy)).toBe(true)
      expect(idOf((await it.next()).value as Uint8Array)).toBe(8)
    })

    it('a refused peer\'s lane reads one ABORT (ERR_UNAUTHORIZED_PEER) and ends', async () => {
      const { mine } = await connected({ allowed: false })
      const frames: Uint8Array[] = []
      try { for await (const raw of mine) frames.push(raw) } catch {}
      expect(frames.length).toBe(1)
      const f = decodeFrame(frames[0]!)
      expect(f.type === FrameType.Abort && f.code).toBe('ERR_UNAUTHORIZED_PEER')
    })

    it('lanes are independent: 8 lanes at once each carry their own frames', async () => {
      pair = await makePair()
      const acc = acceptor()
      await pair.b.handle(PROTOCOL, (lane) => { acc.onLane(lane) }, { isAllowed: () => true })
      const lanes = await pair.a.openLanes(pair.bAddress, PROTOCOL, 8)
      expect(lanes.length).toBe(8)
      await Promise.all(lanes.map(async (l, k) => { for (let i = 0; i < 10; i++) await l.send(frame(k * 1000 + i)) }))
      const seen = new Map<number, number[]>()
      for (let k = 0; k < 8; k++) {
        const lane = await acc.next()
        const ids: number[] = []
        for await (const raw of lane) { ids.push(idOf(raw)); if (ids.length === 10) break }
        seen.set(Math.floor(ids[0]! / 1000), ids)
      }
      for (let k = 0; k < 8; k++) expect(seen.get(k)).toEqual(Array.from({ length: 10 }, (_, i) => k * 1000 + i))
    })

    it('opening lanes to a peer that does not speak the protocol rejects', async () => {
      pair = await makePair()
      await expect(pair.a.openLanes(pair.bAddress, '/shoal/nobody/1.0.0', 1)).rejects.toBeInstanceOf(Error)
    })
  })
}
