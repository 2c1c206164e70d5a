/**
 * @packageDocumentation
 * An NBD (Network Block Device) server on a unix socket, for QEMU: a Shoal node serves a
 * guest's disk from exports whose reads may wait for blocks still being fetched (post-copy),
 * answering other requests meanwhile.
 *
 * @example
 * ```ts
 * import { open } from 'node:fs/promises'
 * import { createNbdServer } from '@shoal/nbd'
 *
 * const file = await open('/var/lib/shoal/vm1.cache', 'r+')
 * const size = (await file.stat()).size
 * const server = createNbdServer({
 *   path: '/run/shoal/vm1.nbd',
 *   exports: name => name !== 'cache' ? undefined : {
 *     size,
 *     read: async (offset, length) => {
 *       const buf = Buffer.alloc(length)
 *       await file.read(buf, 0, length, offset)
 *       return buf
 *     },
 *     write: async (offset, data) => { await file.write(data, 0, data.length, offset) },
 *     flush: async () => { await file.datasync() }
 *   }
 * })
 * await server.start()
 * // qemu-system-x86_64 -blockdev driver=nbd,node-name=remote0,server.type=unix,server.path=/run/shoal/vm1.nbd,export=cache ...
 * await server.stop()
 * await file.close()
 * ```
 */
export { createNbdServer } from './server.js'
export type { NbdServer, NbdServerInit } from './server.js'
export type { NbdExport, NbdRequestOptions } from './export.js'
export * from './errors.js'
export {
  DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_IN_FLIGHT_BYTES, DEFAULT_MAX_PAYLOAD, DEFAULT_PREFERRED_BLOCK_SIZE
} from './constants.js'
