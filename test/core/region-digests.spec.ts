import { randomBytes } from 'node:crypto'
import { openSync, writeSync, closeSync, ftruncateSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import { createWorkerPool, digestFile, RegionDigests } from '@shoal/core'
import { tempDir } from '../fixtures/temp.js'

describe('region digests kept up to date while a file is written', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  it('equals a full digest of the file after writes before, during and after background passes', async () => {
    const dir = tempDir('regions', '/dev/shm')
    cleanups.push(dir.cleanup)
    const pool = createWorkerPool({ workers: 2 })
    cleanups.push(async () => { await pool.stop() })
    const path = `${dir.path}/f`
    const size = 5 * 1024 * 1024 + 12345 // a partial last region
    const fd = openSync(path, 'w+')
    cleanups.push(() => { closeSync(fd) })
    ftruncateSync(fd, size)
    const d = new RegionDigests(pool, path, size)
    // Untouched: the digest of zeros, without reading anything.
    expect(Buffer.from(await new RegionDigests(pool, path, size).digest()).equals(Buffer.from(await digestFile(pool, path, size)))).toBe(true)
    d.start()
    const write = (pos: number, len: number): void => {
      d.touch(pos, pos + len)
      writeSync(fd, randomBytes(len), 0, len, pos)
      d.touch(pos, pos + len)
    }
    for (let i = 0; i < 40; i++) {
      write(Math.floor(Math.random() * (size - 70000)), 1 + Math.floor(Math.random() * 70000))
      if (i % 10 === 0) await new Promise(resolve => setTimeout(resolve, 250)) // let a background pass run
    }
    write(size - 100, 100)
    const incremental = await d.digest()
    expect(Buffer.from(incremental).equals(Buffer.from(await digestFile(pool, path, size)))).toBe(true)
  })
})
