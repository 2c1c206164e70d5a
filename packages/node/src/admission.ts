import { readFileSync, statfsSync, statSync } from 'node:fs'
import { totalmem } from 'node:os'
import { BusyError, ImageExistsError, ImageTooLargeError, NoSpaceError } from '@shoal/core'
import {
  DEFAULT_MAX_CACHE_BYTES, DEFAULT_MAX_INCOMING, DEFAULT_MAX_INCOMING_PER_PEER, DEFAULT_SPACE_MARGIN_BYTES, SPACE_MARGIN_FRACTION
} from './constants.js'
import type { NodeCapacity } from './capacity.js'

/** Limits a node applies to incoming migrations before it accepts one. */
export interface AdmissionLimits {
  /** Largest memory an incoming image may have; default this host's RAM. */
  maxMemoryBytes?: number
  /** Largest cache an incoming image may have; default 16 TiB. */
  maxCacheBytes?: number
  /** Incoming migrations at once on this node; default 4. */
  maxIncoming?: number
  /** Incoming migrations at once from one peer; default 2. */
  maxIncomingPerPeer?: number
  /**
   * Free space kept in the shm and data dirs (and free memory kept on the host) after every
   * admitted image has arrived; default the larger of 128 MiB and 2% of the file system.
   */
  spaceMarginBytes?: number
}

/** What an incoming migration asks for. */
export interface AdmissionRequest {
  image: string
  peer: string
  memorySize: number
  cacheSize: number
}

/** An admitted migration: holds its name and its space until released. */
export interface AdmissionTicket {
  readonly image: string
  release: () => void
}

interface Holding { image: string, peer: string, memory: number, cache: number }

/**
 * Admission control of incoming migrations, decided from the HELLO alone, before anything is
 * staged or allocated: the image's name (not hosted here and not arriving from someone else), its
 * sizes against this node's maxima, the free memory in the shm dir and on the host, the free space
 * in the data dir (minus what migrations already admitted will still write, minus a margin), and
 * the number of migrations in progress on this node and from this peer. A refused migration
 * changes nothing.
 */
export class Admission {
  private readonly held = new Set<Holding>()
  private readonly limits: Required<Omit<AdmissionLimits, 'spaceMarginBytes'>> & { spaceMarginBytes?: number }

  constructor (limits: AdmissionLimits, private readonly dirs: { shmDir: string, dataDir: string }, private readonly hosted: (image: string) => boolean) {
    this.limits = {
      maxMemoryBytes: limits.maxMemoryBytes ?? totalmem(),
      maxCacheBytes: limits.maxCacheBytes ?? DEFAULT_MAX_CACHE_BYTES,
      maxIncoming: limits.maxIncoming ?? DEFAULT_MAX_INCOMING,
      maxIncomingPerPeer: limits.maxIncomingPerPeer ?? DEFAULT_MAX_INCOMING_PER_PEER,
      spaceMarginBytes: limits.spaceMarginBytes
    }
  }

  /** Incoming migrations admitted and not yet released. */
  get active (): number { return this.held.size }

  /** The images incoming migrations hold now (their names are reserved). */
  arrivingImages (): string[] { return [...new Set([...this.held].map(h => h.image))].sort() }

  /** True while an incoming migration holds this name. */
  arriving (image: string): boolean {
    for (const h of this.held) if (h.image === image) return true
    return false
  }

  /** Admits a migration or throws the typed reason ({@link BusyError}, {@link ImageExistsError}, {@link ImageTooLargeError}, {@link NoSpaceError}). */
  admit (req: AdmissionRequest): AdmissionTicket {
    const l = this.limits
    if (this.held.size >= l.maxIncoming) throw new BusyError(`this node already receives ${this.held.size} migrations (its limit); try again later`)
    const fromPeer = [...this.held].filter(h => h.peer === req.peer).length
    if (fromPeer >= l.maxIncomingPerPeer) throw new BusyError(`this node already receives ${fromPeer} migrations from peer ${req.peer} (its limit per peer)`)
    if (this.hosted(req.image)) throw new ImageExistsError(`image ${req.image} already exists on this node`)
    if (this.arriving(req.image)) throw new ImageExistsError(`image ${req.image} is already arriving on this node from another migration`)
    if (req.memorySize > l.maxMemoryBytes) throw new ImageTooLargeError(`memory of ${mib(req.memorySize)} exceeds this node's maximum of ${mib(l.maxMemoryBytes)}`)
    if (req.cacheSize > l.maxCacheBytes) throw new ImageTooLargeError(`cache of ${mib(req.cacheSize)} exceeds this node's maximum of ${mib(l.maxCacheBytes)}`)
    this.checkSpace(req)
    const h: Holding = { image: req.image, peer: req.peer, memory: req.memorySize, cache: req.cacheSize }
    this.held.add(h)
    return { image: req.image, release: () => { this.held.delete(h) } }
  }

