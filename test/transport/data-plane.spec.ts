import { encodeFrameBytes, FrameType } from '@shoal/core'
import type { Lane, LaneTransport } from '@shoal/core'
import { createDataPlane, loadOrCreateIdentity, parseEndpoint, peerIdOf } from '@shoal/libp2p'
import type { DataPlane } from '@shoal/libp2p'
import { tempDir } from '../fixtures/temp.js'
import { laneTransportCompliance } from './compliance.js'

// The data plane's lanes (worker-owned TLS connections) as generic lanes: `holdData: false`, so a
// lane without a session's sink hands DATA frames to its reader like every other Lane. The plane
// has no protocol names (one ALPN) and accepts on ports it picks; this adapter maps the seam's
// openLanes/handle onto dial/onLane, and applies `isAllowed` and `maxFrameSize` as the node does.
laneTransportCompliance('data plane (data worker TLS lanes)', async () => {
  const dirs = [tempDir('dp-cmp-a'), tempDir('dp-cmp-b')]
  const [keyA, keyB] = await Promise.all(dirs.map(async d => await loadOrCreateIdentity(d.path)))
  const [idA, idB] = [peerIdOf(keyA!), peerIdOf(keyB!)]
  const planes: DataPlane[] = []
  const a = await createDataPlane({ workers: 2, privateKey: keyA!, listen: ['127.0.0.1'], onLane: (l) => { l.abort() }, holdData: false })
  planes.push(a)
  let b: DataPlane | undefined
  const transportA: LaneTransport = {
    peerId: idA,
    async openLanes (address, _protocol, count) {
      const { host, port } = parseEndpoint(address)
      return await Promise.all(Array.from({ length: count }, async (_, i) => await a.dial({ peer: idB, host, port, worker: i % a.size })))
    },
    async handle () { throw new Error('a only opens lanes in this suite') }
  }
  const transportB: LaneTransport = {
    peerId: idB,
    async openLanes () { throw new Error('b only accepts lanes in this suite') },
    async handle (_protocol, onLane, opts) {
      b = await createDataPlane({
        workers: 2, privateKey: keyB!, listen: ['127.0.0.1'], holdData: false,
        ...(opts.maxFrameSize != null ? { maxFrameSize: opts.maxFrameSize } : {}),
        onLane: (lane: Lane, info) => {
          if (!opts.isAllowed(info.peerId)) {
            void lane.send(encodeFrameBytes({ type: FrameType.Abort, code: 'ERR_UNAUTHORIZED_PEER', message: 'not on the allow-list' })).then(async () => { await lane.close() }, () => {})
            return
          }
          onLane(lane, info)
        }
      })
      planes.push(b)
    }
  }
  return {
    a: transportA,
    b: transportB,
    get bAddress () {
      const e = b?.endpoints()[0]
      if (e == null) throw new Error('b is not accepting lanes yet')
      return e
    },
    close: async () => {
      await Promise.all(planes.map(async p => { await p.stop() }))
      for (const d of dirs) d.cleanup()
    }
  }
}, {
  'opening lanes to a peer that does not speak the protocol rejects': 'a data plane carries one protocol (ALPN shoal-data/1), so there is no protocol to refuse; a peer without data workers announces no endpoint at all'
})
