// The cache disk's dirty source from QEMU's block dirty bitmaps, against a real QEMU: blocks
// written through QEMU's block layer (qemu-io over the monitor) are reported, and only those.
import { closeSync, ftruncateSync, openSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { buildTestGuest, dirtyUnitsOf, QemuVm, qemuDiskDirtySource, testGuestConfig, validateQemuConfig } from '@shoal/driver-qemu'
import type { TestGuest } from '@shoal/driver-qemu'
import type { ImageSpec } from '@shoal/core'
import { tempDir } from '../fixtures/temp.js'

const MiB = 2 ** 20
const BLOCK = 256 * 1024
let guest: TestGuest
const cleanups: Array<() => unknown> = []
afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

describe('dirtyUnitsOf', () => {
  it('maps dirty extents (data: false under x-dirty-bitmap) to the units they touch', () => {
    const b = dirtyUnitsOf([
      { start: 0, length: BLOCK, data: true },
      { start: BLOCK, length: 2 * BLOCK, data: false },
      { start: 3 * BLOCK, length: 4 * BLOCK, data: true },
      { start: 7 * BLOCK + 512, length: 512, data: false }
    ], 8, BLOCK)
    expect([...b.runs()]).toEqual([{ start: 1, count: 2 }, { start: 7, count: 1 }])
  })
})

describe('qemuDiskDirtySource with a real QEMU', () => {
  beforeAll(async () => { guest = await buildTestGuest() }, 900_000)

  it('reports exactly the blocks written since the previous take, round after round, and while paused', async () => {
    const dir = tempDir('dbm')
    const shm = tempDir('dbm-shm', '/dev/shm')
    cleanups.push(dir.cleanup, shm.cleanup)
    const memorySize = 128 * MiB
    const cacheSize = 64 * MiB
    const spec: ImageSpec = { name: 'dbm', driver: 'qemu', driverConfig: {}, memory: { path: join(shm.path, 'ram'), size: memorySize, pageSize: 4096 }, cache: { path: join(dir.path, 'disk.img'), size: cacheSize, blockSize: BLOCK } }
    for (const [p, s] of [[spec.memory.path, memorySize], [spec.cache.path, cacheSize]] as const) { const fd = openSync(p, 'w'); ftruncateSync(fd, s); closeSync(fd) }
    // A guest that writes no disk records: every write to the disk comes from this test.
    const cfg = validateQemuConfig({ ...testGuestConfig(guest, memorySize, { memMiB: 8, rate: 100, records: 0 }), accel: 'tcg' }, { memorySize, pageSize: 4096, cacheSize, blockSize: BLOCK })
    const vm = await QemuVm.start(spec, cfg, dir.path, { accel: 'tcg', incoming: false })
    cleanups.push(async () => { await vm.kill() })
    await vm.waitConsole('SHOAL-READY', 0, 120_000)
    const units = cacheSize / BLOCK
    const source = qemuDiskDirtySource(vm.qmp, dir.path, units, BLOCK)
    cleanups.push(async () => { await source.close() })
    const write = async (offset: number, len: number): Promise<void> => {
      await vm.qmp.execute('human-monitor-command', { 'command-line': `qemu-io cache0 "write -P 0x5a ${offset} ${len}"` })
    }

    expect([...(await source.take(false)).runs()]).toEqual([]) // starts recording
    await write(5 * BLOCK, 4096)
    await write(9 * BLOCK + 8192, 2 * BLOCK) // spans blocks 9, 10 and 11
    expect([...(await source.take(false)).runs()]).toEqual([{ start: 5, count: 1 }, { start: 9, count: 3 }])
    expect([...(await source.take(false)).runs()]).toEqual([]) // nothing since
    await write(200 * BLOCK, 512)
    await vm.pause()
    await write(100 * BLOCK, 512) // through the block layer while the vCPUs are stopped
    expect([...(await source.take(true)).runs()]).toEqual([{ start: 100, count: 1 }, { start: 200, count: 1 }])
    // One bitmap records at a time (the one taken is removed); none is left after close.
    const bitmaps = async (): Promise<unknown[]> => (await vm.qmp.execute<Array<{ device: string, inserted?: { 'dirty-bitmaps'?: unknown[] } }>>('query-block'))
      .find(b => b.device === 'cache0')?.inserted?.['dirty-bitmaps'] ?? []
    expect(await bitmaps()).toHaveLength(1)
    await source.close()
    expect(await bitmaps()).toEqual([])
  })
})
