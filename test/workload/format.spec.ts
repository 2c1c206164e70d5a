import { readFile, truncate, writeFile } from 'node:fs/promises'
import { afterEach, describe, expect, it } from 'vitest'
import {
  createPicker,
  decodeHeader,
  decodePageStamp,
  decodeRecordStamp,
  encodeHeader,
  encodePage,
  encodeRecord,
  ImageExistsError,
  ImageSizeMismatchError,
  initImage,
  InvalidArgumentError,
  InvalidHeaderError,
  PAGE_SIZE,
  readHeader,
  recordTotalSize,
  type WorkloadHeader
} from '@shoal/workload'
import { removeTempFiles, tempImage } from './harness.js'

const header: WorkloadHeader = {
  version: 1,
  seed: 0xfedcba9876543210n,
  hotPages: 12,
  hotPercent: 90,
  writes: 2 ** 40 + 5,
  records: 3,
  cacheBytes: 3 * 4096,
  memorySize: 1024 * PAGE_SIZE,
  cacheSize: 1024 * 1024,
  recordSize: 4076,
  fill: 'random',
  pendingWrites: 2 ** 40 + 9,
  pendingRecords: 4
}

afterEach(removeTempFiles)

describe('header', () => {
  it('round-trips every field in one page', () => {
    const page = encodeHeader(header)
    expect(page.length).toBe(PAGE_SIZE)
    expect(page.subarray(0, 4).toString('latin1')).toBe('SHWL')
    expect(decodeHeader(page)).toEqual(header)
  })

  it('rejects a bad magic', () => {
    const page = encodeHeader(header)
    page.write('XXXX', 0, 'latin1')
    expect(() => decodeHeader(page)).toThrow(InvalidHeaderError)
    expect(() => decodeHeader(page)).toThrow(/bad magic/)
  })

  it('rejects a bad checksum', () => {
    const page = encodeHeader(header)
    page[24] = (page[24] ?? 0) ^ 1 // writes counter
    expect(() => decodeHeader(page)).toThrow(InvalidHeaderError)
    expect(() => decodeHeader(page)).toThrow(/checksum mismatch/)
  })

  it('rejects contradictory counters even with a valid checksum', () => {
    const page = encodeHeader({ ...header, cacheBytes: 12 })
    expect(() => decodeHeader(page)).toThrow(/cacheBytes/)
  })
})

describe('pages and records', () => {
  it('stamps a page with magic, index, write number and checksum', () => {
    const page = encodePage(1234, 77, 2 ** 33 + 1, Buffer.alloc(PAGE_SIZE))
    expect(page.subarray(0, 4).toString('latin1')).toBe('SHPG')
    expect(decodePageStamp(page)).toEqual({ valid: true, hasMagic: true, page: 77, n: 2 ** 33 + 1 })
    // Different writes give different fills.
    expect(page.equals(encodePage(1234, 77, 2 ** 33 + 2, Buffer.alloc(PAGE_SIZE)))).toBe(false)
    page[100] = (page[100] ?? 0) ^ 0xff
    expect(decodePageStamp(page).valid).toBe(false)
  })

  it('encodes a record of recordSize + 20 bytes that decodes back', () => {
    const size = recordTotalSize(4076)
    expect(size).toBe(4096)
    const record = encodeRecord(99, 5, 4076, Buffer.alloc(size))
    expect(record.subarray(0, 4).toString('latin1')).toBe('SHRC')
    expect(decodeRecordStamp(record, 4076)).toEqual({ valid: true, m: 5 })
    record[2000] = (record[2000] ?? 0) ^ 1
    expect(decodeRecordStamp(record, 4076).valid).toBe(false)
  })
})

describe('picker', () => {
  it('is deterministic, stays on data pages and favours the hot set', () => {
    const init = { seed: 42n, pageCount: 1001, hotPages: 50, hotPercent: 90 }
    const a = createPicker(init)
    const b = createPicker(init)
    let hot = 0
    let differing = 0
    const seen = new Set<number>()
    for (let n = 1; n <= 100_000; n++) {
      const page = a(n)
      if (page !== b(n)) differing++
      if (page <= 50) hot++
      seen.add(page)
    }
    expect(differing).toBe(0)
    expect(Math.min(...seen)).toBe(1)
    expect(Math.max(...seen)).toBe(1000)
    // 90% hot plus the cold writes that happen to fall into the hot set (5% of 10%).
    expect(hot / 100_000).toBeGreaterThan(0.89)
    expect(hot / 100_000).toBeLessThan(0.92)
    expect(seen.size).toBe(1000)
    const other = createPicker({ ...init, seed: 43n })
    const firsts = (pick: (n: number) => number): number[] => Array.from({ length: 100 }, (_, i) => pick(i + 1))
    expect(firsts(other)).not.toEqual(firsts(a))
  })
})

describe('initImage and readHeader', () => {
  it('creates full-size files and a readable header', async () => {
    const image = tempImage()
    await initImage({ ...image, memorySize: 64 * PAGE_SIZE, cacheSize: 10_000, seed: 7n, fill: 'random' })
    const read = await readHeader(image.memoryPath)
    expect(read).toMatchObject({ seed: 7n, writes: 0, records: 0, memorySize: 64 * PAGE_SIZE, cacheSize: 10_000, fill: 'random', hotPages: 6, hotPercent: 90 })
    const memory = await readFile(image.memoryPath)
    expect(memory.length).toBe(64 * PAGE_SIZE)
    // Random fill: data pages hold real bytes.
    expect(memory.subarray(PAGE_SIZE, 2 * PAGE_SIZE).equals(Buffer.alloc(PAGE_SIZE))).toBe(false)
    expect((await readFile(image.cachePath)).length).toBe(10_000)
  })

  it('refuses to overwrite unless forced, and rejects bad sizes before creating anything', async () => {
    const image = tempImage()
    const opts = { ...image, memorySize: 8 * PAGE_SIZE, cacheSize: 0 }
    await initImage(opts)
    await expect(initImage(opts)).rejects.toThrow(ImageExistsError)
    await expect(initImage({ ...opts, force: true })).resolves.toMatchObject({ writes: 0 })

    const other = tempImage()
    const error = await initImage({ ...other, memorySize: 5000, cacheSize: 0 }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(InvalidArgumentError)
    expect((error as InvalidArgumentError).option).toBe('--memory-size')
    await expect(readFile(other.memoryPath)).rejects.toThrow(/ENOENT/)
  })

  it('rejects a file that is not an image, and a header that does not match the file size', async () => {
    const image = tempImage()
    await writeFile(image.memoryPath, Buffer.alloc(2 * PAGE_SIZE, 1))
    await expect(readHeader(image.memoryPath)).rejects.toThrow(InvalidHeaderError)

    await initImage({ ...image, memorySize: 8 * PAGE_SIZE, cacheSize: 0, force: true })
    await truncate(image.memoryPath, 16 * PAGE_SIZE)
    await expect(readHeader(image.memoryPath)).rejects.toThrow(ImageSizeMismatchError)
  })
})
