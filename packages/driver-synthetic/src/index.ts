/**
 * @packageDocumentation
 * The driver of Shoal's synthetic workload (`@shoal/workload`): the stand-in for a VM in tests,
 * demos and benchmarks. Pause = SIGSTOP, resume = SIGCONT, device state = the workload's
 * counters at pause; on arrival the image is checked against them before the workload resumes.
 *
 * @example
 * ```ts
 * import { createShoalNode } from '@shoal/node'
 * import { createSyntheticDriver } from '@shoal/driver-synthetic'
 *
 * const node = await createShoalNode({ dataDir: '/tmp/a', drivers: [createSyntheticDriver()] })
 * await node.start()
 * await node.createImage({ name: 'w1', driver: 'synthetic', memorySize: 64 << 20, cacheSize: 16 << 20, config: { rate: 2000 } })
 * await node.startImage('w1')
 * ```
 */
export * from './constants.js'
export * from './synthetic-driver.js'
