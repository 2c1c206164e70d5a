import { open } from 'node:fs/promises'
import { join } from 'node:path'
import type { PostCopyAccess, PostCopyCache } from '@shoal/core'
import { createNbdServer } from '@shoal/nbd'
import type { NbdExport } from '@shoal/nbd'
import type { Logger } from './logger.js'

/** The export name of a post-copy cache on its NBD socket. */
export const POSTCOPY_NBD_EXPORT = 'cache'
/** Zeroes written per step by WRITE_ZEROES. */
const ZERO_STEP = 1024 * 1024

/**
 * Serves a post-copy cache as an NBD export (`<runDir>/cache.nbd`, export `cache`), for a
 * workload that reaches its disk by a block protocol (QEMU): a read waits until every block it
 * covers is present (fetched on demand first), a write that covers a block whole claims it (no
 * fetch; the stream's copy will not land over it) and a partial one fetches it first. The bytes
 * go to the cache file itself, so once every block is present the workload can move to the
 * plain file with nothing to copy.
 */
export async function servePostcopyNbd (pc: PostCopyCache, cachePath: string, runDir: string, log: Logger): Promise<{ access: Partial<PostCopyAccess>, stop: () => Promise<void> }> {
  const fh = await open(cachePath, 'r+')
  const bs = pc.blockSize
  const blocks = (offset: number, length: number): number[] => {
    const out: number[] = []
    for (let b = Math.floor(offset / bs); b * bs < offset + length; b++) out.push(b)
    return out
  }
  /** Makes the blocks of [offset, offset + length) usable: whole ones claimed when writing, others fetched. */
  const ready = async (offset: number, length: number, writing: boolean, signal: AbortSignal): Promise<void> => {
    await Promise.all(blocks(offset, length).map(async (b) => {
      if (pc.isPresent(b)) return
      const whole = writing && offset <= b * bs && (b + 1) * bs <= offset + length
      if (whole) await pc.own(b)
      else await pc.demand(b, signal)
    }))
  }
  const writeAll = async (data: Uint8Array, offset: number): Promise<void> => {
    let done = 0
    while (done < data.byteLength) done += (await fh.write(data, done, data.byteLength - done, offset + done)).bytesWritten
  }
  const backend: NbdExport = {
    size: pc.blockCount * bs,
    preferredBlockSize: Math.min(bs, 65536),
    description: `Shoal post-copy cache of volume ${pc.volume}`,
    async read (offset, length, { signal }) {
      await ready(offset, length, false, signal)
      const buf = Buffer.alloc(length)
      let done = 0
      while (done < length) {
        const { bytesRead } = await fh.read(buf, done, length - done, offset + done)
        if (bytesRead === 0) break
        done += bytesRead
      }
      return buf
    },
    async write (offset, data, { signal }) {
      await ready(offset, data.byteLength, true, signal)
      await writeAll(data, offset)
    },
    async flush () { await fh.datasync() },
    async writeZeroes (offset, length, { signal }) {
      await ready(offset, length, true, signal)
      const zeros = Buffer.alloc(Math.min(ZERO_STEP, length))
      for (let at = offset; at < offset + length; at += zeros.byteLength) await writeAll(zeros.subarray(0, Math.min(zeros.byteLength, offset + length - at)), at)
    }
  }
  const socket = join(runDir, 'cache.nbd')
  const server = createNbdServer({
    path: socket,
    exports: name => name === POSTCOPY_NBD_EXPORT ? backend : undefined,
    listExports: () => [POSTCOPY_NBD_EXPORT],
    onError: (err) => { log.warn('post-copy NBD export', { error: err.message, code: (err as { code?: string }).code }) }
  })
  await server.start()
  return {
    access: { nbd: { socket, exportName: POSTCOPY_NBD_EXPORT } },
    stop: async () => {
      await server.stop()
      await fh.close().catch(() => {})
    }
  }
}
