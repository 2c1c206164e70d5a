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
