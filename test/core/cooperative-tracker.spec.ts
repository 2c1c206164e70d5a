import { spawn } from 'node:child_process'
import { closeSync, openSync, readSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import { createCooperativeTracker, createWorkerPool, digestFile, DirtyMarks } from '@shoal/core'
import { initImage, workloadBinPath } from '@shoal/workload'
import { tempDir } from '../fixtures/temp.js'

const PAGE = 4096

describe('cooperative dirty tracker', () => {
  const cleanups: Array<() => void | Promise<void>> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  it('never misses a page the workload marked before the pause; rounds cost what changed; the digest stays exact', async () => {
    const dir = tempDir('coop', '/dev/shm')
    cleanups.push(dir.cleanup)
    const mem = `${dir.path}/mem`
    const size = 64 * 2 ** 20
    await initImage({ memoryPath: mem, memorySize: size, cachePath: `${dir.path}/cache`, cacheSize: 2 ** 20, fill: 'random' })
    DirtyMarks.create(`${mem}.marks`, size / PAGE)
    const pool = createWorkerPool({ workers: 2 })
    cleanups.push(async () => { await pool.stop() })
    // The real synthetic workload, writing 20k pages/s and marking them.
    const w = spawn(process.execPath, [workloadBinPath, 'run', '--memory-path', mem, '--cache-path', `${dir.path}/cache`, '--rate', '20000', '--record-rate', '0', '--marks', `${mem}.marks`], { stdio: ['ignore', 'pipe', 'inherit'] })
    cleanups.push(() => { w.kill('SIGKILL') })
    await new Promise<void>(resolve => w.stdout.once('data', () => { resolve() }))
    const tracker = createCooperativeTracker({ path: mem, size, unitSize: PAGE, marksPath: `${mem}.marks` }, pool)
    cleanups.push(async () => { await tracker.close() })
    const copy = Buffer.alloc(size) // what the destination holds
    const round = async (paused: boolean): Promise<{ units: number, digest: Uint8Array }> => {
      const { dirty, digest } = await tracker.scan({ paused, digest: true })
      const runs = [...dirty.runs(256)]
      const parts = await tracker.load(runs)
      for (const [k, r] of runs.entries()) Buffer.from(parts[k]!).copy(copy, r.start * PAGE)
      return { units: dirty.count(), digest: digest! }
    }
    const first = await round(false)
    expect(first.units).toBe(size / PAGE) // random content: every page is sent once
    const later: number[] = []
    for (let i = 0; i < 6; i++) {
      await new Promise(resolve => setTimeout(resolve, 100))
      later.push((await round(false)).units)
    }
    // Rounds carry what was written meanwhile (≈ 20k pages/s, a hot set), not the whole area.
    expect(later.every(n => n > 0 && n < size / PAGE / 4)).toBe(true)
    w.kill('SIGSTOP')
    const final = await round(true)
    const file = Buffer.alloc(size)
    const fd = openSync(mem, 'r')
    readSync(fd, file, 0, size, 0)
    closeSync(fd)
    // Every page written before the pause reached the copy, and the incremental digest is exact.
    expect(copy.equals(file)).toBe(true)
    expect(Buffer.from(final.digest).equals(Buffer.from(await digestFile(pool, mem, size)))).toBe(true)
    // Nothing is marked while the workload is stopped.
    expect((await tracker.scan({ paused: true })).dirty.count()).toBe(0)
  })
})
