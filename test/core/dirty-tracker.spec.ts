import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { openSync, readSync, closeSync, writeFileSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import { createDirtyTracker, createWorkerPool, digestFile } from '@shoal/core'
import type { TrackerMode, WorkerPool } from '@shoal/core'
import { tempDir } from '../fixtures/temp.js'

const PAGE = 4096

// A separate process that rewrites random pages of the file as fast as it can until killed.
const WRITER = `
const fs = require('node:fs'); const fd = fs.openSync(process.argv[1], 'r+');
const pages = Number(process.argv[2]); const unit = Number(process.argv[3]); const buf = Buffer.alloc(unit); let n = 0;
process.stdout.write('ready\\n');
for (;;) { const p = Math.floor(Math.random() * pages); n++; buf.fill(n & 255); buf.writeUInt32LE(n, 0); buf.writeUInt32LE(p, 4); fs.writeSync(fd, buf, 0, unit, p * unit); }
`

describe('dirty tracker', () => {
  const cleanups: Array<() => void | Promise<void>> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  for (const [mode, unit, units] of [['shadow', PAGE, 4096], ['hash', 64 * 1024, 512]] as Array<[TrackerMode, number, number]>) {
    it(`${mode} mode: the copy equals the file after a final scan, under concurrent writes from another process`, async () => {
      const dir = tempDir('tracker', '/dev/shm')
      cleanups.push(dir.cleanup)
      const path = `${dir.path}/area`
      writeFileSync(path, Buffer.alloc(unit * units))
      const pool: WorkerPool = createWorkerPool({ workers: 2 })
      cleanups.push(async () => { await pool.stop() })
      const tracker = createDirtyTracker({ path, size: unit * units, unitSize: unit, mode, sliceUnits: 256 }, pool)
      // The digest fused into a scan must equal the stand-alone digest of the same bytes.
      expect(Buffer.from((await createDirtyTracker({ path, size: unit * units, unitSize: unit, mode }, pool).scan({ digest: true })).digest!)
        .equals(Buffer.from(await digestFile(pool, path, unit * units)))).toBe(true)
      const copy = Buffer.alloc(unit * units) // what a destination would hold
      const writer = spawn(process.execPath, ['-e', WRITER, path, String(units), String(unit)], { stdio: ['ignore', 'pipe', 'inherit'] })
      cleanups.push(() => { writer.kill('SIGKILL') })
      await new Promise<void>(resolve => writer.stdout.once('data', () => { resolve() }))

      const fd = openSync(path, 'r')
      cleanups.push(() => { closeSync(fd) })
      cleanups.push(async () => { await tracker.close() })
      // What a session does each round: scan, then send exactly the bytes load() hands out.
      const sendDirty = async (): Promise<number> => {
        const { dirty } = await tracker.scan()
        let n = 0
        const runs = [...dirty.runs(64)]
        const parts = await tracker.load(runs)
        for (const [k, run] of runs.entries()) {
          Buffer.from(parts[k]!).copy(copy, run.start * unit)
          n += run.count
        }
        return n
      }
      const perRound: number[] = []
      for (let round = 0; round < 5; round++) perRound.push(await sendDirty())
      writer.kill('SIGSTOP')
      await new Promise(resolve => setTimeout(resolve, 50))
      perRound.push(await sendDirty())
      const file = Buffer.alloc(unit * units)
      readSync(fd, file, 0, file.byteLength, 0)
      expect(perRound.every(n => n > 0)).toBe(true) // the writer really was writing
      expect(file.equals(copy)).toBe(true)
      // Nothing changes while the writer is stopped: a further scan finds nothing.
      expect((await tracker.scan()).dirty.count()).toBe(0)
      // A scan with digest hashes what it read: equal to a digest of the file computed separately.
      const fused = await tracker.scan({ digest: true })
      expect(Buffer.from(fused.digest!).equals(Buffer.from(await digestFile(pool, path, unit * units)))).toBe(true)
    })
  }

  it('does not report untouched zero units in the first scan', async () => {
    const dir = tempDir('tracker', '/dev/shm')
    cleanups.push(dir.cleanup)
    const path = `${dir.path}/area`
    const buf = Buffer.alloc(PAGE * 64)
    buf.fill(1, 10 * PAGE, 11 * PAGE)
    buf[63 * PAGE + 5] = 2
    writeFileSync(path, buf)
    const pool = createWorkerPool({ workers: 2 })
    cleanups.push(async () => { await pool.stop() })
    const t = createDirtyTracker({ path, size: buf.byteLength, unitSize: PAGE, mode: 'shadow', sliceUnits: 8 }, pool)
    expect([...(await t.scan()).dirty.runs()]).toEqual([{ start: 10, count: 1 }, { start: 63, count: 1 }])
  })

  for (const mode of ['shadow', 'hash'] as const) it(`${mode} mode: assume() skips units whose bytes match the assumed hash; invalidate() makes units count again`, async () => {
    const dir = tempDir('tracker', '/dev/shm')
    cleanups.push(dir.cleanup)
    const path = `${dir.path}/area`
    const U = 64 * 1024
    const buf = Buffer.alloc(U * 16, 3)
    buf.fill(9, 5 * U, 6 * U)
    writeFileSync(path, buf)
    const pool = createWorkerPool({ workers: 2 })
    cleanups.push(async () => { await pool.stop() })
    const t = createDirtyTracker({ path, size: buf.byteLength, unitSize: U, mode, sliceUnits: 8 }, pool)
    // The destination gets units 0..7 elsewhere: units with the assumed bytes are not reported,
    // unit 5 (whose bytes differ from what was assumed) is.
    const sha = createHash('sha256').update(Buffer.alloc(U, 3)).digest()
    for (let i = 0; i < 8; i++) t.assume(i, sha)
    expect([...(await t.scan()).dirty.runs()]).toEqual([{ start: 5, count: 1 }, { start: 8, count: 8 }])
    await t.load([{ start: 5, count: 1 }, { start: 8, count: 8 }])
    expect((await t.scan()).dirty.count()).toBe(0)
    t.invalidate([{ start: 2, count: 2 }])
    expect([...(await t.scan()).dirty.runs()]).toEqual([{ start: 2, count: 2 }])
    expect(() => { t.assume(16, sha) }).toThrow(RangeError)
    await t.close()
  })
})
