import { createHash } from 'node:crypto'
import { Bitmap } from '../bitmap.js'
import { BlockHashMismatchError, errorCode, InvalidFrameError, ProtocolError, RemoteAbortError, ShoalError, UnknownVolumeError } from '../errors.js'
import { readAbortReason } from '../session/control-channel.js'
import type { Lane } from '../transport/lane.js'
import { decodeFrame, encodeFrame, MAX_HASHES_PER_FRAME } from '../wire/codec.js'
import { FrameType } from '../wire/frames.js'
import type { BlockStore } from './block-store.js'
import type { TokenBucket } from '../pacing/token-bucket.js'
import { MAX_FRAME_SIZE } from '../constants.js'

/**
 * What {@link serveBlocks} serves a volume from: a replica's {@link BlockStore}, or the cache a
 * post-copy source keeps for its destination ({@link KeptCacheBlocks}).
 */
export type BlockProvider = Pick<BlockStore, 'blockSize' | 'blockCount' | 'hashesDigest' | 'held' | 'summary' | 'hashRange' | 'indexOf' | 'has' | 'read'>

/** Options of {@link serveBlocks}. */
export interface ServeBlocksOptions {
  budget?: TokenBucket
  requests?: TokenBucket
  dataEndpoints?: () => string[]
  /**
   * A CACHE_RELEASE from this lane's peer: the destination of a post-copy migration has every
   * block, the cache kept for it may go. Without it the frame is refused.
   */
  release?: (volume: string, sessionId: Uint8Array) => Promise<void>
  /** Told of every block sent (its volume and bytes): a node's metrics. */
  onServed?: (volume: string, bytes: number) => void
}

/** Most blocks a volume summary can describe: a bitmap of them must fit in one frame. */
const MAX_SUMMARY_BLOCKS = MAX_FRAME_SIZE * 8

/**
 * Serves blocks of the volumes this peer holds on one lane (the transport has already checked
 * the requester against the allow-list): VOLUME_QUERY → VOLUME_SUMMARY, BLOCK_REQUEST →
 * BLOCK_DATA / BLOCK_MISSING per hash. A bad frame or an unknown volume ends the lane with ABORT.
 * With a `budget`, block bytes go out no faster than it allows (shared by all lanes given it);
 * with `requests`, blocks asked for are answered no faster than it allows (one token per hash:
 * a per-peer limit, so one peer cannot keep a replica's disk busy for everyone).
 */
export async function serveBlocks (lane: Lane, lookup: (volume: string) => BlockProvider | undefined, opts: ServeBlocksOptions = {}): Promise<void> {
  try {
    for await (const raw of lane) {
      const f = decodeFrame(raw)
      if (f.type === FrameType.VolumeQuery) {
        const store = lookup(f.volume)
        if (store == null) throw new UnknownVolumeError(`no volume ${f.volume} here`)
        const dataEndpoints = opts.dataEndpoints?.() ?? []
        await lane.send(encodeFrame({
          type: FrameType.VolumeSummary, volume: f.volume, blockSize: store.blockSize, blockCount: store.blockCount,
          held: store.held(), hashesDigest: store.hashesDigest, have: store.summary(), ...(dataEndpoints.length > 0 ? { dataEndpoints } : {})
        }))
      } else if (f.type === FrameType.VolumeHashesRequest) {
        const store = lookup(f.volume)
        if (store == null) throw new UnknownVolumeError(`no volume ${f.volume} here`)
        if (f.start + f.count > store.blockCount) throw new InvalidFrameError(`blocks ${f.start}+${f.count} beyond volume ${f.volume} (${store.blockCount} blocks)`)
        await lane.send(encodeFrame({ type: FrameType.VolumeHashes, volume: f.volume, start: f.start, hashes: store.hashRange(f.start, f.count) }))
      } else if (f.type === FrameType.BlockRequest) {
        const store = lookup(f.volume)
        if (store == null) throw new UnknownVolumeError(`no volume ${f.volume} here`)
        for (const hash of f.hashes) {
          await opts.requests?.take(1)
          const i = store.indexOf(hash)
          if (i != null && store.has(i)) {
            await opts.budget?.take(store.blockSize)
            await lane.send(encodeFrame({ type: FrameType.BlockData, requestId: f.requestId, hash, data: await store.read(i) }))
            opts.onServed?.(f.volume, store.blockSize)
          } else {
            await lane.send(encodeFrame({ type: FrameType.BlockMissing, requestId: f.requestId, hash }))
          }
        }
      } else if (f.type === FrameType.CacheRelease && opts.release != null) {
        await opts.release(f.volume, f.sessionId)
        await lane.send(encodeFrame({ type: FrameType.CacheReleased }))
      } else {
        throw new ProtocolError(`unexpected ${FrameType[f.type]} on a block lane`)
      }
    }
  } catch (err) {
    if (err instanceof ShoalError) {
      await lane.send(encodeFrame({ type: FrameType.Abort, code: errorCode(err), message: err.message })).catch(() => {})
      await lane.close().catch(() => {})
    } else {
      lane.abort(err instanceof Error ? err : undefined)
    }
  }
}

