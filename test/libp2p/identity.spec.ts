import { readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { InvalidIdentityError, loadOrCreateIdentity } from '@shoal/libp2p'
import { tempDir } from '../fixtures/temp.js'

describe('loadOrCreateIdentity', () => {
  const cleanups: Array<() => void> = []
  afterEach(() => { for (const c of cleanups.splice(0)) c() })

  function dir (): string {
    const d = tempDir('identity')
    cleanups.push(d.cleanup)
    return d.path
  }

  it('creates an Ed25519 key with mode 0600 and loads the same key again', async () => {
    const data = join(dir(), 'nested', 'data')
    const first = await loadOrCreateIdentity(data)
    const second = await loadOrCreateIdentity(data)
    expect(first.type).toBe('Ed25519')
    expect(second.equals(first)).toBe(true)
    expect(second.publicKey.toString()).toBe(first.publicKey.toString())
    expect(statSync(join(data, 'identity.key')).mode & 0o777).toBe(0o600)
  })

  it('agrees on one key when two loads race on a fresh directory', async () => {
    const data = dir()
    const [a, b] = await Promise.all([loadOrCreateIdentity(data), loadOrCreateIdentity(data)])
    expect(a.equals(b)).toBe(true)
  })

  it('refuses a corrupt file with a clear error and leaves it untouched', async () => {
    const data = dir()
    const file = join(data, 'identity.key')
    writeFileSync(file, 'this is not a key')
    const err = await loadOrCreateIdentity(data).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(InvalidIdentityError)
    expect((err as InvalidIdentityError).code).toBe('ERR_INVALID_IDENTITY')
    expect((err as Error).message).toContain(file)
    expect(readFileSync(file, 'utf8')).toBe('this is not a key')
  })

  it('refuses a truncated key file', async () => {
    const data = dir()
    await loadOrCreateIdentity(data)
    const file = join(data, 'identity.key')
    const bytes = readFileSync(file)
    writeFileSync(file, bytes.subarray(0, bytes.byteLength - 10))
    await expect(loadOrCreateIdentity(data)).rejects.toBeInstanceOf(InvalidIdentityError)
  })
})
