import { DEFAULT_CONTROL_TIMEOUT_MS, FRAME_HEADER_SIZE, FrameType, ProtocolError, TimeoutError } from '@shoal/core'
import type { Lane, OffThreadLane } from '@shoal/core'

/** Where a lane accepted by a data worker goes, by what its first frame asks for. */
export interface WorkerLaneRoutes {
  /** A migration's data lane (its first frame is LANE_HELLO). */
  data: (lane: OffThreadLane) => void
  /** A block lane (VOLUME_QUERY, VOLUME_HASHES_REQUEST or BLOCK_REQUEST first). */
  blocks: (lane: Lane) => void
}

const BLOCK_REQUESTS = new Set<number>([FrameType.VolumeQuery, FrameType.VolumeHashesRequest, FrameType.BlockRequest])

/**
 * Reads the first frame of a lane a data worker accepted and hands the lane, that frame still
 * first, to the migration it joins or to block serving. A lane that says nothing in time, or
 * something else, is aborted.
 */
export function routeWorkerLane (lane: OffThreadLane, routes: WorkerLaneRoutes, timeoutMs = DEFAULT_CONTROL_TIMEOUT_MS): void {
  const it = lane[Symbol.asyncIterator]()
  let timer: NodeJS.Timeout | undefined
  Promise.race([
    it.next(),
    new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new TimeoutError(`no first frame within ${timeoutMs} ms`)) }, timeoutMs) })
  ]).finally(() => { clearTimeout(timer) }).then((first) => {
    if (first.done === true) return
    const type = first.value.byteLength >= FRAME_HEADER_SIZE ? first.value[5]! : -1
    const replay = replaying(lane, first.value, it)
    if (type === FrameType.LaneHello) routes.data(replay)
    else if (BLOCK_REQUESTS.has(type)) routes.blocks(replay)
    else lane.abort(new ProtocolError(`a data worker lane cannot start with frame type ${type}`))
  }, (err: Error) => { lane.abort(err) })
}

/** `lane` with `first` read again before the rest of `rest`. */
function replaying (lane: OffThreadLane, first: Uint8Array, rest: AsyncIterator<Uint8Array>): OffThreadLane {
  let pending: Uint8Array | undefined = first
  return {
    id: lane.id,
    localAddress: lane.localAddress,
    remoteAddress: lane.remoteAddress,
    send: async (frame) => { await lane.send(frame) },
    sendData: async (header, plan) => { await lane.sendData(header, plan) },
    sinkData: (sink) => { lane.sinkData(sink) },
    close: async () => { await lane.close() },
    abort: (err) => { lane.abort(err) },
    [Symbol.asyncIterator]: () => ({
      next: async () => {
        if (pending == null) return await rest.next()
        const value = pending
        pending = undefined
        return { value, done: false }
      }
    })
  }
}
