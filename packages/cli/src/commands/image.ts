import { resolve } from 'node:path'
import { call, socketOf } from '../control-client.js'

/** Options of `shoal image create`. */
export interface ImageCreateOptions {
  node: string
  memory: number
  cache: number
  fill: 'zero' | 'random'
  rate: number
  recordRate: number
  blockSize?: number
}

/** `shoal image create <name>`: a synthetic image on a node. */
export async function runImageCreate (name: string, o: ImageCreateOptions): Promise<void> {
  if (o.fill !== 'zero' && o.fill !== 'random') throw new Error('--fill must be zero or random')
  const rec = await call(socketOf(o.node), 'POST', '/images', {
    name, memorySize: o.memory, cacheSize: o.cache, fill: o.fill, blockSize: o.blockSize, config: { rate: o.rate, recordRate: o.recordRate }
  })
  process.stdout.write(JSON.stringify(rec) + '\n')
}

/** `shoal image start <name>`: starts its workload. */
export async function runImageStart (name: string, o: { node: string }): Promise<void> {
  const rec = await call(socketOf(o.node), 'POST', `/images/${encodeURIComponent(name)}/start`)
  process.stdout.write(JSON.stringify(rec) + '\n')
}

/** `shoal volume import <id> <file>`: the node serves the file's blocks as a replica volume. */
export async function runVolumeImport (id: string, file: string, o: { node: string, blockSize?: number }): Promise<void> {
  const info = await call(socketOf(o.node), 'POST', '/volumes', { id, path: resolve(file), blockSize: o.blockSize })
  process.stdout.write(JSON.stringify(info) + '\n')
}
