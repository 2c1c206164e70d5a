import { spawn } from 'node:child_process'
import { closeSync, existsSync, openSync, readFileSync, truncateSync, writeSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import { createDirtyTracker, createExtentProbe, createWorkerPool, digestFile, holeUnits, parseExtents } from '@shoal/core'
import type { DataExtentsProbe, DirtyTracker, TrackerMode, WorkerPool } from '@shoal/core'
import { tempDir } from '../fixtures/temp.js'

const MiB = 1024 * 1024

/** Writes `unit`-sized blocks of non-zero bytes at the given units of a file. */
function writeUnits (path: string, unitSize: number, units: number[], fill = 0xab): void {
  const fd = openSync(path, 'r+')
  try {
    for (const u of units) writeSync(fd, Buffer.alloc(unitSize, fill ^ (u & 0xff)), 0, unitSize, u * unitSize)
  } finally {
    closeSync(fd)
  }
}

/** Units set in a scan's dirty bitmap. */
async function dirtyUnits (tracker: DirtyTracker): Promise<number[]> {
  const { dirty } = await tracker.scan()
  const out: number[] = []
  for (const r of dirty.runs()) for (let u = r.start; u < r.start + r.count; u++) out.push(u)
  // What a session does after a scan: send (load) exactly the dirty units.
  await tracker.load([...dirty.runs()])
  return out
}

// Memory areas live on tmpfs, caches on a disk filesystem: holes behave alike on both.
const bases = [undefined, ...(existsSync('/dev/shm') ? ['/dev/shm'] : [])]

describe('sparse scans', () => {
  const cleanups: Array<() => void | Promise<void>> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  const setup = (base: string | undefined, size: number): { path: string, pool: WorkerPool } => {
    const dir = tempDir('sparse', base)
    cleanups.push(dir.cleanup)
    const path = `${dir.path}/area`
    closeSync(openSync(path, 'w'))
    truncateSync(path, size)
    const pool = createWorkerPool({ workers: 2 })
    cleanups.push(async () => { await pool.stop() })
    return { path, pool }
  }

  it('parses extents and maps them to hole units', () => {
    expect(parseExtents('0 4096\n8192 12288\n')).toEqual([{ start: 0, end: 4096 }, { start: 8192, end: 12288 }])
    expect(parseExtents('0 x\n')).toBeUndefined()
    const bits = new Uint8Array(holeUnits([{ start: 4096, end: 4097 }], 4096, 8))
    // Unit 1 holds data (even one byte of it), every other unit is a hole.
    expect(bits[0]).toBe(0xff & ~0b10)
  })

  for (const base of bases) {
    for (const [mode, unitSize] of [['shadow', 4096], ['hash', 256 * 1024]] as Array<[TrackerMode, number]>) {
      it(`${mode} mode on ${base ?? 'the temp dir'}: holes are not read, and the digest is that of the whole file`, async () => {
        const size = 64 * MiB
        const { path, pool } = setup(base, size)
        const units = size / unitSize
        const written = [3, Math.floor(units / 2), units - 1]
        writeUnits(path, unitSize, written)
        const tracker = createDirtyTracker({ path, size, unitSize, mode }, pool)
        cleanups.push(async () => { await tracker.close() })
        const r = await tracker.scan({ digest: true })
        expect([...r.dirty.runs()].flatMap(x => Array.from({ length: x.count }, (_, k) => x.start + k))).toEqual(written)
        // At most the 4 MiB read windows holding the written units; reading everything is 64 MiB.
        expect(r.bytesRead).toBeLessThanOrEqual(written.length * unitSize)
        expect(r.bytesRead! + r.holeBytes!).toBe(size)
        expect(Buffer.from(r.digest!).equals(Buffer.from(await digestFile(pool, path, size)))).toBe(true)
        // Same verdicts and digest as a tracker that reads every byte.
        const full = createDirtyTracker({ path, size, unitSize, mode, dataExtents: false }, pool)
        cleanups.push(async () => { await full.close() })
        const f = await full.scan({ digest: true })
        expect(f.bytesRead).toBe(size)
        expect(Buffer.from(f.digest!).equals(Buffer.from(r.digest!))).toBe(true)
      })

      it(`${mode} mode on ${base ?? 'the temp dir'}: a write into a hole after the hole map was taken is found by the next scan`, async () => {
        const size = 16 * MiB
        const { path, pool } = setup(base, size)
        const units = size / unitSize
        writeUnits(path, unitSize, [0])
        const target = units - 2
        const real = createExtentProbe()
        let race = false
        // The race at its worst: the map says "hole", then the workload writes there before any
        // worker reads the unit.
        const probe: DataExtentsProbe = async (p, s) => {
          const map = await real(p, s)
          if (race) { race = false; writeUnits(path, unitSize, [target], 0x5c) }
          return map
        }
        const tracker = createDirtyTracker({ path, size, unitSize, mode, dataExtents: probe }, pool)
        cleanups.push(async () => { await tracker.close() })
        expect(await dirtyUnits(tracker)).toEqual([0])
        race = true
        const during = await dirtyUnits(tracker)
        const after = await dirtyUnits(tracker)
        // Seen in this round or the next, and never lost.
        expect([...during, ...after]).toEqual([target])
        const r = await tracker.scan({ digest: true, paused: true })
        expect(r.dirty.count()).toBe(0)
        expect(Buffer.from(r.digest!).equals(Buffer.from(await digestFile(pool, path, size)))).toBe(true)
      })

      it(`${mode} mode on ${base ?? 'the temp dir'}: a unit that was sent and became a hole again is sent as zeros`, async () => {
        const size = 16 * MiB
        const { path, pool } = setup(base, size)
        const units = size / unitSize
        writeUnits(path, unitSize, [1, units - 1])
        const tracker = createDirtyTracker({ path, size, unitSize, mode }, pool)
        cleanups.push(async () => { await tracker.close() })
        expect(await dirtyUnits(tracker)).toEqual([1, units - 1])
        // Cutting the tail and growing the file back leaves a hole where the last unit was.
        truncateSync(path, size - unitSize)
        truncateSync(path, size)
        expect(await dirtyUnits(tracker)).toEqual([units - 1])
        const r = await tracker.scan({ digest: true })
        expect(r.dirty.count()).toBe(0)
        expect(Buffer.from(r.digest!).equals(Buffer.from(await digestFile(pool, path, size)))).toBe(true)
      })
    }
  }

  it('the copy equals a sparse file after a final scan, under concurrent writes into its holes', async () => {
    const unitSize = 4096
    const size = 32 * MiB
    const units = size / unitSize
    const { path, pool } = setup(existsSync('/dev/shm') ? '/dev/shm' : undefined, size)
    // Another process writes random units (mostly into holes) as fast as it can.
    const writer = spawn(process.execPath, ['-e', `
      const fs = require('node:fs'); const fd = fs.openSync(process.argv[1], 'r+'); const b = Buffer.alloc(${unitSize}); let n = 0;
      process.stdout.write('ready\\n');
      for (;;) { const u = Math.floor(Math.random() * ${units}); n++; b.fill(n & 255 || 1); fs.writeSync(fd, b, 0, ${unitSize}, u * ${unitSize}); }`, path], { stdio: ['ignore', 'pipe', 'inherit'] })
    cleanups.push(() => { writer.kill('SIGKILL') })
    await new Promise<void>(resolve => writer.stdout.once('data', () => { resolve() }))
    const tracker = createDirtyTracker({ path, size, unitSize, mode: 'shadow' }, pool)
    cleanups.push(async () => { await tracker.close() })
    const copy = Buffer.alloc(size)
    const round = async (): Promise<void> => {
      const { dirty } = await tracker.scan()
      const runs = [...dirty.runs(64)]
      const parts = await tracker.load(runs)
      for (const [k, r] of runs.entries()) Buffer.from(parts[k]!).copy(copy, r.start * unitSize)
    }
    for (let i = 0; i < 4; i++) await round()
    writer.kill('SIGSTOP')
    await new Promise(resolve => setTimeout(resolve, 50))
    await round()
    expect(copy.equals(readFileSync(path))).toBe(true)
  })

  it('a probe that cannot run reads the whole file instead', async () => {
    const size = 8 * MiB
    const { path, pool } = setup(undefined, size)
    writeUnits(path, 4096, [7])
    const probe = createExtentProbe({ perl: 'shoal-no-such-interpreter' })
    expect(await probe(path, size)).toBeUndefined()
    const tracker = createDirtyTracker({ path, size, unitSize: 4096, mode: 'shadow', dataExtents: probe }, pool)
    cleanups.push(async () => { await tracker.close() })
    const r = await tracker.scan()
    expect(r.bytesRead).toBe(size)
    expect([...r.dirty.runs()]).toEqual([{ start: 7, count: 1 }])
  })
})
