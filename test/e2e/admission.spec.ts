import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import { decodeFrame, encodeFrame, FrameType } from '@shoal/core'
import type { Frame, Lane } from '@shoal/core'
import { createShoalLibp2p, loadOrCreateIdentity, openLanes } from '@shoal/libp2p'
import { MIGRATE_PROTOCOL, resolvePeer } from '@shoal/node'
import type { ShoalNode } from '@shoal/node'
import { startNode } from '../fixtures/nodes.js'
import { tempDir } from '../fixtures/temp.js'

const MiB = 1024 * 1024
const GiB = 1024 * MiB

/** A HELLO as a source (or a hostile peer) sends it. */
function hello (image: string, memorySize: number, cacheSize: number, id = 1): Frame {
  return {
    type: FrameType.Hello, sessionId: new Uint8Array(16).fill(id), image, pageSize: 4096, memorySize, blockSize: 256 * 1024, cacheSize, lanes: 1,
    driver: 'synthetic', driverConfig: '{}'
  }
}

/** A bare libp2p peer that speaks the migrate protocol by hand. */
async function rawPeer (cleanups: Array<() => unknown>): Promise<{ peerId: string, open: (to: ShoalNode) => Promise<Lane> }> {
  const id = tempDir('raw-peer')
  cleanups.push(id.cleanup)
  const libp2p = await createShoalLibp2p({ privateKey: await loadOrCreateIdentity(id.path), listen: ['/ip4/127.0.0.3/tcp/0'] })
  await libp2p.start()
  cleanups.push(async () => { await libp2p.stop() })
  return {
    peerId: libp2p.peerId.toString(),
    open: async (to) => {
      const [lane] = await openLanes(libp2p, resolvePeer(to.addrs()[0]!), MIGRATE_PROTOCOL, 1)
      return lane!
    }
  }
}

/** The first frame the destination answers a HELLO with. */
async function answerTo (lane: Lane, f: Frame): Promise<Frame> {
  await lane.send(encodeFrame(f))
  const it = lane[Symbol.asyncIterator]()
  const r = await it.next()
  if (r.done === true) throw new Error('lane closed without an answer')
  return decodeFrame(r.value)
}

/** Every file under a directory (staging leaves files; a refused HELLO must leave none). */
function filesUnder (dir: string): string[] {
  if (!existsSync(dir)) return []
  return readdirSync(dir, { recursive: true, withFileTypes: true }).filter(d => d.isFile()).map(d => `${d.parentPath}/${d.name}`)
}

