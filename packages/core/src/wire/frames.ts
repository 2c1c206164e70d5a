/** The frame types of the Shoal migration protocol (see docs/ARCHITECTURE.md for the table). */

/** Numeric frame type on the wire. */
export enum FrameType {
  Hello = 1,
  Accept = 2,
  LaneHello = 3,
  Data = 4,
  Ack = 5,
  RoundEnd = 6,
  Pause = 7,
  DeviceState = 8,
  Verify = 9,
  VerifyResult = 10,
  Commit = 11,
  Committed = 12,
  Abort = 13,
  BlockRequest = 14,
  BlockData = 15,
  BlockMissing = 16,
  VolumeQuery = 17,
  VolumeSummary = 18,
  VolumeHashesRequest = 19,
  VolumeHashes = 20,
  CacheManifest = 21,
  CacheClaim = 22,
  CacheStatus = 23,
  CacheRelease = 24,
  CacheReleased = 25
}

/** Which part of an image a data frame carries. */
export enum Area {
  Memory = 0,
  Cache = 1
}

/** A run of consecutive units (pages or blocks). */
export interface Run {
  /** First unit index. */
  start: number
  /** Number of units. */
  count: number
}

/** Source → destination, first frame on the control lane: what is about to arrive. */
export interface HelloFrame {
  type: FrameType.Hello
  /** 16 random bytes naming the session; data lanes quote it. */
  sessionId: Uint8Array
  /** Image name (1–128 chars of [A-Za-z0-9._-]). */
  image: string
  pageSize: number
  memorySize: number
  blockSize: number
  cacheSize: number
  /** Number of data lanes the source intends to open. */
  lanes: number
  /** Workload driver name, e.g. `synthetic`. */
  driver: string
  /** Driver configuration as JSON text (≤ 64 KiB). */
  driverConfig: string
  /**
   * The image is stopped on the source: it arrives stopped (no workload is started on the
   * destination). Encoded as an optional trailing flags byte (bit 0), absent when false.
   */
  stopped?: boolean
}

/** Destination → source: the session is accepted. */
export interface AcceptFrame {
  type: FrameType.Accept
  sessionId: Uint8Array
  /**
   * Where this destination takes data lanes off its main thread (`host:port` of its data workers'
   * TLS listeners); absent when it has none (data lanes then use the transport of the control lane).
   */
  dataEndpoints?: string[]
}
/** Source → destination, first frame on a data lane. */
export interface LaneHelloFrame { type: FrameType.LaneHello, sessionId: Uint8Array, lane: number }
/** A batch of pages or blocks. `payload` holds the units of `runs` back to back. */
export interface DataFrame {
  type: FrameType.Data
  round: number
  chunkId: number
  area: Area
  runs: Run[]
  payload: Uint8Array
}
/** Destination → source on a data lane: these chunks are written. */
export interface AckFrame { type: FrameType.Ack, chunkIds: number[] }
/** Source → destination: every chunk of the round is acknowledged. */
export interface RoundEndFrame { type: FrameType.RoundEnd, round: number, units: number, bytes: number }
/** Source → destination: the workload is paused; the final round follows. */
export interface PauseFrame { type: FrameType.Pause, round: number }
/** Source → destination: device state captured at pause. */
export interface DeviceStateFrame { type: FrameType.DeviceState, state: Uint8Array }
/** Source → destination: the source's digests at pause time. */
export interface VerifyFrame { type: FrameType.Verify, memoryDigest: Uint8Array, cacheDigest: Uint8Array }
/** Destination → source: the destination's digests and whether they match. */
export interface VerifyResultFrame {
  type: FrameType.VerifyResult
  ok: boolean
  memoryDigest: Uint8Array
  cacheDigest: Uint8Array
  /**
   * Post-copy: bitmap of the cache blocks not on the destination yet (claimed, still to be
   * fetched by hash). `cacheDigest` is then the digest with those blocks' regions masked (see
   * `maskedDigest`); the source compares it with its own, masked the same way.
   */
  deferred?: Uint8Array
}
/** Source → destination: take over the workload. */
export interface CommitFrame { type: FrameType.Commit }
/** Destination → source: the workload runs here now. */
export interface CommittedFrame { type: FrameType.Committed }
/** Either way: the migration is over, nothing is kept. */
export interface AbortFrame { type: FrameType.Abort, code: string, message: string }

