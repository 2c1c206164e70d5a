/**
 * What a migration can get wrong, done on purpose to a real run's image: each must fail
 * verification (exit code 3) and name the damaged page or record.
 */

import { copyFile, open, readFile, rm } from 'node:fs/promises'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import {
  decodePageStamp,
  initImage,
  PAGE_SIZE,
  readHeader,
  recordTotalSize,
  verifyImage
} from '@shoal/workload'
import { killWorkloads, removeTempFiles, runCli, sleep, spawnWorkload, tempImage, terminate, type TempImage } from './harness.js'

const MEMORY_SIZE = 4 * 1024 * 1024
let source: TempImage
let earlyMemoryPath: string

// One run shared by all cases; each case damages its own copy. The t1 snapshot is taken while
// the process is stopped, as a migrator's first round would.
beforeAll(async () => {
  source = tempImage()
  earlyMemoryPath = source.extra('t1.mem')
  await initImage({ ...source, memorySize: MEMORY_SIZE, cacheSize: 1024 * 1024, hotPages: 16 })
  const proc = spawnWorkload(['run', ...source.args, '--rate', '5000', '--record-rate', '100'])
  await proc.ready
  await sleep(400)
  proc.child.kill('SIGSTOP')
  await copyFile(source.memoryPath, earlyMemoryPath)
  proc.child.kill('SIGCONT')
  await sleep(400)
  expect(await terminate(proc)).toBe(0)
  expect((await verifyImage(source)).ok).toBe(true)
})

afterAll(async () => {
  await killWorkloads()
  await removeTempFiles()
})

let copies: string[] = []
afterEach(async () => {
  await Promise.all(copies.map(async (path) => { await rm(path, { force: true }) }))
  copies = []
})

async function copyOfSource (): Promise<TempImage> {
  const image = tempImage()
  copies.push(image.memoryPath, image.cachePath)
  await copyFile(source.memoryPath, image.memoryPath)
  await copyFile(source.cachePath, image.cachePath)
  return image
}

async function overwrite (path: string, position: number, bytes: Buffer): Promise<void> {
  const file = await open(path, 'r+')
  try {
    await file.write(bytes, 0, bytes.length, position)
  } finally {
    await file.close()
  }
}

async function expectCliFailure (image: TempImage, mention: string): Promise<void> {
  const { writes, records } = await readHeader(image.memoryPath)
  const cli = await runCli(['verify', ...image.args, '--writes', String(writes), '--records', String(records)])
  expect(cli.code).toBe(3)
  expect(cli.stdout).toContain('FAILED')
  expect(cli.stdout).toContain(mention)
}

describe('verify catches', () => {
  it('a flipped byte in a written page', async () => {
    const image = await copyOfSource()
    const memory = await readFile(image.memoryPath)
    let target = 0
    for (let p = 1; p < MEMORY_SIZE / PAGE_SIZE && target === 0; p++) {
      if (decodePageStamp(memory.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE)).valid) target = p
    }
    expect(target).toBeGreaterThan(0)
    const offset = target * PAGE_SIZE + 1000
    await overwrite(image.memoryPath, offset, Buffer.from([(memory[offset] ?? 0) ^ 0x01]))

    const result = await verifyImage(image)
    expect(result.ok).toBe(false)
    expect(result.badPages).toEqual([{ page: target, reason: expect.stringMatching(/checksum mismatch/) as string }])
    await expectCliFailure(image, `page ${target}:`)
  })

  it('an older copy of a page (a page the migration missed)', async () => {
    const image = await copyOfSource()
    const current = await readFile(image.memoryPath)
    const early = await readFile(earlyMemoryPath)
    let target = 0
    for (let p = 1; p < MEMORY_SIZE / PAGE_SIZE && target === 0; p++) {
      const range = [p * PAGE_SIZE, (p + 1) * PAGE_SIZE] as const
      if (!early.subarray(...range).equals(current.subarray(...range))) target = p
    }
    expect(target).toBeGreaterThan(0)
    await overwrite(image.memoryPath, target * PAGE_SIZE, early.subarray(target * PAGE_SIZE, (target + 1) * PAGE_SIZE))

    const result = await verifyImage(image)
    expect(result.ok).toBe(false)
    expect(result.badPages).toEqual([{ page: target, reason: expect.stringMatching(/^(stale|lost)/) as string }])
    await expectCliFailure(image, `page ${target}:`)
  })

  it('a dropped record', async () => {
    const image = await copyOfSource()
    const header = await readHeader(image.memoryPath)
    expect(header.records).toBeGreaterThanOrEqual(2)
    const size = recordTotalSize(header.recordSize)
    await overwrite(image.cachePath, size, Buffer.alloc(size))

    const result = await verifyImage(image)
    expect(result.ok).toBe(false)
    expect(result.badRecords).toEqual([{ record: 2, reason: 'missing (no record magic)' }])
    await expectCliFailure(image, 'record 2:')
  })

  it('a header that lies about the counts', async () => {
    const image = await copyOfSource()
    const { writes } = await readHeader(image.memoryPath)
    const cli = await runCli(['verify', ...image.args, '--writes', String(writes + 1), '--json'])
    expect(cli.code).toBe(3)
    expect(JSON.parse(cli.stdout)).toMatchObject({ ok: false, errors: [`writes: expected ${writes + 1}, header says ${writes}`] })
  })
})
