import { resolve } from 'node:path'
import type { PullReport } from '@shoal/node'
import { call, socketOf } from '../control-client.js'
import { formatBytes, formatMs, formatRate } from '../format.js'

/** Options of `shoal image create`. */
export interface ImageCreateOptions {
  node: string
  memory: number
  cache: number
  fill: 'zero' | 'random'
  rate: number
  recordRate: number
  blockSize?: number
  cacheVolume?: string
  tracker?: 'scan' | 'cooperative'
}

/** `shoal image create <name>`: a synthetic image on a node. */
export async function runImageCreate (name: string, o: ImageCreateOptions): Promise<void> {
  if (o.fill !== 'zero' && o.fill !== 'random') throw new Error('--fill must be zero or random')
  const rec = await call(socketOf(o.node), 'POST', '/images', {
    name, memorySize: o.memory, cacheSize: o.cache, fill: o.fill, blockSize: o.blockSize, cacheVolume: o.cacheVolume, tracker: o.tracker, config: { rate: o.rate, recordRate: o.recordRate }
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

/** `shoal image hot <name> <from> [to]`: marks cache blocks [from, to) hot. */
export async function runImageHot (name: string, from: number, to: number | undefined, o: { node: string }): Promise<void> {
  await call(socketOf(o.node), 'POST', `/images/${encodeURIComponent(name)}/hot`, { from, to: to ?? from + 1 })
}

/** `shoal volume pull <id>`: the node becomes a replica, pulling from every peer that holds the volume. */
export async function runVolumePull (id: string, o: { node: string, from?: string[], json: boolean }): Promise<void> {
  const r = await call(socketOf(o.node), 'POST', '/volumes/pull', { id, from: o.from }) as PullReport
  if (o.json) { process.stdout.write(JSON.stringify(r) + '\n'); return }
  process.stdout.write(`pulled ${r.id}: ${formatBytes(r.bytes)} in ${formatMs(r.ms)} (${formatRate(r.bytes / (r.ms / 1000))}), dedup ${formatBytes(r.dedupBytes)}, ${r.leftover} blocks not found\n`)
  for (const [peer, s] of Object.entries(r.sources)) {
    process.stdout.write(`  ${peer} ${formatBytes(s.bytes).padStart(10)} ${String(s.blocks).padStart(6)} blocks${s.corrupt > 0 ? `, ${s.corrupt} corrupt` : ''}${r.dropped[peer] != null ? `, dropped: ${r.dropped[peer]}` : ''}\n`)
  }
}

/** `shoal volume rm <id>`: drops a replica volume. */
export async function runVolumeRemove (id: string, o: { node: string }): Promise<void> {
  await call(socketOf(o.node), 'DELETE', `/volumes/${encodeURIComponent(id)}`)
}

/** `shoal image rm <name>`: stops its workload and deletes the image. */
export async function runImageRemove (name: string, o: { node: string }): Promise<void> {
  await call(socketOf(o.node), 'DELETE', `/images/${encodeURIComponent(name)}`)
}