describe('admission control: a HELLO is checked before anything is staged', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  /** A source, and a destination whose data and shm dirs sit on one small tmpfs of `sizeMiB`. */
  const pairOnSmallFs = async (sizeMiB: number, spaceMarginBytes: number): Promise<{ mnt: { path: string }, src: ShoalNode, dst: ShoalNode }> => {
    const mnt = tempDir('small-fs')
    cleanups.push(mnt.cleanup)
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m`, 'tmpfs', mnt.path])
    cleanups.push(() => { execFileSync('umount', ['-l', mnt.path]) })
    mkdirSync(`${mnt.path}/data`)
    mkdirSync(`${mnt.path}/shm`)
    const src = await startNode('127.0.0.1', cleanups)
    const dst = await startNode('127.0.0.2', cleanups, { dataDir: `${mnt.path}/data`, shmDir: `${mnt.path}/shm`, admission: { spaceMarginBytes } })
    dst.allowPeer(src.peerId)
    return { mnt, src, dst }
  }

  it('refuses absurd sizes from an allow-listed peer with a typed ABORT, and stages nothing', async () => {
    const data = tempDir('admission')
    const shm = tempDir('admission-shm', '/dev/shm')
    cleanups.push(data.cleanup, shm.cleanup)
    const dst = await startNode('127.0.0.2', cleanups, { dataDir: data.path, shmDir: shm.path, admission: { maxCacheBytes: 64 * GiB } })
    const hostile = await rawPeer(cleanups)
    dst.allowPeer(hostile.peerId)
    for (const [mem, cache, code] of [[512 * GiB, 0, 'ERR_IMAGE_TOO_LARGE'], [4 * MiB, 1024 * GiB, 'ERR_IMAGE_TOO_LARGE']] as const) {
      const answer = await answerTo(await hostile.open(dst), hello('huge', mem, cache))
      expect(answer.type).toBe(FrameType.Abort)
      expect(answer.type === FrameType.Abort && answer.code).toBe(code)
      expect(answer.type === FrameType.Abort && answer.message).toMatch(/exceeds this node's maximum/)
    }
    // Nothing was staged: no incoming files, no image.
    const status = await dst.status()
    expect(status.images).toEqual([])
    expect(filesUnder(`${data.path}/incoming`)).toEqual([])
    expect(filesUnder(shm.path)).toEqual([])
  })

  it('refuses an image that does not fit in the free space, naming the directory (ERR_NO_SPACE), before any byte moves', async () => {
    const { mnt, src, dst } = await pairOnSmallFs(64, 4 * MiB)
    await src.createImage({ name: 'big', memorySize: 48 * MiB, cacheSize: 32 * MiB })
    await src.startImage('big')
    const err = await src.migrate('big', dst.addrs()[0]!).then(() => undefined, (e: Error & { code?: string }) => e)
    expect(err?.code).toBe('ERR_NO_SPACE')
    expect(err?.message).toContain(mnt.path)
    expect(err?.message).not.toMatch(/no usable lane/)
    expect((await src.status()).images[0]?.state).toBe('running')
    expect(filesUnder(`${mnt.path}/data/incoming`)).toEqual([])
    expect(filesUnder(`${mnt.path}/shm`)).toEqual([])
  })

  it('a disk that fills up during the copy ends the migration as ERR_NO_SPACE on both sides; the source keeps running', async () => {
    const { mnt, src, dst } = await pairOnSmallFs(96, 1 * MiB)
    await src.createImage({ name: 'fill', memorySize: 16 * MiB, cacheSize: 64 * MiB, fill: 'random' })
    await src.startImage('fill')
    // Admitted (80 MiB fit in 96 MiB), then something else on the host takes the space.
    let filled = false
    const err = await src.migrate('fill', dst.addrs()[0]!, {
      maxRate: 16 * MiB,
      onProgress: (p) => {
        if (!filled && p.bytes > 0) {
          filled = true
          try { execFileSync('fallocate', ['-l', '60m', `${mnt.path}/hog`]) } catch {}
        }
      }
    }).then(() => undefined, (e: Error & { code?: string }) => e)
    expect(filled).toBe(true)
    expect(err?.code).toBe('ERR_NO_SPACE')
    expect(err?.message).toMatch(/no space left writing the incoming/)
    expect((await src.status()).images[0]?.state).toBe('running')
    expect((await dst.status()).images).toEqual([])
    rmSync(`${mnt.path}/hog`, { force: true })
    // The destination discards its staging once its session has ended (after its ABORT went out).
    await expect.poll(() => [...filesUnder(`${mnt.path}/data/incoming`), ...filesUnder(`${mnt.path}/shm`)], { timeout: 10_000 }).toEqual([])
  })

  it('reserves the image name at HELLO: a second migration of the same name is refused at once (ERR_IMAGE_EXISTS)', async () => {
    const dst = await startNode('127.0.0.2', cleanups)
    const hostile = await rawPeer(cleanups)
    dst.allowPeer(hostile.peerId)
    const first = await hostile.open(dst)
    expect((await answerTo(first, hello('same', 4 * MiB, 4 * MiB, 1))).type).toBe(FrameType.Accept)
    expect((await dst.status()).incoming).toBe(1)
    const second = await answerTo(await hostile.open(dst), hello('same', 4 * MiB, 4 * MiB, 2))
    expect(second.type === FrameType.Abort && second.code).toBe('ERR_IMAGE_EXISTS')
    // The node itself cannot create an image of that name meanwhile either.
    await expect(dst.createImage({ name: 'same', memorySize: 4 * MiB, cacheSize: 0 })).rejects.toMatchObject({ code: 'ERR_IMAGE_EXISTS' })
    first.abort()
  })

  it('caps concurrent incoming migrations per peer (ERR_BUSY) and frees the slot when one ends', async () => {
    const dst = await startNode('127.0.0.2', cleanups, { admission: { maxIncomingPerPeer: 1 } })
    const hostile = await rawPeer(cleanups)
    dst.allowPeer(hostile.peerId)
    const first = await hostile.open(dst)
    expect((await answerTo(first, hello('a', 4 * MiB, 0, 1))).type).toBe(FrameType.Accept)
    const busy = await answerTo(await hostile.open(dst), hello('b', 4 * MiB, 0, 2))
    expect(busy.type === FrameType.Abort && busy.code).toBe('ERR_BUSY')
    first.abort()
    // The aborted session releases its slot (the destination notices the lane is gone).
    await expect.poll(async () => (await dst.status()).incoming, { timeout: 10_000 }).toBe(0)
    const again = await answerTo(await hostile.open(dst), hello('b', 4 * MiB, 0, 3))
    expect(again.type).toBe(FrameType.Accept)
  })
})
