import { copyFileSync, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Bitmap, ImageStateError, InvalidArgumentError, KeptCacheBlocks, ShoalError } from '@shoal/core'
import type { KeptCache } from '@shoal/core'
import type { Logger } from './logger.js'

/** What a kept cache's directory says about it (`kept.json`). */
interface KeptInfo { volume: string, blockSize: number, blocks: number, peer: string, session: string, since: string }

/** One cache kept for a post-copy destination. */
interface Kept { info: KeptInfo, blocks: KeptCacheBlocks, dir: string }

/** A cache kept for a post-copy destination, as `shoal status` shows it. */
export interface KeptCacheInfo { volume: string, peer: string, session: string, since: string, servableBlocks: number }

/**
 * The caches this node keeps after post-copy migrations out: each one's destination still
 * fetches blocks from it, until it sends CACHE_RELEASE. Kept in `<dir>/<session>/` — a hard link
 * to the image's cache file (no copy; the image itself is gone from this node), the volume's
 * hashes, the servable bitmap and `kept.json` — so a restarted node serves them again.
 */
export class KeptCaches {
  private readonly kept = new Map<string, Kept>()

  constructor (private readonly dir: string, private readonly log: Logger) {}

  /** Opens the caches kept before a restart. */
  async load (): Promise<void> {
    if (!existsSync(this.dir)) return
    for (const session of readdirSync(this.dir)) {
      const dir = join(this.dir, session)
      try {
        const info = JSON.parse(readFileSync(join(dir, 'kept.json'), 'utf8')) as KeptInfo
        const servable = new Bitmap(info.blocks)
        servable.bits.set(readFileSync(join(dir, 'servable')))
        const blocks = await KeptCacheBlocks.open(join(dir, 'cache'), info.volume, info.blockSize, readFileSync(join(dir, 'hashes')), servable)
        this.kept.set(session, { info, blocks, dir })
      } catch (err) {
        this.log.warn('kept cache unreadable; removed', { dir, error: (err as Error).message })
        rmSync(dir, { recursive: true, force: true })
      }
    }
  }

  /**
   * Keeps the cache at `cachePath` for `peer`: from now on its servable blocks are served to it as
   * volume `kept.volume`. Returns what drops it again (the migration aborted after all).
   */
  async keep (kept: KeptCache, cachePath: string, peer: string): Promise<() => Promise<void>> {
    const session = Buffer.from(kept.sessionId).toString('hex')
    const dir = join(this.dir, session)
    mkdirSync(dir, { recursive: true })
    try {
      const file = join(dir, 'cache')
      rmSync(file, { force: true })
      try {
        linkSync(cachePath, file)
      } catch (err) {
        // Another file system: a copy (slow for a large cache, but the destination depends on it).
        this.log.warn('kept cache is copied: cannot hard-link it', { cachePath, error: (err as Error).message })
        copyFileSync(cachePath, file)
      }
      writeFileSync(join(dir, 'hashes'), kept.hashes)
      writeFileSync(join(dir, 'servable'), kept.servable.bits)
      const info: KeptInfo = { volume: kept.volume, blockSize: kept.blockSize, blocks: kept.servable.size, peer, session, since: new Date().toISOString() }
      writeFileSync(join(dir, 'kept.json'), JSON.stringify(info))
      const blocks = await KeptCacheBlocks.open(file, kept.volume, kept.blockSize, kept.hashes, kept.servable)
      this.kept.set(session, { info, blocks, dir })
      this.log.info('cache kept for a post-copy destination', { volume: kept.volume, peer, session, blocks: kept.servable.count() })
    } catch (err) {
      rmSync(dir, { recursive: true, force: true })
      throw err
    }
    return async () => { await this.drop(session) }
  }

  /** Whether `peer` is the destination of a cache kept here (it may pull blocks without being allow-listed). */
  keptFor (peer: string): boolean {
    for (const k of this.kept.values()) if (k.info.peer === peer) return true
    return false
  }

  /** The kept cache of `volume` that `peer` may read (its own destination's), if any. */
  lookup (volume: string, peer: string): KeptCacheBlocks | undefined {
    for (const k of this.kept.values()) if (k.info.volume === volume && k.info.peer === peer) return k.blocks
    return undefined
  }

  /** The destination `peer` has every block of session `sessionId`: drop that cache (other peers' requests change nothing). */
  async release (volume: string, sessionId: Uint8Array, peer: string): Promise<void> {
    const session = Buffer.from(sessionId).toString('hex')
    const k = this.kept.get(session)
    if (k == null || k.info.peer !== peer || k.info.volume !== volume) return
    this.log.info('kept cache released by its destination', { volume, peer, session })
    await this.drop(session)
  }

  /**
   * The operator drops a kept cache (its destination is gone for good, or a replica holds every
   * block it lacks): `session` is its session id or a unique prefix of 8 or more hex digits.
   * Refused while its destination is connected (it may still be fetching from it) unless `force`.
   */
  async dropByOperator (session: string, destinationConnected: (peer: string) => boolean, force = false): Promise<KeptCacheInfo> {
    if (!/^[0-9a-f]{8,64}$/.test(session)) throw new InvalidArgumentError(`a kept cache is named by its session id, 8 to 64 hex digits (see \`shoal kept\`), not ${JSON.stringify(session)}`)
    const matches = [...this.kept.keys()].filter(k => k.startsWith(session))
    if (matches.length === 0) throw new ShoalError(`no cache kept for session ${session} on this node (see \`shoal kept\`)`, 'ERR_UNKNOWN_KEPT_CACHE')
    if (matches.length > 1) throw new InvalidArgumentError(`session ${session} is ambiguous: ${matches.join(', ')}`)
    const k = this.kept.get(matches[0]!)!
    if (!force && destinationConnected(k.info.peer)) {
      throw new ImageStateError(`the destination ${k.info.peer} of this kept cache is connected and may still fetch blocks from it; drop it with force only if a replica holds what it lacks (its reads of blocks nobody serves would wait)`)
    }
    const info = this.list().find(i => i.session === k.info.session)!
    this.log.warn('kept cache dropped by the operator', { volume: k.info.volume, peer: k.info.peer, session: k.info.session, force })
    await this.drop(k.info.session)
    return info
  }

  list (): KeptCacheInfo[] {
    return [...this.kept.values()].map(k => ({ volume: k.info.volume, peer: k.info.peer, session: k.info.session, since: k.info.since, servableBlocks: k.blocks.held() }))
  }

  async close (): Promise<void> {
    for (const k of this.kept.values()) await k.blocks.close()
    this.kept.clear()
  }

  private async drop (session: string): Promise<void> {
    const k = this.kept.get(session)
    this.kept.delete(session)
    await k?.blocks.close()
    rmSync(join(this.dir, session), { recursive: true, force: true })
  }
}
