/**
 * The verifier's rules on hand-made images (no process): which in-flight writes and records
 * it accepts, and which leftovers it must reject.
 */

import { open } from 'node:fs/promises'
import { afterEach, describe, expect, it } from 'vitest'
import {
  createPicker,
  encodeHeader,
  encodePage,
  encodeRecord,
  initImage,
  PAGE_SIZE,
  readHeader,
  recordTotalSize,
  seedKeys,
  verifyImage,
  type WorkloadHeader
} from '@shoal/workload'
import { removeTempFiles, tempImage, type TempImage } from './harness.js'

afterEach(removeTempFiles)

/** Writes pages for the given write numbers exactly as the writer would. */
async function writePages (image: TempImage, numbers: number[]): Promise<void> {
  const header = await readHeader(image.memoryPath)
  const pick = createPicker({ ...header, pageCount: header.memorySize / PAGE_SIZE })
  const key = seedKeys(header.seed).page
  const file = await open(image.memoryPath, 'r+')
  try {
    for (const n of numbers) {
      const page = pick(n)
      await file.write(encodePage(key, page, n, Buffer.alloc(PAGE_SIZE)), 0, PAGE_SIZE, page * PAGE_SIZE)
    }
  } finally {
    await file.close()
  }
}

async function writeRecords (image: TempImage, numbers: number[]): Promise<void> {
  const header = await readHeader(image.memoryPath)
  const size = recordTotalSize(header.recordSize)
  const key = seedKeys(header.seed).record
  const file = await open(image.cachePath, 'r+')
  try {
    for (const m of numbers) {
      await file.write(encodeRecord(key, m, header.recordSize, Buffer.alloc(size)), 0, size, (m - 1) * size)
    }
  } finally {
    await file.close()
  }
}

async function patchHeader (image: TempImage, patch: Partial<WorkloadHeader>): Promise<void> {
  const header = { ...await readHeader(image.memoryPath), ...patch }
  const file = await open(image.memoryPath, 'r+')
  try {
    await file.write(encodeHeader(header), 0, PAGE_SIZE, 0)
  } finally {
    await file.close()
  }
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/** An image with writes 1..100 and records 1..5 completed. */
async function completedImage (fill: 'zero' | 'random' = 'zero'): Promise<TempImage> {
  const image = tempImage()
  await initImage({ ...image, memorySize: 256 * PAGE_SIZE, cacheSize: 32 * PAGE_SIZE, seed: 99n, hotPages: 8, fill })
  await writePages(image, range(1, 100))
  await writeRecords(image, range(1, 5))
  await patchHeader(image, { writes: 100, pendingWrites: 100, records: 5, pendingRecords: 5, cacheBytes: 5 * 4096 })
  return image
}

describe('verifyImage', () => {
  it('accepts a consistent image, with and without the expected counts', async () => {
    for (const fill of ['zero', 'random'] as const) {
      const image = await completedImage(fill)
      await expect(verifyImage(image)).resolves.toMatchObject({ ok: true, writes: 100, records: 5, pagesChecked: 255, recordsChecked: 5 })
      await expect(verifyImage({ ...image, writes: 100, records: 5 })).resolves.toMatchObject({ ok: true })
    }
  })

  it('rejects counts that differ from the header', async () => {
    const image = await completedImage()
    const result = await verifyImage({ ...image, writes: 99, records: 6 })
    expect(result.ok).toBe(false)
    expect(result.errors).toEqual(['writes: expected 99, header says 100', 'records: expected 6, header says 5'])
  })

  it('accepts writes and records of an interrupted batch up to the pending marks', async () => {
    const image = await completedImage()
    await patchHeader(image, { pendingWrites: 110, pendingRecords: 8 })
    await writePages(image, range(101, 104))
    await writeRecords(image, [6, 7])
    const result = await verifyImage({ ...image, writes: 100, records: 5 })
    expect(result).toMatchObject({ ok: true, inFlightWrites: 4, inFlightRecords: 2 })
  })

  it('accepts exactly the one in-flight write when the header announced one', async () => {
    const image = await completedImage()
    await patchHeader(image, { pendingWrites: 101 })
    await writePages(image, [101])
    await expect(verifyImage(image)).resolves.toMatchObject({ ok: true, inFlightWrites: 1 })
    await writePages(image, [102])
    const result = await verifyImage(image)
    expect(result.ok).toBe(false)
    expect(result.badPages[0]?.reason).toMatch(/beyond the header's last possible write 101/)
  })

  it('rejects an in-flight write that landed while an earlier one is missing', async () => {
    const image = await completedImage()
    const pick = createPicker({ ...await readHeader(image.memoryPath), pageCount: 256 })
    // Two in-flight writes on different pages, only the later one on disk.
    let skipped = 101
    while (pick(skipped) === pick(skipped + 1)) skipped++
    await patchHeader(image, { pendingWrites: skipped + 1 })
    await writePages(image, range(101, skipped - 1).concat([skipped + 1]))
    const result = await verifyImage(image)
    expect(result.ok).toBe(false)
    expect(result.badPages.map(({ page }) => page)).toContain(pick(skipped))
  })

  it('rejects a record beyond the pending mark and one after a gap', async () => {
    const image = await completedImage()
    await writeRecords(image, [6])
    const beyond = await verifyImage(image)
    expect(beyond.ok).toBe(false)
    expect(beyond.badRecords).toEqual([{ record: 6, reason: expect.stringMatching(/beyond/) as string }])

    await patchHeader(image, { pendingRecords: 8 })
    await writeRecords(image, [8])
    const gap = await verifyImage(image)
    expect(gap.badRecords).toEqual([{ record: 8, reason: expect.stringMatching(/record 7 is missing/) as string }])
  })

  it('stops when its signal is aborted', async () => {
    const image = await completedImage()
    await expect(verifyImage({ ...image, signal: AbortSignal.abort() })).rejects.toThrow(/abort/i)
  })
})
