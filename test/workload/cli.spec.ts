/**
 * Command-line contract: bad arguments exit 2 and name the argument; nothing is created.
 */

import { access, writeFile } from 'node:fs/promises'
import { afterEach, describe, expect, it } from 'vitest'
import { initImage } from '@shoal/workload'
import { killWorkloads, removeTempFiles, runCli, tempImage } from './harness.js'

afterEach(async () => {
  await killWorkloads()
  await removeTempFiles()
})

describe('shoal-workload CLI', () => {
  it.each([
    { args: ['init', '--memory-size', '1M', '--cache-path', '/tmp/x', '--cache-size', '0'], names: '--memory-path' },
    { args: ['init', '--memory-path', 'M', '--memory-size', '5000', '--cache-path', 'C', '--cache-size', '0'], names: '--memory-size' },
    { args: ['init', '--memory-path', 'M', '--memory-size', 'lots', '--cache-path', 'C', '--cache-size', '0'], names: '--memory-size' },
    { args: ['init', '--memory-path', 'M', '--memory-size', '1M', '--cache-path', 'C', '--cache-size', '0', '--fill', 'ones'], names: '--fill' },
    { args: ['init', '--memory-path', 'M', '--memory-size', '1M', '--cache-path', 'C', '--cache-size', '0', '--hot-percent', '101'], names: '--hot-percent' },
    { args: ['init', '--memory-path', 'M', '--memory-size', '1M', '--cache-path', 'C', '--cache-size', '0', '--seed', '-3'], names: '--seed' },
    { args: ['run', '--memory-path', 'M', '--cache-path', 'C', '--rate', 'fast'], names: '--rate' },
    { args: ['run', '--memory-path', 'M', '--cache-path', 'C', '--bogus'], names: '--bogus' },
    { args: ['verify', '--memory-path', 'M', '--cache-path', 'C', '--writes', '-1'], names: '--writes' },
    { args: ['verify', '--cache-path', 'C'], names: '--memory-path' },
    { args: ['frobnicate'], names: 'frobnicate' }
  ])('exits 2 naming $names for $args', async ({ args, names }) => {
    const cli = await runCli(args)
    expect(cli.code).toBe(2)
    expect(cli.stderr).toContain(names)
  })

  it('creates nothing on bad arguments and refuses to overwrite without --force', async () => {
    const image = tempImage()
    const bad = await runCli(['init', ...image.args, '--memory-size', '1M', '--cache-size', '0', '--hot-pages', '1000000'])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain('--hot-pages')
    await expect(access(image.memoryPath)).rejects.toThrow(/ENOENT/)

    const args = ['init', ...image.args, '--memory-size', '1M', '--cache-size', '64k', '--fill', 'random']
    expect((await runCli(args)).code).toBe(0)
    const again = await runCli(args)
    expect(again.code).toBe(2)
    expect(again.stderr).toContain('--force')
    expect((await runCli([...args, '--force'])).code).toBe(0)
  })

  it('exits 2 when run cannot use the image, 3 when verify finds no valid header', async () => {
    const image = tempImage()
    const missing = await runCli(['run', ...image.args])
    expect(missing.code).toBe(2)
    expect(missing.stderr).toContain('ENOENT')

    await writeFile(image.memoryPath, Buffer.alloc(8192))
    await writeFile(image.cachePath, Buffer.alloc(0))
    const notAnImage = await runCli(['run', ...image.args])
    expect(notAnImage.code).toBe(2)
    expect(notAnImage.stderr).toContain('bad magic')
    const verify = await runCli(['verify', ...image.args])
    expect(verify.code).toBe(3)
    expect(verify.stdout).toContain('bad magic')
  })

  it('exits 2 when the cache file does not match the header', async () => {
    const image = tempImage()
    await initImage({ ...image, memorySize: 8192, cacheSize: 4096 })
    await writeFile(image.cachePath, Buffer.alloc(100))
    const cli = await runCli(['run', ...image.args])
    expect(cli.code).toBe(2)
    expect(cli.stderr).toContain('Cache file is 100 bytes')
  })
})
