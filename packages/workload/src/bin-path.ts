import { fileURLToPath } from 'node:url'

/**
 * Absolute path of the `shoal-workload` executable (dist/bin.js), for packages that spawn the
 * workload: `spawn(process.execPath, [workloadBinPath, 'run', ...])`.
 */
export const workloadBinPath: string = fileURLToPath(new URL('./bin.js', import.meta.url))
