/**
 * @packageDocumentation
 * Shoal's QEMU driver: live-migrates QEMU virtual machines whose RAM lives in a shared file in
 * the node's shm dir and whose local cache disk is a raw file, with Shoal moving RAM and disk
 * over its lanes and QEMU's own migration stream (`x-ignore-shared`) carrying only the device
 * state. Includes a small typed QMP client.
 *
 * @example
 * ```ts
 * import { createShoalNode } from '@shoal/node'
 * import { createQemuDriver } from '@shoal/driver-qemu'
 *
 * const node = await createShoalNode({ dataDir: '/tmp/a', drivers: [createQemuDriver()] })
 * await node.start()
 * await node.createImage({
 *   name: 'vm1', driver: 'qemu', memorySize: 128 << 20, cacheSize: 64 << 20,
 *   config: { kernel: '/path/vmlinuz', initrd: '/path/initrd.img', append: 'console=ttyS0', heartbeat: 'SHOAL-HB' }
 * })
 * await node.startImage('vm1')
 * ```
 */
export * from './constants.js'
export * from './errors.js'
export * from './qmp-client.js'
export * from './qemu-config.js'
export * from './command-line.js'
export * from './cache-drive.js'
export * from './device-state.js'
export { QemuVm, isQemuProcess } from './qemu-vm.js'
export { kvmWorks } from './kvm-probe.js'
export { waitForLine, logSize } from './serial-log.js'
export * from './qemu-driver.js'
export * from './test-guest.js'
export * from './disk-dirty-bitmap.js'
