import { createHash, randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import { FakeFaultNode } from '../fixtures/fault-node.js'
import { killWorkloads, removeTempFiles, runCli, sleep, spawnWorkload, tempImage, terminate } from './harness.js'

const BS = 64 * 1024
const BLOCKS = 64

/**
 * The synthetic workload started on a cache whose blocks are all missing (post-copy), against a
 * fake node (test/fixtures/fault-node.ts) that fetches a block (writes the volume's bytes, sets its
 * present byte) only when asked and records whether the workload touched it before its answer.
 */
describe('shoal-workload run with a post-copy fault path', () => {
  const closers: Array<() => Promise<void>> = []
  afterEach(async () => {
    await killWorkloads()
    for (const c of closers.splice(0).reverse()) await c()
    await removeTempFiles()
  })

  async function setup (): Promise<{ args: string[], node: FakeFaultNode, img: ReturnType<typeof tempImage>, volume: Buffer }> {
    const img = tempImage()
    const init = await runCli(['init', ...img.args, '--memory-size', '1M', '--cache-size', String(BLOCKS * BS)])
    expect(init.code).toBe(0)
    const volume = randomBytes(BLOCKS * BS)
    const hashes = img.extra('hashes')
    writeFileSync(hashes, Buffer.concat(Array.from({ length: BLOCKS }, (_, i) => createHash('sha256').update(volume.subarray(i * BS, (i + 1) * BS)).digest())))
    const present = img.extra('present')
    writeFileSync(present, Buffer.alloc(BLOCKS))
    const socket = img.extra('sock')
    const node = new FakeFaultNode({ socketPath: socket, cachePath: img.cachePath, presentPath: present, blockSize: BS, volume })
    await node.listen()
    closers.push(async () => { await node.close() })
    const args = ['run', ...img.args, '--rate', '200', '--record-rate', '300', '--ops-file', img.opsPath, '--block-size', String(BS),
      '--cache-present', present, '--cache-faults', socket, '--cache-reads', '200', '--cache-hashes', hashes]
    return { args, node, img, volume }
  }

  it('asks for every missing block before it writes or reads it; its reads are all right; the records verify', async () => {
    const { args, node, img } = await setup()
    const proc = spawnWorkload(args)
    await proc.ready
    await sleep(1500)
    expect(await terminate(proc)).toBe(0)
    expect(node.violations).toEqual([])
    expect(node.requests.some(r => r.kind === 'R')).toBe(true)
    const ops = JSON.parse(readFileSync(img.opsPath, 'utf8')) as { cacheReads: number, badCacheReads: number }
    expect(ops.cacheReads).toBeGreaterThan(0)
    expect(ops.badCacheReads).toBe(0)
    const v = await runCli(['verify', ...img.args])
    expect(v.code).toBe(0)
  })

  it('waits, reading nothing wrong, while the node withholds its answers; goes on once they come', async () => {
    const { args, node, img } = await setup()
    node.behaviour.withhold = () => true
    const proc = spawnWorkload(args)
    await proc.ready
    await sleep(800)
    const asked = node.requests.length
    expect(asked).toBeGreaterThan(0)
    node.behaviour.withhold = undefined
    node.releaseWithheld()
    await sleep(800)
    expect(await terminate(proc)).toBe(0)
    expect(node.violations).toEqual([])
    const ops = JSON.parse(readFileSync(img.opsPath, 'utf8')) as { cacheReads: number, badCacheReads: number }
    expect(ops.badCacheReads).toBe(0)
    expect(ops.cacheReads).toBeGreaterThan(0)
    expect((await runCli(['verify', ...img.args])).code).toBe(0)
  })

  it('a refusal from the node ends the workload with ERR_CACHE_FAULT, naming the code', async () => {
    const { args, node } = await setup()
    node.behaviour.refuse = 'ERR_BUSY'
    const proc = spawnWorkload(args)
    await proc.ready.catch(() => undefined)
    const code = await proc.exited
    expect(code).not.toBe(0)
    expect(proc.stderr()).toMatch(/ERR_CACHE_FAULT|ERR_BUSY/)
    expect(node.violations).toEqual([])
  })
})
