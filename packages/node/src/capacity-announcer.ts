import type { Lane, LaneTransport } from '@shoal/core'
import { announceCapacity, readAnnouncement } from './capacity.js'
import type { NodeCapacity } from './capacity.js'
import type { Logger } from './logger.js'

/** How often a node looks whether what it can take changed enough to tell its peers. */
export const ANNOUNCE_CHECK_MS = 2000
/** A peer hears again after this long even when nothing changed. */
export const ANNOUNCE_REFRESH_MS = 30_000
/** An announcement older than this is not shown (its sender stopped telling). */
export const ANNOUNCEMENT_TTL_MS = 3 * ANNOUNCE_REFRESH_MS
/** Free memory or disk must move by this share (or {@link ANNOUNCE_MIN_STEP}) to be told before the refresh. */
export const ANNOUNCE_STEP_SHARE = 0.05
export const ANNOUNCE_MIN_STEP = 64 * 2 ** 20

/**
 * Whether `now` differs enough from what a peer was last told (`told`) to tell it again before
 * the refresh: any count or limit, or free memory or disk by more than max(5 %, 64 MiB) of the
 * told value — free space moves a little all the time and peers need not hear every page.
 */
export function changedEnough (told: NodeCapacity, now: NodeCapacity): boolean {
  const moved = (a: number, b: number): boolean => Math.abs(a - b) > Math.max(ANNOUNCE_MIN_STEP, ANNOUNCE_STEP_SHARE * a)
  return told.maxMemoryBytes !== now.maxMemoryBytes || told.maxCacheBytes !== now.maxCacheBytes ||
    told.maxIncoming !== now.maxIncoming || told.maxIncomingPerPeer !== now.maxIncomingPerPeer ||
    told.incoming !== now.incoming || told.incomingFromYou !== now.incomingFromYou || told.images !== now.images ||
    told.sharedSpace !== now.sharedSpace ||
    told.heldFromYou.memory !== now.heldFromYou.memory || told.heldFromYou.cache !== now.heldFromYou.cache ||
    moved(told.memoryFree, now.memoryFree) || moved(told.cacheFree, now.cacheFree)
}

/** What the announcer needs from its node. */
export interface AnnouncerDeps {
  transport: LaneTransport
  /** Peers this node has a connection to now. */
  connectedPeers: () => string[]
  /** Whether this node would take migrations from `peer` (its allow-list): only those hear. */
  takesFrom: (peer: string) => boolean
  /** What this node would admit from `peer` now (the answer to a capacity question). */
  capacityFor: (peer: string) => NodeCapacity
  log: Logger
  now?: () => number
}

/**
 * Tells the allow-listed peers this node is connected to what it can take from each of them —
 * free memory and disk after margins, its limits and sessions — unasked: on connecting, when it
 * changed enough ({@link changedEnough}), and every {@link ANNOUNCE_REFRESH_MS} anyway. A peer
 * that does not speak the protocol (an older node) is not asked again until it reconnects.
 * Placement decisions still ask (`/shoal/capacity/1.0.0`): an announcement is a view, not a grant.
 */
export class CapacityAnnouncer {
  private readonly told = new Map<string, { capacity: NodeCapacity, at: number }>()
  private readonly sending = new Set<string>()
  private readonly deaf = new Set<string>()
  private timer?: NodeJS.Timeout
  private readonly stopping = new AbortController()

  constructor (private readonly deps: AnnouncerDeps) {}

  start (): void {
    this.timer = setInterval(() => { this.check() }, ANNOUNCE_CHECK_MS)
    this.timer.unref()
  }

  /** A peer connected (again): it hears at once, and a peer once deaf is tried again. */
  connected (peer: string): void {
    this.told.delete(peer)
    this.deaf.delete(peer)
    this.check([peer])
  }

  disconnected (peer: string): void {
    this.told.delete(peer)
    this.deaf.delete(peer)
  }

  /** Tells every connected allow-listed peer (or those of `only`) whose view is stale. */
  check (only?: string[]): void {
    if (this.stopping.signal.aborted) return
    const now = (this.deps.now ?? Date.now)()
    for (const peer of only ?? this.deps.connectedPeers()) {
      if (this.sending.has(peer) || this.deaf.has(peer) || !this.deps.takesFrom(peer)) continue
      const capacity = this.deps.capacityFor(peer)
      const last = this.told.get(peer)
      if (last != null && now - last.at < ANNOUNCE_REFRESH_MS && !changedEnough(last.capacity, capacity)) continue
      this.sending.add(peer)
      announceCapacity(this.deps.transport, peer, capacity, this.stopping.signal).then(() => {
        this.told.set(peer, { capacity, at: now })
      }, (err: Error) => {
        if (this.stopping.signal.aborted) return
        // A peer that does not speak the protocol (libp2p's UnsupportedProtocolError) stays deaf
        // until it reconnects; anything else (a closing connection) is tried at the next check.
        if (err.name === 'UnsupportedProtocolError') this.deaf.add(peer)
        this.deps.log.debug?.('capacity announcement not delivered', { peer, error: err.message })
      }).finally(() => { this.sending.delete(peer) })
    }
  }

  stop (): void {
    clearInterval(this.timer)
    this.stopping.abort()
  }
}

/** What a peer told of its capacity, and when it was heard. */
export interface HeardCapacity extends NodeCapacity {
  /** How long ago it was heard (ms). */
  ageMs: number
}

/**
 * The announcements this node heard: one per connected peer, dropped when the peer disconnects
 * or stops telling for {@link ANNOUNCEMENT_TTL_MS}. An announcement is accepted from any
 * connected peer (it grants nothing: it says what that peer would take from this node), bounded
 * by the transport to one small frame per stream and a few streams per connection.
 */
export class CapacityBoard {
  private readonly heard = new Map<string, { capacity: NodeCapacity, at: number }>()

  constructor (private readonly log: Logger, private readonly isConnected: (peer: string) => boolean, private readonly now: () => number = Date.now) {}

  /** Reads one announcement from an accepted lane. */
  receive (lane: Lane, peer: string): void {
    readAnnouncement(lane, peer).then(capacity => {
      // A peer that hung up while its frame was read is not kept.
      if (this.isConnected(peer)) this.heard.set(peer, { capacity, at: this.now() })
    }, (err: Error) => {
      this.log.warn('bad capacity announcement', { peer, error: err.message })
    })
  }

  /** What `peer` last told, if it told within the TTL. */
  get (peer: string): HeardCapacity | undefined {
    const h = this.heard.get(peer)
    if (h == null) return undefined
    const ageMs = this.now() - h.at
    if (ageMs > ANNOUNCEMENT_TTL_MS) { this.heard.delete(peer); return undefined }
    return { ...h.capacity, ageMs }
  }

  forget (peer: string): void {
    this.heard.delete(peer)
  }
}