/** A replica's summary of one volume. */
export interface VolumeSummary {
  blockSize: number
  blockCount: number
  /** Blocks held. */
  held: number
  /** SHA-256 of the volume's hash list (same content, same digest). */
  hashesDigest: Uint8Array
  /** Which blocks are held. */
  have: Bitmap
  /** Where the replica also serves block lanes on its data workers (`host:port`). */
  dataEndpoints?: string[]
}

/** One answer of {@link BlockClient.fetch}. */
export type BlockResult =
  | { hash: Uint8Array, data: Uint8Array }
  | { hash: Uint8Array, missing: true }
  | { hash: Uint8Array, corrupt: true }

/**
 * Asks one replica for blocks over a lane. Every block is checked against the hash it was asked
 * for: a block whose bytes do not hash to it is reported `corrupt` (never returned as data), so
 * the caller can discard it, fetch it elsewhere and count the replica's failures.
 */
export class BlockClient {
  private readonly it: AsyncIterator<Uint8Array>
  private nextRequest = 1
  private busy: Promise<unknown> = Promise.resolve()

  constructor (readonly lane: Lane) {
    this.it = lane[Symbol.asyncIterator]()
  }

  /** The replica's summary of a volume: block size, count, which blocks it holds, and the digest of its hash list. */
  async summary (volume: string): Promise<VolumeSummary> {
    return await this.exclusive(async () => {
      await this.send(encodeFrame({ type: FrameType.VolumeQuery, volume }))
      const f = await this.read()
      if (f.type !== FrameType.VolumeSummary || f.volume !== volume) throw new ProtocolError(`expected VolumeSummary, got ${FrameType[f.type]}`)
      if (f.blockCount > MAX_SUMMARY_BLOCKS) throw new InvalidFrameError(`volume summary of ${f.blockCount} blocks exceeds ${MAX_SUMMARY_BLOCKS}`)
      const have = new Bitmap(f.blockCount)
      if (f.have.byteLength > 0) have.bits.set(f.have)
      else if (f.held === f.blockCount) have.fill()
      return { blockSize: f.blockSize, blockCount: f.blockCount, held: f.held, hashesDigest: f.hashesDigest, have, ...(f.dataEndpoints != null ? { dataEndpoints: f.dataEndpoints } : {}) }
    })
  }

  /** The hash list of a volume, read in frames of up to 65536 hashes (checked against `hashesDigest` when given). */
  async hashes (volume: string, blockCount: number, hashesDigest?: Uint8Array): Promise<Uint8Array> {
    return await this.exclusive(async () => {
      const out = new Uint8Array(blockCount * 32)
      for (let start = 0; start < blockCount; start += MAX_HASHES_PER_FRAME) {
        const count = Math.min(MAX_HASHES_PER_FRAME, blockCount - start)
        await this.send(encodeFrame({ type: FrameType.VolumeHashesRequest, volume, start, count }))
        const f = await this.read()
        if (f.type !== FrameType.VolumeHashes || f.volume !== volume || f.start !== start || f.hashes.byteLength !== count * 32) throw new ProtocolError('hash list answer does not match the request')
        out.set(f.hashes, start * 32)
      }
      if (hashesDigest != null && !createHash('sha256').update(out).digest().equals(hashesDigest)) {
        throw new BlockHashMismatchError(`the hash list of ${volume} does not match its digest`)
      }
      return out
    })
  }

  /** Fetches blocks by hash; answers come back in request order. */
  async fetch (volume: string, hashes: Uint8Array[]): Promise<BlockResult[]> {
    return await this.exclusive(async () => {
      const requestId = this.nextRequest++
      await this.send(encodeFrame({ type: FrameType.BlockRequest, requestId, volume, hashes }))
      const out: BlockResult[] = []
      for (const hash of hashes) {
        const f = await this.read()
        if ((f.type !== FrameType.BlockData && f.type !== FrameType.BlockMissing) || f.requestId !== requestId || !Buffer.from(f.hash).equals(hash)) {
          throw new ProtocolError('block answer out of order')
        }
        if (f.type === FrameType.BlockMissing) { out.push({ hash, missing: true }); continue }
        const ok = createHash('sha256').update(f.data).digest().equals(hash)
        out.push(ok ? { hash, data: f.data } : { hash, corrupt: true })
      }
      return out
    })
  }

  /** Post-copy: tells the source's node that the cache it kept for session `sessionId` may go. */
  async release (volume: string, sessionId: Uint8Array): Promise<void> {
    await this.exclusive(async () => {
      await this.send(encodeFrame({ type: FrameType.CacheRelease, volume, sessionId }))
      const f = await this.read()
      if (f.type !== FrameType.CacheReleased) throw new ProtocolError(`expected CacheReleased, got ${FrameType[f.type]}`)
    })
  }

  /** Sends; if the replica already hung up, reports the reason it gave (an ABORT), if any. */
  private async send (frame: Uint8Array[]): Promise<void> {
    try {
      await this.lane.send(frame)
    } catch (err) {
      throw (await readAbortReason(this.it)) ?? err
    }
  }

  private async read (): Promise<ReturnType<typeof decodeFrame>> {
    const r = await this.it.next()
    if (r.done === true) throw new ProtocolError('block lane closed by the replica')
    const f = decodeFrame(r.value)
    if (f.type === FrameType.Abort) throw new RemoteAbortError(f.code, f.message)
    return f
  }

  private async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.busy.then(fn, fn)
    this.busy = run.catch(() => {})
    return await run
  }
}
