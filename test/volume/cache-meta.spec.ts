import { createHash, randomBytes } from 'node:crypto'
import { closeSync, openSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { Bitmap, CacheMeta, CacheMetaError, cacheMetaPaths, InvalidArgumentError } from '@shoal/core'
import { tempDir } from '../fixtures/temp.js'

const BS = 4096
const N = 16

describe('cache metadata', () => {
  const cleanups: Array<() => void> = []
  afterEach(() => { for (const c of cleanups.splice(0)) c() })

  function cacheFile (): { path: string, data: Buffer, hashes: Buffer } {
    const dir = tempDir('cachemeta')
    cleanups.push(dir.cleanup)
    const data = randomBytes(N * BS)
    const path = join(dir.path, 'cache.img')
    writeFileSync(path, data)
    const hashes = Buffer.concat(Array.from({ length: N }, (_, i) => createHash('sha256').update(data.subarray(i * BS, (i + 1) * BS)).digest()))
    return { path, data, hashes }
  }

  it('keeps hashes, dirty and hot marks on disk across reopen (a restart)', () => {
    const { path, hashes } = cacheFile()
    const dirty = new Bitmap(N); dirty.set(2)
    const meta = CacheMeta.create(path, { volume: 'base', blockSize: BS, hashes, dirty })
    meta.markDirty(5, 7)
    meta.markHot(9)
    // Another process (the workload) marks block 12 with a one-byte positional write.
    const fd = openSync(cacheMetaPaths(path).dirty, 'r+')
    writeSync(fd, Buffer.from([1]), 0, 1, 12)
    closeSync(fd)
    const again = CacheMeta.open(path)
    expect(again.volume).toBe('base')
    expect(Buffer.from(again.hashOf(3)).equals(hashes.subarray(96, 128))).toBe(true)
    expect([...again.dirty().runs()]).toEqual([{ start: 2, count: 1 }, { start: 5, count: 2 }, { start: 12, count: 1 }])
    expect([...again.hot().runs()]).toEqual([{ start: 9, count: 1 }])
    again.clearHot()
    expect(CacheMeta.open(path).hot().count()).toBe(0)
  })

  it('rescan rebuilds the dirty marks from the bytes after a writer that did not mark', async () => {
    const { path, data, hashes } = cacheFile()
    const meta = CacheMeta.create(path, { volume: 'base', blockSize: BS, hashes })
    meta.markDirty(1) // marked, but still identical to the volume: rescan makes it clean again
    const fd = openSync(path, 'r+')
    writeSync(fd, Buffer.alloc(BS, 7), 0, BS, 4 * BS) // written without a mark
    closeSync(fd)
    expect(await meta.rescan()).toEqual({ clean: N - 1, dirty: 1 })
    expect([...CacheMeta.open(path).dirty().runs()]).toEqual([{ start: 4, count: 1 }])
    void data
  })

  it('refuses missing or inconsistent metadata and bad ranges, changing nothing', () => {
    const { path, hashes } = cacheFile()
    expect(() => CacheMeta.open(path)).toThrow(CacheMetaError)
    expect(CacheMeta.exists(path)).toBe(false)
    expect(() => CacheMeta.create(path, { volume: '../x', blockSize: BS, hashes })).toThrow(InvalidArgumentError)
    expect(() => CacheMeta.create(path, { volume: 'v', blockSize: BS, hashes: hashes.subarray(0, 33) })).toThrow(InvalidArgumentError)
    expect(CacheMeta.exists(path)).toBe(false)
    const meta = CacheMeta.create(path, { volume: 'v', blockSize: BS, hashes })
    expect(() => meta.markDirty(15, 17)).toThrow(InvalidArgumentError)
    expect(meta.dirty().count()).toBe(0)
    writeFileSync(cacheMetaPaths(path).hot, Buffer.alloc(3))
    expect(() => CacheMeta.open(path)).toThrow(/hot.*3 bytes/)
    writeFileSync(cacheMetaPaths(path).hot, Buffer.alloc(N))
    writeFileSync(path, Buffer.alloc(BS))
    expect(() => CacheMeta.open(path)).toThrow(/metadata describes 16 blocks/)
    CacheMeta.remove(path)
    expect(CacheMeta.exists(path)).toBe(false)
  })
})
