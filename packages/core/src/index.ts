/**
 * @packageDocumentation
 * Shoal's core: the image model, dirty trackers on worker threads, the wire codec, the source and
 * destination session state machines, the pull-based chunk scheduler, verification, and the
 * transport-agnostic {@link Lane} interface with an in-memory implementation. No network code.
 *
 * @example
 * ```ts
 * import { createMemoryLanePair, createWorkerPool, runSourceSession, DestinationSession } from '@shoal/core'
 *
 * const pool = createWorkerPool()
 * const [ctlA, ctlB] = createMemoryLanePair()
 * const [dataA, dataB] = createMemoryLanePair()
 * const dest = new DestinationSession(ctlB, { pool, hooks })   // hooks: prepare/commit/discard
 * void readLaneHello(dataB).then(({ frames }) => dest.addLane(dataB, frames))
 * const [report] = await Promise.all([
 *   runSourceSession({ image, controller, control: ctlA, lanes: [dataA], pool }),
 *   dest.run()
 * ])
 * console.log(report.downtimeMs, report.verified)
 * await pool.stop()
 * ```
 */
export * from './errors.js'
export * from './storage-failure.js'
export * from './constants.js'
export * from './limits.js'
export * from './bitmap.js'
export * from './image.js'
export * from './driver/driver.js'
export * from './driver/duty-cycle.js'
export * from './wire/frames.js'
export * from './wire/codec.js'
export * from './transport/lane.js'
export * from './transport/memory-lane.js'
export * from './tracker/worker-protocol.js'
export * from './tracker/worker-pool.js'
export * from './tracker/dirty-tracker.js'
export * from './tracker/area-scan.js'
export * from './tracker/dirty-marks.js'
export * from './tracker/cooperative-tracker.js'
export * from './tracker/data-extents.js'
export * from './verify/digest.js'
export * from './scheduler/chunk-scheduler.js'
export * from './session/report.js'
export * from './session/lane-pump.js'
export * from './session/round-planner.js'
export * from './session/control-channel.js'
export * from './session/data-chunk.js'
export * from './session/source-session.js'
export * from './session/switchover-gate.js'
export * from './session/pause-advice.js'
export * from './session/destination-session.js'
export * from './session/buffer-pool.js'
export * from './verify/region-digests.js'
export * from './session/control-link.js'
export * from './volume/block-store.js'
export * from './volume/block-service.js'
export * from './volume/multi-source-fetch.js'
export * from './volume/cache-meta.js'
export * from './volume/cache-fetch.js'
export * from './volume/cache-manifest.js'
export * from './volume/postcopy-cache.js'
export * from './volume/kept-cache.js'
export type { OnDemandStats } from './volume/on-demand.js'
export * from './pacing/token-bucket.js'
export * from './pacing/pacer.js'
export * from './transport/lane-transport.js'
export * from './transport/memory-transport.js'
export * from './driver/process-stat.js'
export * from './tracker/load-plan.js'
export * from './verify/region-hash.js'
export * from './tracker/shadow-pool.js'