/** Block protocol: asks a replica for blocks of a volume by content hash. */
export interface BlockRequestFrame { type: FrameType.BlockRequest, requestId: number, volume: string, hashes: Uint8Array[] }
/** Block protocol: one block, named by its SHA-256 (the requester verifies it). */
export interface BlockDataFrame { type: FrameType.BlockData, requestId: number, hash: Uint8Array, data: Uint8Array }
/** Block protocol: the replica does not hold this block. */
export interface BlockMissingFrame { type: FrameType.BlockMissing, requestId: number, hash: Uint8Array }
/** Block protocol: which blocks of a volume do you hold? */
export interface VolumeQueryFrame { type: FrameType.VolumeQuery, volume: string }
/**
 * Block protocol: a replica's summary of a volume. On the wire `have` costs nothing when the
 * replica holds all or none of the blocks, else one bit per block (see docs/ARCHITECTURE.md).
 */
export interface VolumeSummaryFrame {
  type: FrameType.VolumeSummary
  volume: string
  /**
   * Where this replica also serves block lanes on its data workers (`host:port`, as in ACCEPT);
   * absent when it has none.
   */
  dataEndpoints?: string[]
  blockSize: number
  blockCount: number
  /** Number of blocks held. */
  held: number
  /** SHA-256 of the volume's hash list: replicas of the same volume content agree on it. */
  hashesDigest: Uint8Array
  /**
   * Bitmap of the blocks held (`blockCount` bits). Empty when `held` is 0 or `blockCount`: the
   * count says none or all, and a decoder never builds a bitmap a short frame does not carry.
   */
  have: Uint8Array
}
/** Block protocol: the SHA-256 of blocks [start, start + count) of a volume, please. */
export interface VolumeHashesRequestFrame { type: FrameType.VolumeHashesRequest, volume: string, start: number, count: number }
/** Block protocol: 32 bytes per block from `start`. */
export interface VolumeHashesFrame { type: FrameType.VolumeHashes, volume: string, start: number, hashes: Uint8Array }

/**
 * Source → destination after ACCEPT, for an image whose cache caches a volume: the volume's hash
 * and the cache's state for blocks [start, start + n), n = hashes / 32 (≤ 65536, start a multiple
 * of 8). Frames follow each other until the last block.
 */
export interface CacheManifestFrame {
  type: FrameType.CacheManifest
  volume: string
  start: number
  /** 32 bytes per block: the SHA-256 of the volume's block. */
  hashes: Uint8Array
  /** Bitmap over the n blocks: written locally (not identical to the volume). */
  dirty: Uint8Array
  /** Bitmap over the n blocks: recently read, to travel early from the source. */
  hot: Uint8Array
  /**
   * Post-copy (on every frame of the manifest): the switchover does not wait for the clean blocks
   * the destination claims; they keep arriving after it, the source serving them too.
   */
  postcopy?: boolean
  /**
   * Post-copy only: the destination may stream clean blocks during the pre-copy rounds too
   * (mode byte 2). Without it (mode byte 1) the bulk stream waits for the switchover.
   */
  prefetch?: boolean
}
/** Destination → source: bitmap of the cache blocks the destination will get elsewhere (replicas, local stores). */
export interface CacheClaimFrame { type: FrameType.CacheClaim, claimed: Uint8Array }
/**
 * Destination → source: progress of the cache blocks it fetches elsewhere; when `done`, `need`
 * is the bitmap of claimed blocks nobody else could serve (the source sends them after all).
 */
export interface CacheStatusFrame { type: FrameType.CacheStatus, done: boolean, need: Uint8Array, stats: string }
/**
 * Destination → the source's node, on a block lane, after a post-copy migration: every block of
 * the cache has arrived, so the copy the source kept for session `sessionId` may go.
 */
export interface CacheReleaseFrame { type: FrameType.CacheRelease, volume: string, sessionId: Uint8Array }
/** The source's node → destination: the copy is released (or was not held). */
export interface CacheReleasedFrame { type: FrameType.CacheReleased }

/** Any decoded frame. */
export type Frame = HelloFrame | AcceptFrame | LaneHelloFrame | DataFrame | AckFrame | RoundEndFrame |
PauseFrame | DeviceStateFrame | VerifyFrame | VerifyResultFrame | CommitFrame | CommittedFrame | AbortFrame |
BlockRequestFrame | BlockDataFrame | BlockMissingFrame | VolumeQueryFrame | VolumeSummaryFrame |
VolumeHashesRequestFrame | VolumeHashesFrame | CacheManifestFrame | CacheClaimFrame | CacheStatusFrame |
CacheReleaseFrame | CacheReleasedFrame
