import { MAX_FRAME_SIZE } from '../constants.js'
import { InvalidFrameError, PeerUnreachableError } from '../errors.js'
import { encodeFrameBytes } from '../wire/codec.js'
import { FrameType } from '../wire/frames.js'
import type { Lane } from './lane.js'
import type { AcceptedLaneInfo, HandleLaneOptions, LaneTransport, OpenLaneOptions } from './lane-transport.js'
import { createMemoryLanePair } from './memory-lane.js'

/** Options of {@link createMemoryNetwork}. */
export interface MemoryNetworkInit {
  /** Frames a lane buffers before `send` waits; default 64 (see `createMemoryLanePair`). */
  highWaterMark?: number
}

/** A set of in-memory peers that open lanes to one another (for unit tests and same-process use). */
export interface MemoryNetwork {
  /** The transport of peer `peerId` (created on first use). */
  transport: (peerId: string) => LaneTransport
}

type Handler = { onLane: (lane: Lane, info: AcceptedLaneInfo) => void, opts: HandleLaneOptions }

/**
 * An in-memory {@link LaneTransport} network: lanes are `createMemoryLanePair` pairs, peers are
 * names, and the contract (frame limits, refusal, back-pressure, close, abort) is the one the
 * libp2p transport keeps, checked by the same compliance suite.
 */
export function createMemoryNetwork (init: MemoryNetworkInit = {}): MemoryNetwork {
  const handlers = new Map<string, Map<string, Handler>>()
  let lanes = 0
  const transport = (peerId: string): LaneTransport => ({
    peerId,
    async openLanes (peer: string, protocol: string, count: number, opts: OpenLaneOptions = {}): Promise<Lane[]> {
      if (!Number.isInteger(count) || count < 1) throw new RangeError('lane count must be a positive integer')
      opts.signal?.throwIfAborted()
      const h = handlers.get(peer)?.get(protocol)
      if (h == null) throw new PeerUnreachableError(`peer ${peer} is not on this memory network or does not speak ${protocol}`)
      const out: Lane[] = []
      for (let i = 0; i < count; i++) {
        const [mine, theirs] = createMemoryLanePair({ id: `mem${lanes++}:${peerId}>${peer}`, highWaterMark: init.highWaterMark })
        out.push(limitFrames(mine, opts.maxFrameSize ?? MAX_FRAME_SIZE))
        const accepted = limitFrames(theirs, h.opts.maxFrameSize ?? MAX_FRAME_SIZE)
        let allowed = false
        try { allowed = h.opts.isAllowed(peerId) } catch { allowed = false }
        if (!allowed) {
          void accepted.send(encodeFrameBytes({ type: FrameType.Abort, code: 'ERR_UNAUTHORIZED_PEER', message: `peer ${peerId} is not allowed on this node` }))
            .then(async () => { await accepted.close() }, () => {})
          continue
        }
        try { h.onLane(accepted, { peerId }) } catch (err) { accepted.abort(err as Error) }
      }
      return out
    },
    async handle (protocol, onLane, opts) {
      let mine = handlers.get(peerId)
      if (mine == null) { mine = new Map(); handlers.set(peerId, mine) }
      mine.set(protocol, { onLane, opts })
    }
  })
  return { transport }
}

/** The lane with its received frames checked against `max` bytes (a larger one fails the lane). */
function limitFrames (lane: Lane, max: number): Lane {
  return {
    id: lane.id,
    send: async (frame) => { await lane.send(frame) },
    close: async () => { await lane.close() },
    abort: (err) => { lane.abort(err) },
    async * [Symbol.asyncIterator] () {
      for await (const f of lane) {
        if (f.byteLength > max) {
          const err = new InvalidFrameError(`frame of ${f.byteLength} bytes exceeds this lane's limit of ${max}`)
          lane.abort(err)
          throw err
        }
        yield f
      }
    }
  }
}
