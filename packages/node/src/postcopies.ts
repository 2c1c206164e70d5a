import { createHash } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { Bitmap, CacheMeta, resumePostCopyCache, ShoalError } from '@shoal/core'
import type { PostCopyAccess, PostCopyCache } from '@shoal/core'
import type { ShoalLibp2p } from '@shoal/libp2p'
import type { ImageStore } from './image-store.js'
import type { Logger } from './logger.js'
import { PostCopyService } from './postcopy.js'
import type { PostCopyStatus } from './postcopy.js'
import { servePostcopyNbd } from './postcopy-nbd.js'
import type { Volumes } from './volumes.js'
import type { Workloads } from './workloads.js'

/** What {@link PostCopies} needs from the rest of the node. */
export interface PostCopiesDeps {
  store: ImageStore
  workloads: Workloads
  volumes: Volumes
  libp2p: ShoalLibp2p
  log: Logger
}

/**
 * The images of a node whose cache still streams in after a post-copy switchover. Each runs a
 * {@link PostCopyService}; the image's record says so (`postcopyPending`, with the peers that
 * serve its blocks and their addresses) until the cache is complete, so that a node restarted
 * in the middle takes the stream up again from the present bytes ({@link PostCopies.resumeAfterRestart})
 * and never starts the workload on a cache with missing blocks.
 */
export class PostCopies {
  private readonly services = new Map<string, PostCopyService>()

  constructor (private readonly deps: PostCopiesDeps) {}

  /** Takes over an image's streaming cache; returns how its workload reaches missing blocks. */
  async start (image: string, pc: PostCopyCache, cachePath: string, runDir: string, from: string): Promise<PostCopyAccess> {
    const { store, workloads, volumes, log } = this.deps
    await this.services.get(image)?.stop()
    const svc = new PostCopyService(image, pc, cachePath, runDir, from, {
      log,
      addSourceNode: async (pc, peer, signal) => {
        const found = await volumes.sourceNode(peer, { volume: pc.volume, blockSize: pc.blockSize, blockCount: pc.blockCount, hashesDigest: createHash('sha256').update(pc.hashes).digest(), signal })
        if (found == null) throw new ShoalError('it keeps no copy of the cache')
        pc.addSource(found.source)
        void pc.outcome.finally(found.close)
      },
      release: async (peer, volume, sessionId, signal) => { await volumes.releaseKept(peer, volume, sessionId, signal) },
      complete: async (name) => { await workloads.postcopyComplete(name) },
      // Every way in at once (see PostCopyAccess): a VM reaches its disk by NBD.
      exports: async (_name, pc, cachePath, runDir) => await servePostcopyNbd(pc, cachePath, runDir, log)
    })
    this.services.set(image, svc)
    void svc.done.then((o) => {
      if (!store.has(image)) return
      const s = o.stats
      // Kept in the image's record: `shoal status` shows how it ended. Still pending unless complete.
      store.put({
        ...store.get(image),
        postcopyResult: { complete: o.complete, ms: s.ms, blocks: s.claimedBlocks, presentBlocks: s.postcopy?.presentBlocks ?? 0, ...(s.postcopy != null ? { onDemand: s.postcopy.onDemand } : {}), sources: s.sources, ...(o.error != null ? { error: o.error.message } : {}) },
        ...(o.complete ? { postcopyPending: undefined } : {})
      })
    }).finally(() => { if (this.services.get(image) === svc) this.services.delete(image) })
    const access = await svc.start()
    if (store.has(image)) store.put({ ...store.get(image), postcopyPending: { from, session: Buffer.from(pc.sessionId).toString('hex'), peers: await this.addresses([from, ...Object.keys(pc.stats().sources)]) } })
    return access
  }

  /** Stops an image's stream (the source keeps its copy; the record stays pending). */
  async stop (image: string): Promise<void> { await this.services.get(image)?.stop() }

  async stopAll (): Promise<void> { await Promise.all([...this.services.values()].map(async s => { await s.stop() })) }

  /** The image's workload runs now (see {@link PostCopyService.workloadStarted}). */
  workloadStarted (image: string): void { this.services.get(image)?.workloadStarted() }

  status (image: string): PostCopyStatus | undefined { return this.services.get(image)?.status() }

  /** How a (re)started workload of `image` reaches its missing blocks; undefined when its cache is complete. */
  access (image: string): PostCopyAccess | undefined { return this.services.get(image)?.access }

  /**
   * After a restart: every image whose post-copy had not finished streams again, from the blocks
   * its present bytes say are there, from the peers it knew (replicas and the source's kept copy).
   * One that cannot (its present bytes or metadata are gone) stays pending: its workload is not
   * started on a cache with missing blocks.
   */
  async resumeAfterRestart (): Promise<void> {
    const { store, workloads, volumes, log } = this.deps
    for (const rec of store.list()) {
      const p = rec.postcopyPending
      if (p == null) continue
      const name = rec.spec.name
      try {
        const cachePath = rec.spec.cache.path
        const presentPath = `${cachePath}.present`
        if (!existsSync(presentPath) || !CacheMeta.exists(cachePath)) throw new ShoalError(`its present map or cache metadata is gone (${presentPath})`)
        const meta = CacheMeta.open(cachePath)
        const bytes = readFileSync(presentPath)
        if (bytes.byteLength !== meta.blockCount) throw new ShoalError(`its present map has ${bytes.byteLength} entries, the cache ${meta.blockCount} blocks`)
        const present = new Bitmap(meta.blockCount)
        for (let i = 0; i < bytes.byteLength; i++) if (bytes[i] === 1) present.set(i)
        for (const [peer, addrs] of Object.entries(p.peers)) {
          await this.deps.libp2p.peerStore.merge(peerIdFromString(peer), { multiaddrs: addrs.map(a => multiaddr(a)) }).catch(() => {})
        }
        const sources = await volumes.cacheSources({ volume: meta.volume, blockSize: meta.blockSize, blockCount: meta.blockCount, hashesDigest: createHash('sha256').update(meta.hashes).digest() }, [])
        const pc = await resumePostCopyCache({ cachePath, volume: meta.volume, blockSize: meta.blockSize, hashes: meta.hashes, present, sources, sessionId: Buffer.from(p.session, 'hex') })
        await this.start(name, pc, cachePath, workloads.image(rec).runDir, p.from)
        // Adopted after the restart, or stopped: either way nothing is launching now.
        this.workloadStarted(name)
        log.info('post-copy taken up again after a restart', { image: name, present: present.count(), blocks: meta.blockCount, sources: sources.sources.map(s => s.id) })
      } catch (err) {
        log.error('post-copy cannot be taken up again: the image keeps its missing blocks and is not started', { image: name, error: (err as Error).message })
      }
    }
  }

  /** The addresses this node knows for `peers` (to find them again after a restart). */
  private async addresses (peers: string[]): Promise<Record<string, string[]>> {
    const out: Record<string, string[]> = {}
    for (const id of new Set(peers)) {
      try {
        const p = await this.deps.libp2p.peerStore.get(peerIdFromString(id))
        out[id] = p.addresses.map(a => a.multiaddr.toString())
      } catch {
        out[id] = []
      }
    }
    return out
  }
}
