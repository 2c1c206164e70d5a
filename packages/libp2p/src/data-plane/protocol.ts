import type { DataHeader, ErrorInfo, LoadPlan } from '@shoal/core'

/**
 * Messages between a node's main thread and its data workers. No message carries payload bytes:
 * a worker reads (source) or writes (destination) the image files itself; what crosses threads is
 * chunk descriptions, decisions and small control frames (LANE_HELLO, ACK, VERIFY…).
 * Lane ids are given by the main thread for lanes it dials, and by the worker (`in<n>`) for lanes
 * it accepts.
 */
export type ToWorker =
  /** Start: the TLS identity, and the addresses to listen on for data lanes. */
  | { op: 'init', cert: string, key: string, listen: string[], handshakeTimeoutMs: number, maxFrameSize: number, holdData: boolean }
  /** Open a data lane to `host:port`, whose certificate must be that of `peer`. */
  | { op: 'dial', lane: string, host: string, port: number, peer: string, localAddress?: string, timeoutMs: number }
  /** A frame to send as it is; answered by `taken` with the same `seq` once the socket has room. */
  | { op: 'send', lane: string, seq: number, frame: Uint8Array | Uint8Array[] }
  /** The session's thread has read `bytes` of the frames forwarded to it (flow control). */
  | { op: 'consumed', lane: string, bytes: number }
  /** A DATA frame to read as `plan` says and send; answered by `taken` with the same `seq`. */
  | { op: 'data', lane: string, seq: number, header: Omit<DataHeader, 'type'>, plan: LoadPlan }
  /** From now on, write this lane's DATA frames into these files (after asking with `header`). */
  | { op: 'sink', lane: string, files: Array<{ path: string, unitSize: number, units: number } | undefined> }
  /** The answer to `header` `id`: write it (with this ticket) or drop it (`ticket` undefined). */
  | { op: 'admit', lane: string, id: number, ticket?: number }
  /** An accepted lane was refused by the main thread (not allowed, too many). */
  | { op: 'refuse', lane: string }
  | { op: 'close', lane: string }
  | { op: 'abort', lane: string, message?: string }

export type FromWorker =
  | { op: 'ready', listening: Array<{ host: string, port: number }> }
  | { op: 'failed', error: ErrorInfo }
  /** A lane dialled by the main thread is up (its peer proved its identity). */
  | { op: 'opened', lane: string, local?: string, remote?: string }
  /** A lane was accepted and its peer proved its identity `peer`. */
  | { op: 'incoming', lane: string, peer: string, local?: string, remote?: string }
  | { op: 'frame', lane: string, frame: Uint8Array }
  | { op: 'taken', lane: string, seq: number }
  /** A DATA frame arrived (its payload stays in the worker): may it be written? */
  | { op: 'header', lane: string, id: number, header: DataHeader, payloadBytes: number }
  | { op: 'written', lane: string, ticket: number, error?: { code?: string, message: string } }
  /** The lane ended: gracefully (no error) or not. */
  | { op: 'closed', lane: string, error?: ErrorInfo }

/** ALPN protocol of Shoal's data lanes. */
export const DATA_LANE_ALPN = 'shoal-data/1'
