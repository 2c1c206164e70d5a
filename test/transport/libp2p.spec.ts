import { createLibp2pLaneTransport, createShoalLibp2p, loadOrCreateIdentity } from '@shoal/libp2p'
import { tempDir } from '../fixtures/temp.js'
import { laneTransportCompliance } from './compliance.js'

// Each encrypter pinned on both peers, so each is the one negotiated (the default offers both).
for (const [encrypter, label] of [['noise', 'Noise'], ['tls', 'TLS 1.3']] as const) {
  laneTransportCompliance(`libp2p (TCP + ${label} + Yamux) on loopback`, async () => {
    const dirs = [tempDir('tp-a'), tempDir('tp-b')]
    const [na, nb] = await Promise.all(['127.0.0.1', '127.0.0.2'].map(async (ip, i) =>
      await createShoalLibp2p({ privateKey: await loadOrCreateIdentity(dirs[i]!.path), listen: [`/ip4/${ip}/tcp/0`], encrypters: [encrypter] })))
    await na!.start()
    await nb!.start()
    return {
      a: createLibp2pLaneTransport(na!),
      b: createLibp2pLaneTransport(nb!),
      bAddress: nb!.getMultiaddrs()[0]!.toString(),
      close: async () => { await na!.stop(); await nb!.stop(); for (const d of dirs) d.cleanup() }
    }
  })
}
