import { createHash } from 'node:crypto'
import { Bitmap } from '../bitmap.js'
import { errorCode, ProtocolError, RemoteAbortError, ShoalError, UnknownVolumeError } from '../errors.js'
import { readAbortReason } from '../session/control-channel.js'
import type { Lane } from '../transport/lane.js'
import { decodeFrame, encodeFrame } from '../wire/codec.js'
import { FrameType } from '../wire/frames.js'
import type { BlockStore } from './block-store.js'

/**
 * Serves blocks of the volumes this peer holds on one lane (the transport has already checked
 * the requester against the allow-list): VOLUME_QUERY → VOLUME_SUMMARY, BLOCK_REQUEST →
 * BLOCK_DATA / BLOCK_MISSING per hash. A bad frame or an unknown volume ends the lane with ABORT.
 */
export async function serveBlocks (lane: Lane, lookup: (volume: string) => BlockStore | undefined): Promise<void> {
  try {
    for await (const raw of lane) {
      const f = decodeFrame(raw)
      if (f.type === FrameType.VolumeQuery) {
        const store = lookup(f.volume)
        if (store == null) throw new UnknownVolumeError(`no volume ${f.volume} here`)
        await lane.send(encodeFrame({ type: FrameType.VolumeSummary, volume: f.volume, blockSize: store.blockSize, blockCount: store.blockCount, have: store.summary() }))
      } else if (f.type === FrameType.BlockRequest) {
        const store = lookup(f.volume)
        if (store == null) throw new UnknownVolumeError(`no volume ${f.volume} here`)
        for (const hash of f.hashes) {
          const i = store.indexOf(hash)
          if (i != null && store.has(i)) {
            await lane.send(encodeFrame({ type: FrameType.BlockData, requestId: f.requestId, hash, data: await store.read(i) }))
          } else {
            await lane.send(encodeFrame({ type: FrameType.BlockMissing, requestId: f.requestId, hash }))
          }
        }
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

  /** The replica's summary of a volume: block size, count, and which blocks it holds. */
  async summary (volume: string): Promise<{ blockSize: number, blockCount: number, have: Bitmap }> {
    return await this.exclusive(async () => {
      await this.send(encodeFrame({ type: FrameType.VolumeQuery, volume }))
      const f = await this.read()
      if (f.type !== FrameType.VolumeSummary || f.volume !== volume) throw new ProtocolError(`expected VolumeSummary, got ${FrameType[f.type]}`)
      const have = new Bitmap(f.blockCount)
      have.bits.set(f.have)
      return { blockSize: f.blockSize, blockCount: f.blockCount, have }
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
