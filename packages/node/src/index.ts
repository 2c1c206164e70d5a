/**
 * @packageDocumentation
 * The Shoal peer daemon: hosts images and their workloads (pluggable drivers), accepts
 * migrations from allow-listed peers, sends migrations, and serves a local control API.
 *
 * @example
 * ```ts
 * import { createShoalNode } from '@shoal/node'
 * import { createSyntheticDriver } from '@shoal/driver-synthetic'
 *
 * const drivers = [createSyntheticDriver()]
 * const a = await createShoalNode({ dataDir: '/tmp/a', listen: ['/ip4/127.0.0.1/tcp/0'], drivers })
 * const b = await createShoalNode({ dataDir: '/tmp/b', listen: ['/ip4/127.0.0.2/tcp/0'], allow: [a.peerId], drivers })
 * await a.start(); await b.start()
 * await a.createImage({ name: 'vm1', memorySize: 64 << 20, cacheSize: 256 << 20 })
 * await a.startImage('vm1')
 * const report = await a.migrate('vm1', b.addrs()[0]!)
 * console.log(report.downtimeMs, report.verified)
 * await a.stop(); await b.stop()
 * ```
 */
export * from './constants.js'
export * from './logger.js'
export * from './image-store.js'
export * from './shoal-node.js'
export * from './control-server.js'
export * from './volumes.js'
export * from './peer-address.js'
export * from './node-api.js'
export * from './admission.js'
export * from './data-dir-lock.js'
export * from './migrations.js'
export * from './report-html.js'
export * from './api-schemas.js'
export * from './capacity.js'
export * from './capacity-announcer.js'
export * from './evacuation.js'
export * from './keyed-queue.js'
export type { KeptCacheInfo } from './kept-caches.js'
