import { describe, expect, it } from 'vitest'
import { ControlLink, createMemoryLanePair, decodeFrame, FrameType, RemoteAbortError, TimeoutError } from '@shoal/core'
import type { Frame, Lane } from '@shoal/core'

const d32 = new Uint8Array(32)
const verify: Frame = { type: FrameType.Verify, memoryDigest: d32, cacheDigest: d32 }

/** Answers every VERIFY that arrives on `lane` (after `seen` records it) on the same lane. */
function answering (lane: Lane, seen: Frame[], link: () => ControlLink): void {
  void (async () => {
    for await (const raw of lane) {
      const f = decodeFrame(raw)
      seen.push(f)
      if (f.type === FrameType.Verify) link().deliver({ type: FrameType.VerifyResult, ok: true, memoryDigest: d32, cacheDigest: d32 })
    }
  })()
}

describe('control link', () => {
  it('re-sends a request and the kept state on a data lane when the control lane stays silent', async () => {
    const [ctl, ctlPeer] = createMemoryLanePair({ id: 'ctl' })
    const [data, dataPeer] = createMemoryLanePair({ id: 'data' })
    const link = new ControlLink(ctl, () => [data])
    const silent: Frame[] = []
    void (async () => { for await (const raw of ctlPeer) silent.push(decodeFrame(raw)) })() // a dead path: nothing comes back
    const seen: Frame[] = []
    answering(dataPeer, seen, () => link)
    await link.send({ type: FrameType.DeviceState, state: new Uint8Array([7]) }, true)
    const answer = await link.request(verify, FrameType.VerifyResult, { attemptMs: 50, totalMs: 5000 })
    expect(answer.ok).toBe(true)
    expect(silent.map(f => f.type)).toEqual([FrameType.DeviceState, FrameType.Verify])
    expect(seen.map(f => f.type)).toEqual([FrameType.DeviceState, FrameType.Verify]) // state replayed first
    expect(link.switches).toEqual(['data:a'])
  })

  it('moves at once when the control lane is known lost, and fails on a remote ABORT from any lane', async () => {
    const [ctl] = createMemoryLanePair({ id: 'ctl' })
    const [data, dataPeer] = createMemoryLanePair({ id: 'data' })
    const link = new ControlLink(ctl, () => [data])
    ctl.abort()
    link.controlLost()
    const got: Frame[] = []
    void (async () => { for await (const raw of dataPeer) got.push(decodeFrame(raw)) })()
    const pending = link.request({ type: FrameType.Commit }, FrameType.Committed, { attemptMs: 1000, totalMs: 5000 })
    await new Promise(resolve => setTimeout(resolve, 20))
    expect(got.map(f => f.type)).toEqual([FrameType.Commit])
    link.deliver({ type: FrameType.Abort, code: 'ERR_WORKLOAD', message: 'arrival check failed' })
    await expect(pending).rejects.toBeInstanceOf(RemoteAbortError)
  })

  it('gives up with a timeout when no lane answers', async () => {
    const [ctl, ctlPeer] = createMemoryLanePair({ id: 'ctl' })
    void (async () => { for await (const raw of ctlPeer) void raw })()
    const link = new ControlLink(ctl, () => [])
    await expect(link.request(verify, FrameType.VerifyResult, { attemptMs: 20, totalMs: 120 })).rejects.toBeInstanceOf(TimeoutError)
  })
})
