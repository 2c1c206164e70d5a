import { randomBytes } from 'node:crypto'
import { link, mkdir, open, readFile, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { IDENTITY_FILE } from './constants.js'
import { InvalidIdentityError } from './errors.js'
import type { PrivateKey } from '@libp2p/interface'

/**
 * Loads the node's persistent Ed25519 identity from `<dataDir>/identity.key`, creating it (mode
 * 0600, directory 0700) on first start. The file holds the libp2p protobuf encoding of the key.
 *
 * Creation is atomic: the key is written to a temporary file and hard-linked into place, so two
 * processes starting at once agree on one key and nobody ever reads a half-written file.
 *
 * @throws {@link InvalidIdentityError} when the file exists but is not a valid Ed25519 key; the
 * file is left untouched (the operator decides whether to delete it and take a new peer ID).
 */
export async function loadOrCreateIdentity (dataDir: string): Promise<PrivateKey> {
  const path = join(dataDir, IDENTITY_FILE)
  const existing = await readIfExists(path)
  if (existing != null) return decodeIdentity(existing, path)

  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  const key = await generateKeyPair('Ed25519')
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`
  const handle = await open(tmp, 'wx', 0o600)
  try {
    await handle.writeFile(privateKeyToProtobuf(key))
    await handle.sync()
  } finally {
    await handle.close()
  }
  try {
    await link(tmp, path)
    return key
  } catch (err) {
    // Another process won the race: use its key.
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    return decodeIdentity(await readFile(path), path)
  } finally {
    await unlink(tmp).catch(() => {})
  }
}

async function readIfExists (path: string): Promise<Uint8Array | undefined> {
  try {
    return await readFile(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

function decodeIdentity (bytes: Uint8Array, path: string): PrivateKey {
  let key: PrivateKey
  try {
    key = privateKeyFromProtobuf(bytes)
  } catch (err) {
    throw new InvalidIdentityError(`identity file ${path} is corrupt (${(err as Error).message}); move it away to create a new identity`, { cause: err })
  }
  if (key.type !== 'Ed25519') {
    throw new InvalidIdentityError(`identity file ${path} holds a ${key.type} key, expected Ed25519`)
  }
  return key
}

/** The peer ID (as text) that `key` proves. */
export function peerIdOf (key: PrivateKey): string {
  return peerIdFromPrivateKey(key).toString()
}
