import { createHash, randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import {
  BlockClient, BlockHashMismatchError, BlockStore, createMemoryLanePair, decodeFrame, encodeFrameBytes, FrameType, serveBlocks
} from '@shoal/core'
import { tempDir } from '../fixtures/temp.js'

const BS = 64 * 1024
const sha = (b: Uint8Array): Uint8Array => createHash('sha256').update(b).digest()

describe('block store and block service', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  async function volume (blocks = 8): Promise<{ dir: string, data: Buffer, store: BlockStore }> {
    const dir = tempDir('vol')
    cleanups.push(dir.cleanup)
    const data = randomBytes(blocks * BS)
    data.copy(data, 3 * BS, 1 * BS, 2 * BS) // block 3 = block 1: same content, same hash
    writeFileSync(`${dir.path}/vol.img`, data)
    const store = await BlockStore.import(dir.path, 'vol1', `${dir.path}/vol.img`, BS)
    cleanups.push(async () => { await store.close().catch(() => {}) })
    return { dir: dir.path, data, store }
  }

  it('imports a volume, serves its blocks by hash, and keeps what it holds across a reopen', async () => {
    const { dir, data, store } = await volume()
    expect(store.blockCount).toBe(8)
    expect(store.held()).toBe(8)
    expect(Buffer.from(await store.read(5)).equals(data.subarray(5 * BS, 6 * BS))).toBe(true)
    expect(store.indexOf(sha(data.subarray(3 * BS, 4 * BS)))).toBe(1) // dedup: first block with that hash
    await store.close()
    const again = await BlockStore.open(dir, 'vol1')
    cleanups.push(async () => { await again.close() })
    expect(again.held()).toBe(8)
  })

  it('refuses to store a block whose bytes do not match its hash, and stores nothing', async () => {
    const { dir, data } = await volume()
    const hashes = new Uint8Array(8 * 32)
    for (let i = 0; i < 8; i++) hashes.set(sha(data.subarray(i * BS, (i + 1) * BS)), i * 32)
    const replica = await BlockStore.create(dir, 'vol2', BS, hashes)
    cleanups.push(async () => { await replica.close() })
    const bad = Buffer.from(data.subarray(2 * BS, 3 * BS)); bad[100] ^= 1
    await expect(replica.write(2, bad)).rejects.toBeInstanceOf(BlockHashMismatchError)
    expect(replica.has(2)).toBe(false)
    await replica.write(2, data.subarray(2 * BS, 3 * BS))
    expect(replica.has(2)).toBe(true)
  })

  it('a client gets a summary, blocks, missing answers, and detects a replica that serves corrupt bytes', async () => {
    const { dir, data, store } = await volume()
    const hashes = new Uint8Array(8 * 32)
    for (let i = 0; i < 8; i++) hashes.set(sha(data.subarray(i * BS, (i + 1) * BS)), i * 32)
    const partial = await BlockStore.create(dir, 'part', BS, hashes)
    cleanups.push(async () => { await partial.close() })
    for (const i of [0, 2, 4]) await partial.write(i, data.subarray(i * BS, (i + 1) * BS))

    const [a, b] = createMemoryLanePair()
    void serveBlocks(b, v => v === 'part' ? partial : v === 'vol1' ? store : undefined)
    const client = new BlockClient(a)
    const s = await client.summary('part')
    expect([...s.have.runs()]).toEqual([{ start: 0, count: 1 }, { start: 2, count: 1 }, { start: 4, count: 1 }])
    const got = await client.fetch('part', [partial.hashOf(2), partial.hashOf(3)])
    expect('data' in got[0]! && Buffer.from(got[0].data).equals(data.subarray(2 * BS, 3 * BS))).toBe(true)
    expect(got[1]).toMatchObject({ missing: true })

    // A replica whose disk returns wrong bytes: the client never hands them out as data.
    const read = store.read.bind(store)
    store.read = async (i: number) => { const x = Buffer.from(await read(i)); x[0] ^= 0xff; return x }
    const corrupt = await client.fetch('vol1', [store.hashOf(6)])
    expect(corrupt[0]).toMatchObject({ corrupt: true })
    expect('data' in corrupt[0]!).toBe(false)
    store.read = read
    await a.close()
  })

  it('an unknown volume or a malformed request ends the lane with a typed ABORT', async () => {
    const { store } = await volume(2)
    const [a, b] = createMemoryLanePair()
    const served = serveBlocks(b, v => v === 'vol1' ? store : undefined)
    await expect(new BlockClient(a).summary('nope')).rejects.toMatchObject({ name: 'RemoteAbortError', remoteCode: 'ERR_UNKNOWN_VOLUME' })
    await served
    const [c, d] = createMemoryLanePair()
    void serveBlocks(d, () => store)
    const it = c[Symbol.asyncIterator]()
    await c.send(encodeFrameBytes({ type: FrameType.Commit }))
    expect(decodeFrame((await it.next()).value as Uint8Array)).toMatchObject({ type: FrameType.Abort, code: 'ERR_PROTOCOL' })
  })
})
