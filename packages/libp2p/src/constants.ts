/** Defaults of the libp2p transport, in one place. */

/** File name of the node identity inside the data directory. */
export const IDENTITY_FILE = 'identity.key'

/**
 * Yamux stream window (initial and maximum). The yamux default starts at 256 KiB and grows only
 * when a window is consumed within 4 RTTs, which on loopback (RTT rounds to 0 ms) almost never
 * happens; starting at the maximum avoids a slow start that never ends.
 */
export const YAMUX_STREAM_WINDOW = 16 * 1024 * 1024

/**
 * Bytes a stream may hold unread before libp2p resets it. Must exceed the yamux window: a
 * paused stream stops granting window, but the peer may still send what it was granted.
 */
export const STREAM_READ_BUFFER_LIMIT = 2 * YAMUX_STREAM_WINDOW

/** Streams of one lane protocol allowed per connection and direction. */
export const MAX_LANE_STREAMS_PER_CONNECTION = 256

/** Decoded but unconsumed bytes a lane buffers before it pauses its stream (resumes at half). */
export const LANE_READ_HIGH_WATER = 8 * 1024 * 1024

/** Lanes opened per connection by {@link openLanes} unless told otherwise. */
export const DEFAULT_STREAMS_PER_CONNECTION = 1

/** After a local `close()`, how long to wait for the peer's close before resetting the stream. */
export const LANE_CLOSE_LINGER_MS = 10_000

/** How long a refused (unauthorized) stream may stay open after its ABORT frame. */
export const REFUSED_STREAM_LINGER_MS = 5_000

/** New inbound connections accepted per second from one IP (libp2p default: 5). */
export const INBOUND_CONNECTION_THRESHOLD = 100

/** Upper bound on open connections before libp2p starts pruning. */
export const MAX_CONNECTIONS = 1024
