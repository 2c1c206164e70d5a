import type { HeardCapacity } from './capacity-announcer.js'
import type { EvacuateOptions, EvacuationReport } from './evacuation.js'
import type { BlockClient, MigrationProgress, MigrationReport, SourceSessionOptions } from '@shoal/core'
import type { ShoalLibp2p } from '@shoal/libp2p'
import type { ImageRecord } from './image-store.js'
import type { PullReport, VolumeInfo } from './volumes.js'
import type { PostCopyStatus } from './postcopy.js'
import type { KeptCacheInfo } from './kept-caches.js'
import type { MigrationRecord, MigrationSummary } from './migrations.js'

/*
 * The node's public API as types only: the control server and the node's parts import these,
 * never the node itself (no import cycle).
 */

/** Options of an image created on a node. */
export interface CreateImageOptions {
  name: string
  /** The driver that runs its workload (`synthetic`, `qemu`, ...); default `synthetic`. */
  driver?: string
  memorySize: number
  cacheSize: number
  /** Initial content: `zero` or `random` (real bytes). */
  fill?: 'zero' | 'random'
  pageSize?: number
  blockSize?: number
  /**
   * The cache caches this volume, which the node must hold in full: the cache starts as a copy
   * of it (every block clean) with per-block metadata beside it, so a migration can leave its
   * clean blocks to replicas. `cacheSize` and `blockSize` then come from the volume.
   */
  cacheVolume?: string
  /**
   * How migrations find changed memory pages: `scan` (compare on worker threads; any writer) or
   * `cooperative` (the workload marks what it writes; rounds cost what changed). Default: the
   * driver's choice. Stored as the config's `tracker` field.
   */
  tracker?: 'scan' | 'cooperative'
  /** Driver config (checked by the driver; it travels with the image). */
  config?: Record<string, unknown>
}

/** Options of {@link ShoalNode.migrate}. */
export interface MigrateOptions extends Omit<SourceSessionOptions, 'onProgress'> {
  /** Data lanes; default 4. */
  lanes?: number
  /** Data lanes per TCP connection; default 1 (one connection per lane). */
  streamsPerConnection?: number
  onProgress?: (p: MigrationProgress) => void
  /** Called with the migration's id (see {@link ShoalNode.migrations}) once it is registered. */
  onId?: (id: string) => void
}

/** What `shoal image verify` found: each check, and `ok` false if any failed (undefined if none could run). */
export interface ImageVerification {
  image: string
  ok?: boolean
  checks: Array<{ check: 'cache-blocks' | 'workload', ok?: boolean, detail: string }>
}

/** A node's view of itself, for `shoal status`. */
export interface NodeStatus {
  peerId: string
  addrs: string[]
  /**
   * Peers this node knows (bootstrap, mDNS, identify) with their addresses, and what each
   * connected peer that takes images from this node announced it can take.
   */
  peers: Array<{ peerId: string, addrs: string[], connected: boolean, capacity?: HeardCapacity }>
  /** Hosted images; `postcopy` while the cache of one that arrived by post-copy still streams in. */
  images: Array<ImageRecord & { pid?: number, postcopy?: PostCopyStatus }>
  /** Replica volumes this node serves. */
  volumes: VolumeInfo[]
  /** Caches kept for the destinations of post-copy migrations out (until each releases its copy). */
  kept?: KeptCacheInfo[]
  incoming: number
  /** Images arriving right now (their names are reserved). */
  arriving?: string[]
}

/** A Shoal peer: hosts images and their workloads, sends and receives migrations. */
export interface ShoalNode {
  readonly peerId: string
  readonly libp2p: ShoalLibp2p
  addrs: () => string[]
  /** Where its Prometheus metrics are served, once started with `metrics` (else undefined). */
  metricsUrl?: string
  start: () => Promise<void>
  /** Stops migrations, workloads started here, workers and sockets. */
  stop: () => Promise<void>
  createImage: (opts: CreateImageOptions) => Promise<ImageRecord>
  /**
   * Starts an image's workload. Refused for an image that is `orphaned` or `in-doubt` after a
   * restart (a second writer would corrupt it) unless `force`, once the operator has checked.
   */
  startImage: (name: string, opts?: { force?: boolean }) => Promise<ImageRecord>
  migrate: (name: string, to: string, opts?: MigrateOptions) => Promise<MigrationReport>
  /**
   * Moves every image (or the ones named) off this node to peers that can take it, several at
   * once under one bandwidth budget, retrying a failed image elsewhere (`shoal evacuate`).
   */
  evacuate: (opts: EvacuateOptions) => Promise<EvacuationReport>
  /** Migrations out of this node, running and past (newest first). */
  migrations: () => MigrationSummary[]
  /** One migration, whole (id or a unique prefix of 4+ hex digits). */
  migration: (id: string) => MigrationRecord
  /** Cancels a running migration: it aborts and the workload keeps running here. */
  cancelMigration: (id: string) => MigrationSummary
  /** Caches this node keeps for post-copy destinations. */
  keptCaches: () => KeptCacheInfo[]
  /**
   * Drops a kept cache (session id or a unique prefix of 8+ hex digits); refused while its
   * destination is connected unless `force` ({@link ImageStateError}).
   */
  dropKeptCache: (session: string, force?: boolean) => Promise<KeptCacheInfo>
  /** The report files of a finished migration (JSON record and HTML page). */
  migrationFiles: (id: string) => { json: string, html: string }
  /**
   * Checks an image's data: its cache's clean blocks against the volume's hashes (when it caches
   * one) and the workload's own check through its driver (`shoal image verify`).
   */
  verifyImage: (name: string) => Promise<ImageVerification>
  /** Peers this node knows, with their addresses and whether they are connected now. */
  peers: () => Promise<NodeStatus['peers']>
  status: () => Promise<NodeStatus>
  /** Allows one more peer to migrate into this node (and to pull blocks from it). */
  allowPeer: (peerId: string) => void
  /** Imports a volume file as a replica this node serves to allow-listed peers. */
  importVolume: (id: string, path: string, blockSize?: number) => Promise<VolumeInfo>
  /** Stops an image's workload (if running here) and deletes the image; refused while it migrates. */
  removeImage: (name: string) => Promise<void>
  /** Marks cache blocks [from, to) of an image hot: a migration sends them early, from the source. */
  markHot: (image: string, from: number, to: number) => void
  /** Drops a replica volume and deletes its files. */
  removeVolume: (id: string) => Promise<void>
  /**
   * Becomes a replica of a volume: pulls every block from the peers that hold it (all at once,
   * verified by hash). `from`: peers to ask (peer IDs or multiaddrs); default every known peer.
   */
  pullVolume: (id: string, opts?: { from?: string[], signal?: AbortSignal }) => Promise<PullReport>
  /** Opens a block lane to a replica peer (a peer ID or a multiaddr with /p2p/). */
  blockClient: (to: string, signal?: AbortSignal) => Promise<BlockClient>
}
