import { createHash, randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import { startNode } from '../fixtures/nodes.js'
import { tempDir } from '../fixtures/temp.js'

const BS = 256 * 1024

describe('replica volumes served over libp2p', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  it('an allow-listed peer gets the summary and verified blocks; another peer is refused', async () => {
    const replica = await startNode('127.0.0.1', cleanups)
    const reader = await startNode('127.0.0.2', cleanups)
    const stranger = await startNode('127.0.0.3', cleanups)
    replica.allowPeer(reader.peerId)
    const dir = tempDir('volume')
    cleanups.push(dir.cleanup)
    const data = randomBytes(16 * BS)
    writeFileSync(`${dir.path}/v.img`, data)
    expect(await replica.importVolume('base', `${dir.path}/v.img`)).toEqual({ id: 'base', blockSize: BS, blockCount: 16, held: 16 })

    const client = await reader.blockClient(replica.addrs()[0]!)
    const summary = await client.summary('base')
    expect(summary.have.count()).toBe(16)
    const want = [3, 7, 15].map(i => createHash('sha256').update(data.subarray(i * BS, (i + 1) * BS)).digest())
    const got = await client.fetch('base', want)
    expect(got.map(g => 'data' in g && Buffer.from(g.data).equals(data.subarray([3, 7, 15][got.indexOf(g)]! * BS, ([3, 7, 15][got.indexOf(g)]! + 1) * BS)))).toEqual([true, true, true])
    await client.lane.close()

    const refused = await stranger.blockClient(replica.addrs()[0]!)
    await expect(refused.summary('base')).rejects.toMatchObject({ name: 'RemoteAbortError', remoteCode: 'ERR_UNAUTHORIZED_PEER' })
  })
})
