import { randomBytes } from 'node:crypto'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { KeyedQueue } from '@shoal/node'
import type { ShoalNode } from '@shoal/node'
import { afterEach, describe, expect, it } from 'vitest'
import { startNode } from '../fixtures/nodes.js'
import { tempDir } from '../fixtures/temp.js'

const MiB = 2 ** 20

/** Pids of the processes whose command line names `path` (a node's workloads name their image files). */
function processesUsing (path: string): number[] {
  return readdirSync('/proc').filter(p => /^\d+$/.test(p)).filter(p => {
    try { return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(path) } catch { return false }
  }).map(Number)
}

const shmDirOf = async (n: ShoalNode, image: string): Promise<string> => {
  const rec = (await n.status()).images.find(i => i.spec.name === image)!
  return rec.spec.memory.path
}

describe('one operation at a time per image', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  it('KeyedQueue runs the operations on one name in order, whatever their outcome, and different names side by side', async () => {
    const ops = new KeyedQueue()
    const log: string[] = []
    const slow = (tag: string, ms: number, fail = false) => async () => {
      log.push(`${tag}+`)
      await new Promise(resolve => setTimeout(resolve, ms))
      log.push(`${tag}-`)
      if (fail) throw new Error(tag)
      return tag
    }
    const r = await Promise.allSettled([ops.run('a', slow('a1', 50, true)), ops.run('a', slow('a2', 10)), ops.run('b', slow('b1', 20))])
    expect(r.map(x => x.status)).toEqual(['rejected', 'fulfilled', 'fulfilled'])
    expect(log).toEqual(['a1+', 'b1+', 'b1-', 'a1-', 'a2+', 'a2-'])
  })

  it('two starts of one stopped image launch one workload; a remove during a start waits and leaves no process behind', async () => {
    const n = await startNode('127.0.0.1', cleanups)
    await n.createImage({ name: 'a', memorySize: 1 * MiB, cacheSize: 0 })
    const memory = await shmDirOf(n, 'a')
    const [s1, s2] = await Promise.all([n.startImage('a'), n.startImage('a')])
    expect(s1.state).toBe('running')
    expect(s2.state).toBe('running')
    const pids = processesUsing(memory)
    expect(pids).toHaveLength(1)
    expect((await n.status()).images.find(i => i.spec.name === 'a')?.pid).toBe(pids[0])
    await n.removeImage('a')
    expect(processesUsing(memory)).toEqual([])

    await n.createImage({ name: 'b', memorySize: 1 * MiB, cacheSize: 0 })
    const memoryB = await shmDirOf(n, 'b')
    const [start, remove] = await Promise.allSettled([n.startImage('b'), n.removeImage('b')])
    // The start ran first and succeeded; the remove then stopped the workload and removed the image.
    expect(start.status).toBe('fulfilled')
    expect(remove.status).toBe('fulfilled')
    expect((await n.status()).images).toEqual([])
    expect(processesUsing(memoryB)).toEqual([])
  })

  it('two creates of one name: one image, the other told ERR_IMAGE_EXISTS', async () => {
    const n = await startNode('127.0.0.1', cleanups)
    const r = await Promise.allSettled([
      n.createImage({ name: 'c', memorySize: 4 * MiB, cacheSize: 0, fill: 'random' }),
      n.createImage({ name: 'c', memorySize: 2 * MiB, cacheSize: 0 })
    ])
    expect(r[0].status).toBe('fulfilled')
    expect(r[1].status).toBe('rejected')
    expect((r[1] as PromiseRejectedResult).reason.code).toBe('ERR_IMAGE_EXISTS')
    expect((await n.status()).images.map(i => [i.spec.name, i.spec.memory.size])).toEqual([['c', 4 * MiB]])
  })

  it('a start and a migration of one stopped image: the image ends up in one place, with one workload at most', async () => {
    const src = await startNode('127.0.0.1', cleanups)
    const dst = await startNode('127.0.0.2', cleanups)
    dst.allowPeer(src.peerId)
    await src.createImage({ name: 'm', memorySize: 4 * MiB, cacheSize: 1 * MiB })
    const memory = await shmDirOf(src, 'm')
    const [start, migrate] = await Promise.allSettled([src.startImage('m'), src.migrate('m', dst.addrs()[0]!, { lanes: 1 })])
    // The start came first: the migration moved a running image.
    expect(start.status).toBe('fulfilled')
    expect(migrate.status).toBe('fulfilled')
    expect((await src.status()).images).toEqual([])
    expect(processesUsing(memory)).toEqual([])
    const there = (await dst.status()).images.find(i => i.spec.name === 'm')!
    expect(there.state).toBe('running')
    // Its workload runs there (a standby process that took the image: its command line does not name it).
    expect(() => process.kill(there.pid!, 0)).not.toThrow()

    // The other order: the migration begins first, so the start is refused and the image arrives stopped.
    await dst.createImage({ name: 'n', memorySize: 4 * MiB, cacheSize: 0 })
    src.allowPeer(dst.peerId)
    const back = dst.migrate('n', src.addrs()[0]!, { lanes: 1 })
    const late = await dst.startImage('n').then(() => undefined, (e: Error & { code?: string }) => e)
    expect((await back).ok).toBe(true)
    expect(late?.code).toBe('ERR_IMAGE_STATE')
    expect((await dst.status()).images.find(i => i.spec.name === 'n')).toBeUndefined()
    expect((await src.status()).images.find(i => i.spec.name === 'n')?.state).toBe('stopped')
  })

  it('two imports of one volume id: one volume, the other told it exists; a remove right behind an import removes it whole', async () => {
    const data = tempDir('vol-node')
    cleanups.push(data.cleanup)
    const n = await startNode('127.0.0.1', cleanups, { dataDir: data.path })
    const dir = tempDir('vol-race')
    cleanups.push(dir.cleanup)
    const file = join(dir.path, 'v.img')
    writeFileSync(file, randomBytes(64 * 4096))
    const r = await Promise.allSettled([n.importVolume('v', file, 4096), n.importVolume('v', file, 4096)])
    expect(r.map(x => x.status)).toEqual(['fulfilled', 'rejected'])
    expect((r[1] as PromiseRejectedResult).reason.code).toBe('ERR_INVALID_ARGUMENT')
    expect((await n.status()).volumes.map(v => [v.id, v.blockCount])).toEqual([['v', 64]])
    await n.removeVolume('v')
    const [imp, rm] = await Promise.allSettled([n.importVolume('w', file, 4096), n.removeVolume('w')])
    expect(imp.status).toBe('fulfilled')
    expect(rm.status).toBe('fulfilled')
    expect((await n.status()).volumes).toEqual([])
    // Nothing of it is left in the node's volume directory.
    expect(readdirSync(join(data.path, 'volumes')).filter(f => f.startsWith('w'))).toEqual([])
  })
})
