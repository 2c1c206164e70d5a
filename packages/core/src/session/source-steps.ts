import { Bitmap } from '../bitmap.js'
import { InvalidArgumentError, ProtocolError } from '../errors.js'
import { FrameType } from '../wire/frames.js'
import { manifestFrames } from '../volume/cache-manifest.js'
import type { CacheManifest } from '../volume/cache-manifest.js'
import type { ControlChannel } from './control-channel.js'

/**
 * The cache offer: sends the cache manifest and reads the destination's claim, the clean cold
 * blocks it will get elsewhere. Returns the claimed blocks the source will not send (clean and
 * cold per the manifest).
 */
export async function offerCacheBlocks (control: ControlChannel, m: CacheManifest, blocks: number, timeoutMs: number, signal?: AbortSignal, postcopy = false, prefetch = false): Promise<Bitmap> {
  if (m.hashes.byteLength !== blocks * 32 || m.dirty.size !== blocks || m.hot.size !== blocks) {
    throw new InvalidArgumentError(`cache manifest describes ${m.hashes.byteLength / 32} blocks, the cache has ${blocks}`)
  }
  for (const f of manifestFrames(m)) await control.send(postcopy ? { ...f, postcopy, ...(prefetch ? { prefetch } : {}) } : f)
  const claim = await control.expect(FrameType.CacheClaim, timeoutMs, signal)
  if (claim.claimed.byteLength !== Math.ceil(blocks / 8)) throw new ProtocolError('cache claim does not match the block count')
  const out = new Bitmap(blocks)
  out.bits.set(claim.claimed)
  for (let i = 0; i < blocks; i++) if (out.get(i) && (m.dirty.get(i) || m.hot.get(i))) out.clear(i)
  return out
}

/** Resolves when `p` settles or after `ms`, whichever is first; throws if `signal` aborts. */
export async function waitFor (p: Promise<unknown>, ms: number, signal?: AbortSignal): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([p, new Promise(resolve => { timer = setTimeout(resolve, ms) })]).finally(() => { clearTimeout(timer) })
  signal?.throwIfAborted()
}
