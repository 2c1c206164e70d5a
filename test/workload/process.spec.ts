/**
 * A real `shoal-workload run` process: paused and resumed like a migrating VM, its image must
 * verify at every stop.
 */

import { readFile } from 'node:fs/promises'
import { afterEach, describe, expect, it } from 'vitest'
import { initImage, readHeader, verifyImage, type OpsSnapshot } from '@shoal/workload'
import { killWorkloads, removeTempFiles, runCli, sleep, spawnWorkload, tempImage, terminate } from './harness.js'

afterEach(async () => {
  await killWorkloads()
  await removeTempFiles()
})

const MiB = 1024 * 1024

describe('shoal-workload run', () => {
  it('verifies at a SIGSTOP pause with the captured counts, and after SIGCONT + SIGTERM', async () => {
    const image = tempImage()
    await initImage({ ...image, memorySize: 8 * MiB, cacheSize: 4 * MiB, fill: 'random' })
    const proc = spawnWorkload(['run', ...image.args, '--rate', '5000', '--record-rate', '200', '--ops-file', image.opsPath])
    const { pid } = await proc.ready
    expect(pid).toBe(proc.child.pid)
    await sleep(1200)

    proc.child.kill('SIGSTOP')
    // Pause-time counts, as the migrator captures them.
    const paused = await readHeader(image.memoryPath)
    expect(paused.writes).toBeGreaterThan(0)
    expect(paused.records).toBeGreaterThan(0)
    await expect(verifyImage({ ...image, writes: paused.writes, records: paused.records })).resolves.toMatchObject({ ok: true })

    proc.child.kill('SIGCONT')
    await sleep(300)
    expect(await terminate(proc)).toBe(0)
    expect(proc.stdout()).toContain('"event":"stopped"')

    const final = await verifyImage(image)
    expect(final).toMatchObject({ ok: true, inFlightWrites: 0, inFlightRecords: 0, badPages: [], badRecords: [] })
    expect(final.writes).toBeGreaterThan(paused.writes)

    const ops = JSON.parse(await readFile(image.opsPath, 'utf8')) as OpsSnapshot
    expect(ops.ops).toBe(final.writes)
    expect(typeof ops.opsPerSec).toBe('number')
    expect(typeof ops.p99Ms).toBe('number')
    expect(typeof ops.t).toBe('number')

    const cli = await runCli(['verify', ...image.args, '--writes', String(final.writes), '--records', String(final.records), '--json'])
    expect(cli.code).toBe(0)
    expect(JSON.parse(cli.stdout)).toMatchObject({ ok: true, writes: final.writes, records: final.records, pagesChecked: 2047 })
  })

  it('resumes an image from its header counters after verifying it', async () => {
    const image = tempImage()
    await initImage({ ...image, memorySize: 4 * MiB, cacheSize: MiB })
    const first = spawnWorkload(['run', ...image.args, '--rate', '5000', '--record-rate', '100'])
    await first.ready
    await sleep(400)
    expect(await terminate(first)).toBe(0)
    const before = await readHeader(image.memoryPath)

    const resumed = spawnWorkload(['run', ...image.args, '--rate', '5000', '--record-rate', '100', '--resume'])
    const ready = await resumed.ready as { pid: number, writes: number, records: number }
    expect(ready).toMatchObject({ writes: before.writes, records: before.records })
    await sleep(300)
    expect(await terminate(resumed)).toBe(0)

    const after = await verifyImage(image)
    expect(after.ok).toBe(true)
    expect(after.writes).toBeGreaterThan(before.writes)
    expect(after.records).toBeGreaterThan(before.records)
  })

  it('stays alive and writes nothing at rate 0', async () => {
    const image = tempImage()
    await initImage({ ...image, memorySize: MiB, cacheSize: 0 })
    const proc = spawnWorkload(['run', ...image.args])
    await proc.ready
    await sleep(100)
    expect(proc.child.exitCode).toBeNull()
    expect(await terminate(proc)).toBe(0)
    await expect(verifyImage(image)).resolves.toMatchObject({ ok: true, writes: 0, records: 0 })
  })

  it('logs once and keeps running when the cache is full', async () => {
    const image = tempImage()
    await initImage({ ...image, memorySize: MiB, cacheSize: 3 * 4096 + 100 })
    const proc = spawnWorkload(['run', ...image.args, '--record-rate', '1000'])
    await proc.ready
    await sleep(200)
    expect(await terminate(proc)).toBe(0)
    expect(proc.stderr().match(/cache file is full/g)).toHaveLength(1)
    await expect(verifyImage(image)).resolves.toMatchObject({ ok: true, records: 3 })
  })
})
