/**
 * @packageDocumentation
 *
 * `@shoal/workload` is the synthetic workload that Shoal migrates in tests and benchmarks: a
 * real process that dirties pages of a memory image at a given rate and appends records to a
 * cache file, writing every page and record so that its exact expected content can be
 * recomputed from (seed, write number). After a migration, {@link verifyImage} proves that no
 * write was lost, torn or reordered.
 *
 * @example
 * ```ts
 * import { spawn } from 'node:child_process'
 * import { initImage, readHeader, verifyImage, workloadBinPath } from '@shoal/workload'
 *
 * const image = { memoryPath: '/dev/shm/vm.mem', cachePath: '/dev/shm/vm.cache' }
 * await initImage({ ...image, memorySize: 64 * 1024 * 1024, cacheSize: 16 * 1024 * 1024, force: true })
 * const vm = spawn(process.execPath, [workloadBinPath, 'run', '--memory-path', image.memoryPath,
 *   '--cache-path', image.cachePath, '--rate', '5000'], { stdio: ['ignore', 'pipe', 'inherit'] })
 * // ... once it has printed {"event":"ready"}: pause, capture the counts, copy the image ...
 * vm.kill('SIGSTOP')
 * const { writes, records } = await readHeader(image.memoryPath)
 * const result = await verifyImage({ ...image, writes, records })
 * console.log(result.ok)
 * vm.kill('SIGKILL')
 * ```
 */

export { workloadBinPath } from './bin-path.js'
export * from './constants.js'
export * from './errors.js'
export {
  decodeHeader,
  decodePageStamp,
  decodeRecordStamp,
  encodeHeader,
  encodePage,
  encodeRecord,
  recordTotalSize,
  HEADER_BYTES,
  type FillMode,
  type PageStamp,
  type RecordStamp,
  type WorkloadHeader
} from './format.js'
export { checkImageSizes, initImage, readHeader, type InitImageOptions } from './image.js'
export type { OpsSnapshot } from './ops-reporter.js'
export { createPicker, fillPattern, mix32, seedKeys, type Picker, type PickerInit, type SeedKeys } from './prng.js'
export {
  verifyImage,
  type PageProblem,
  type RecordProblem,
  type VerifyOptions,
  type VerifyResult
} from './verify.js'
export { createWorkload, type Workload, type WorkloadInit } from './writer.js'
