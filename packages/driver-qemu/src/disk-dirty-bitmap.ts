import { execFile } from 'node:child_process'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { Bitmap, WorkloadError } from '@shoal/core'
import type { DirtySource } from '@shoal/core'
import { CACHE_DRIVE } from './cache-drive.js'
import type { QmpClient } from './qmp-client.js'

/** One extent of `qemu-img map --output=json`. */
export interface MapExtent { start: number, length: number, data: boolean }

/**
 * Units (of `unitSize` bytes) covered by the dirty extents of a `qemu-img map` of a dirty
 * bitmap read with `x-dirty-bitmap`: the NBD client reports the bitmap's dirty bit where a
 * hole would be, so a dirty extent reads `"data": false`.
 */
export function dirtyUnitsOf (extents: readonly MapExtent[], units: number, unitSize: number): Bitmap {
  const out = new Bitmap(units)
  for (const e of extents) {
    if (e.data) continue
    const first = Math.floor(e.start / unitSize)
    const end = Math.min(units, Math.ceil((e.start + e.length) / unitSize))
    for (let u = first; u < end; u++) out.set(u)
  }
  return out
}

/**
 * The cache disk's written blocks from QEMU's own block dirty bitmaps, instead of scanning the
 * disk each round: a round costs a QMP transaction and one read of a bitmap, whatever the disk's
 * size. The first take adds a bitmap (recording starts); each later take atomically adds the next
 * bitmap and disables the current one (a transaction: no write falls between the two), reads the
 * disabled one through an NBD export that carries it as the `qemu:dirty-bitmap:` meta context
 * (`qemu-img map` with `x-dirty-bitmap`), and removes it. A guest write is recorded when QEMU
 * completes it; the final take runs after `stop`, which drained every request, so nothing
 * written before the pause is missed.
 */
export function qemuDiskDirtySource (qmp: QmpClient, runDir: string, units: number, unitSize: number, opts: { qemuImg?: string } = {}): DirtySource {
  const tag = `shoal-${process.pid}-${Date.now().toString(36)}`
  const socket = join(runDir, 'nbd-dirty.sock')
  let n = 0
  let current: string | undefined
  let nodeName: string | undefined
  let serving = false

  const findNode = async (): Promise<string> => {
    const blocks = await qmp.execute<Array<{ device: string, inserted?: { 'node-name'?: string } }>>('query-block')
    const name = blocks.find(b => b.device === CACHE_DRIVE)?.inserted?.['node-name']
    if (name == null) throw new WorkloadError(`the VM has no ${CACHE_DRIVE} disk`)
    return name
  }

  const read = async (bitmap: string): Promise<Bitmap> => {
    nodeName ??= await findNode()
    if (!serving) {
      rmSync(socket, { force: true })
      // nbd-server-start takes the legacy socket address form ({ type, data }).
      const start = async (): Promise<unknown> => await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } })
      // A server left by a node that died mid-migration (the VM was adopted): replace it.
      await start().catch(async () => { await qmp.execute('nbd-server-stop').catch(() => {}); await start() })
      serving = true
    }
    const id = `${bitmap}-x`
    await qmp.execute('block-export-add', { type: 'nbd', id, 'node-name': nodeName, name: id, writable: false, bitmaps: [bitmap] })
    try {
      const out = await new Promise<string>((resolve, reject) => {
        execFile(opts.qemuImg ?? 'qemu-img', ['map', '--output=json', '--image-opts',
          `driver=nbd,server.type=unix,server.path=${socket},export=${id},x-dirty-bitmap=qemu:dirty-bitmap:${bitmap}`],
        { maxBuffer: 256 * 1024 * 1024 }, (err, stdout, stderr) => {
          if (err != null) reject(new WorkloadError(`qemu-img map of dirty bitmap ${bitmap}: ${stderr.trim() || err.message}`))
          else resolve(stdout)
        })
      })
      return dirtyUnitsOf(JSON.parse(out) as MapExtent[], units, unitSize)
    } finally {
      // Deleting an export finishes asynchronously; the bitmap stays busy until it has.
      await qmp.execute('block-export-del', { id, mode: 'hard' }).catch(() => {})
      for (let i = 0; i < 200; i++) {
        const exports = await qmp.execute<Array<{ id: string }>>('query-block-exports').catch(() => [])
        if (!exports.some(e => e.id === id)) break
        await new Promise(resolve => setTimeout(resolve, 2))
      }
    }
  }

  return {
    get incomplete () { return false },
    get waitedMs () { return 0 },
    async take () {
      const next = `${tag}-${++n}`
      const add = { type: 'block-dirty-bitmap-add', data: { node: CACHE_DRIVE, name: next, granularity: unitSize } }
      if (current == null) {
        await qmp.execute('transaction', { actions: [add] })
        current = next
        return new Bitmap(units)
      }
      const old = current
      await qmp.execute('transaction', { actions: [add, { type: 'block-dirty-bitmap-disable', data: { node: CACHE_DRIVE, name: old } }] })
      current = next
      try {
        return await read(old)
      } finally {
        await qmp.execute('block-dirty-bitmap-remove', { node: CACHE_DRIVE, name: old }).catch(() => {})
      }
    },
    async close () {
      if (current != null) await qmp.execute('block-dirty-bitmap-remove', { node: CACHE_DRIVE, name: current }).catch(() => {})
      current = undefined
      if (serving) await qmp.execute('nbd-server-stop').catch(() => {})
      serving = false
      rmSync(socket, { force: true })
    }
  }
}