  /**
   * What this node would still admit from `peer` now (told to peers placing images here, e.g. a
   * host evacuation): the same free space, memory and margins {@link admit} checks against.
   */
  capacity (peer: string, images: number): NodeCapacity {
    const held = [...this.held]
    const mine = held.filter(h => h.peer === peer)
    const heldMemory = sum(held.map(h => h.memory))
    const heldCache = sum(held.map(h => h.cache))
    const shm = fsOf(this.dirs.shmDir)
    const data = fsOf(this.dirs.dataDir)
    const sharedSpace = shm.dev === data.dev
    const free = (fs: { free: number, size: number }, held: number): number => Math.max(0, fs.free - held - this.margin(fs.size))
    const available = memAvailable()
    const memoryRoom = available != null ? Math.max(0, available - heldMemory - this.margin(totalmem())) : Number.MAX_SAFE_INTEGER
    const cacheFree = sharedSpace ? free(data, heldMemory + heldCache) : free(data, heldCache)
    return {
      memoryFree: Math.min(memoryRoom, sharedSpace ? cacheFree : free(shm, heldMemory)),
      cacheFree,
      sharedSpace,
      maxMemoryBytes: this.limits.maxMemoryBytes,
      maxCacheBytes: this.limits.maxCacheBytes,
      maxIncoming: this.limits.maxIncoming,
      maxIncomingPerPeer: this.limits.maxIncomingPerPeer,
      incoming: held.length,
      incomingFromYou: mine.length,
      heldFromYou: { memory: sum(mine.map(h => h.memory)), cache: sum(mine.map(h => h.cache)) },
      images
    }
  }

  private checkSpace (req: AdmissionRequest): void {
    const heldMemory = sum([...this.held].map(h => h.memory))
    const heldCache = sum([...this.held].map(h => h.cache))
    // The shm dir and the data dir may be one file system: then both areas come out of it.
    const shm = fsOf(this.dirs.shmDir)
    const data = fsOf(this.dirs.dataDir)
    const needs = shm.dev === data.dev
      ? [{ fs: shm, dir: `${this.dirs.shmDir} and ${this.dirs.dataDir}`, need: req.memorySize + req.cacheSize, held: heldMemory + heldCache }]
      : [{ fs: shm, dir: this.dirs.shmDir, need: req.memorySize, held: heldMemory }, { fs: data, dir: this.dirs.dataDir, need: req.cacheSize, held: heldCache }]
    for (const n of needs) {
      const margin = this.margin(n.fs.size)
      if (n.need + n.held + margin > n.fs.free) {
        throw new NoSpaceError(`${n.dir} has ${mib(n.fs.free)} free; this image needs ${mib(n.need)}` +
          `${n.held > 0 ? ` and migrations already arriving ${mib(n.held)}` : ''}, with ${mib(margin)} kept free`)
      }
    }
    // The memory of a workload is RAM on this host once it runs (tmpfs pages are RAM too).
    const available = memAvailable()
    const margin = this.margin(totalmem())
    if (available != null && req.memorySize + heldMemory + margin > available) {
      throw new NoSpaceError(`this host has ${mib(available)} of memory available; this image needs ${mib(req.memorySize)}` +
        `${heldMemory > 0 ? ` and migrations already arriving ${mib(heldMemory)}` : ''}, with ${mib(margin)} kept free`)
    }
  }

  private margin (fsSize: number): number {
    return this.limits.spaceMarginBytes ?? Math.max(DEFAULT_SPACE_MARGIN_BYTES, Math.floor(fsSize * SPACE_MARGIN_FRACTION))
  }
}

function fsOf (dir: string): { dev: number, free: number, size: number } {
  const st = statfsSync(dir)
  return { dev: statSync(dir).dev, free: st.bavail * st.bsize, size: st.blocks * st.bsize }
}

/** MemAvailable of /proc/meminfo in bytes (undefined where there is none). */
function memAvailable (): number | undefined {
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'))
    return m != null ? Number(m[1]) * 1024 : undefined
  } catch {
    return undefined
  }
}

function sum (xs: number[]): number { return xs.reduce((a, b) => a + b, 0) }
/** A size for a message: whole MiB, or GiB with one decimal. */
export function mib (n: number): string { return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : `${Math.ceil(n / 2 ** 20)} MiB` }
