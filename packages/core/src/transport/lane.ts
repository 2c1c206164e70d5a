import type { DataHeader } from '../wire/codec.js'
import type { LoadPlan } from '../tracker/load-plan.js'

/**
 * A lane: one ordered, reliable, message-framed channel to a peer, bound to one local interface.
 * Transports (libp2p, in-memory, anything else) implement it; sessions only see this interface.
 */
export interface Lane {
  /** Stable identifier for logs and reports, e.g. `127.0.0.1>127.0.0.2#0`. */
  readonly id: string
  /** Local interface address the lane is bound to, when known. */
  readonly localAddress?: string
  /** Remote address, when known. */
  readonly remoteAddress?: string
  /**
   * Sends one frame given as one or more byte slices that are concatenated on the wire.
   * Resolves once the transport accepted it (this is the back-pressure point).
   * Rejects with {@link LaneClosedError} when the lane is gone.
   */
  send: (frame: Uint8Array | readonly Uint8Array[]) => Promise<void>
  /** Frames received, in order. Ends when the peer closes; throws when the lane breaks. */
  [Symbol.asyncIterator]: () => AsyncIterator<Uint8Array>
  /** Closes gracefully (flushes what was sent). */
  close: () => Promise<void>
  /** Tears the lane down at once; pending and future sends reject. */
  abort: (err?: Error) => void
}

/** Something that opens more lanes to the same peer (used by a source session). */
export interface LaneOpener {
  /** Opens lane number `index` (0-based) or throws. */
  openLane: (index: number, signal?: AbortSignal) => Promise<Lane>
}

/**
 * What an off-thread data lane writes into on a destination: the session's files by area, and
 * the session's decisions. The payload of a DATA frame never reaches the session's thread: the
 * lane's owner (a data worker) asks {@link DataSink.admit} with the frame's header, writes the
 * payload into `files[area]` at the runs' offsets if admitted, then reports {@link DataSink.written}.
 */
export interface DataSink {
  /** Staging files by area number (`undefined` for an area the session does not have). */
  files: ReadonlyArray<{ path: string, unitSize: number, units: number } | undefined>
  /**
   * Decides about a frame before its payload is written: resolves with a ticket to write it, or
   * `undefined` to drop it (a stale duplicate). Rejects when the frame is invalid for the session
   * (the lane then sends the session's ABORT).
   */
  admit: (header: DataHeader, payloadBytes: number) => Promise<number | undefined>
  /** The admitted frame `ticket` was written (or failed to be, with a system error). */
  written: (ticket: number, error?: Error) => void
  /**
   * The lane broke before admitted frame `ticket` was written: nothing more of it will be
   * written (its chunk is unacknowledged, so the source sends it again on another lane).
   */
  abandon: (ticket: number) => void
}

/**
 * A data lane whose payload bytes are read and written by the thread that owns its connection
 * (a data worker), not by the session's thread: the session sends chunk descriptions and takes
 * decisions; control frames (LANE_HELLO, ACK, VERIFY…) still go through `send` and iteration.
 */
export interface OffThreadLane extends Lane {
  /**
   * Source: sends one DATA frame whose payload the lane's owner reads as `plan` says. Resolves
   * once the owner took the frame (the back-pressure point, as for `send`).
   */
  sendData: (header: Omit<DataHeader, 'type'>, plan: LoadPlan) => Promise<void>
  /** Destination: from now on, DATA frames arriving on this lane are written into `sink`. */
  sinkData: (sink: DataSink) => void
}

/** True when `lane` carries its payload off the session's thread. */
export function isOffThreadLane (lane: Lane): lane is OffThreadLane {
  return typeof (lane as Partial<OffThreadLane>).sendData === 'function' && typeof (lane as Partial<OffThreadLane>).sinkData === 'function'
}
