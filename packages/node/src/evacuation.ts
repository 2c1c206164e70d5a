import { randomBytes } from 'node:crypto'
import { mkdirSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { AbortedError, errorCode, InvalidArgumentError, ShoalError, SwitchoverGate, TokenBucket, toErrorInfo } from '@shoal/core'
import type { ErrorInfo, MigrationProgress, MigrationReport } from '@shoal/core'
import { doesNotFit } from './capacity.js'
import type { NodeCapacity } from './capacity.js'
import type { ImageRecord } from './image-store.js'
import type { Logger } from './logger.js'
import type { MigrateOptions } from './node-api.js'

/** Migrations at once when `maxParallel` is not given (each target also caps what it takes per peer). */
export const DEFAULT_EVACUATE_PARALLEL = 4
/** Attempts per image (each on another peer) before it counts as failed. */
export const DEFAULT_EVACUATE_ATTEMPTS = 3
/** How often the progress of an evacuation is told. */
const PROGRESS_EVERY_MS = 500
/** How often the scheduler looks whether another migration may start. */
const SCHEDULE_EVERY_MS = 200

/**
 * How long before a running migration's first round ends the next one may start: its handshake,
 * lanes and first scan then overlap the end of that copy instead of leaving the links idle.
 */
export const EVACUATE_BULK_LOOKAHEAD_MS = 2000
/**
 * Bulk copies at once. Measured (`pnpm bench evacuate`, 6 images off a host with 4 × 200 Mbit/s,
 * medians of 3): four at once 65.0 s (1 run) with 3 pauses over target; one at a time 56.1 s
 * (4.91 GB on the wire); two 57.1 s (5.03 GB: more of what the workloads dirty is re-sent). The
 * links are the limit either way; one re-sends least.
 */
export const EVACUATE_BULK_AT_ONCE = 1

/**
 * A running migration still in its handshake or its first (whole-image) round, and not about to
 * end it. The round's end is estimated from the image's size less what was sent, at the current
 * rate (the round's own queue runs only a little ahead of the lanes, so it cannot tell); an image
 * with holes sends less, so the estimate errs on the side of waiting.
 */
function inBulk (job: { state: EvacuationImageProgress, result: { size: number } }): boolean {
  const s = job.state
  if (s.state !== 'migrating') return false
  if (s.phase === 'handshake') return true
  if (s.phase !== 'precopy' || (s.round ?? 0) > 1) return false
  const left = Math.max(0, job.result.size - s.bytes)
  return !(s.rate != null && s.rate > 0 && left / s.rate * 1000 < EVACUATE_BULK_LOOKAHEAD_MS)
}

/** Options of {@link ShoalNode.evacuate}. */
export interface EvacuateOptions {
  /** Peers that may take images (peer IDs or multiaddrs ending in /p2p/<id>). */
  to?: string[]
  /** Any peer this node knows (bootstrap, mDNS, identify) instead of a list. */
  any?: boolean
  /** Migrations at once; default {@link DEFAULT_EVACUATE_PARALLEL}. */
  maxParallel?: number
  /** Bytes per second over every lane of every migration of the evacuation together (default: no cap). */
  maxRate?: number
  /** Only these images (default: every image of this host). */
  images?: string[]
  /** Attempts per image, each on another peer; default {@link DEFAULT_EVACUATE_ATTEMPTS}. */
  maxAttempts?: number
  /** Options of each migration (lanes, downtime target, cache mode…); the node's defaults fill the rest. */
  migrate?: Omit<MigrateOptions, 'onProgress' | 'onId' | 'signal' | 'sharedBudget'>
  onProgress?: (p: EvacuationProgress) => void
  signal?: AbortSignal
}

/** A peer considered for the images, and what it said. */
export interface EvacuationCandidate {
  peerId: string
  /** What was dialled (as given in `to`, or the peer ID). */
  to: string
  /** Its capacity when first asked; absent when it could not be asked. */
  capacity?: NodeCapacity
  /** Why it takes nothing (unreachable, refuses this node, …). */
  excluded?: ErrorInfo
}

/** One try of an image on one peer. */
export interface EvacuationAttempt {
  peer: string
  /** The migration's id (`shoal migrations`, `shoal report`). */
  migration?: string
  ok: boolean
  error?: ErrorInfo
  totalMs?: number
}

/** Where an image went and how. */
export interface EvacuatedImage {
  image: string
  ok: boolean
  /** Bytes of memory and cache it holds. */
  size: number
  /** The peer that runs it now (when ok). */
  peer?: string
  attempts: EvacuationAttempt[]
  /** Of the migration that moved it. */
  totalMs?: number
  downtimeMs?: number
  downtimeTargetMs?: number
  withinTarget?: boolean
  verified?: boolean
  /** Bytes sent over all its attempts. */
  bytes: number
  /** Why it was not moved (after every attempt). */
  error?: ErrorInfo
}

/** The summary of a host evacuation (also written to `<dataDir>/evacuations/<id>.json`). */
export interface EvacuationReport {
  id: string
  /** True when every image was moved, verified. */
  ok: boolean
  startedAt: string
  totalMs: number
  /** Bytes sent over every lane of every migration. */
  bytes: number
  maxParallel: number
  maxRate?: number
  images: EvacuatedImage[]
  /** Images not tried: their state forbids a migration (migrating, in-doubt, orphaned). */
  skipped: Array<{ image: string, reason: string }>
  candidates: EvacuationCandidate[]
  /** Where the report was written. */
  file?: string
}

/** One image's line in the progress view. */
export interface EvacuationImageProgress {
  image: string
  state: 'queued' | 'migrating' | 'moved' | 'failed'
  peer?: string
  attempt: number
  migration?: string
  phase?: MigrationProgress['phase']
  round?: number
  bytes: number
  rate?: number
  error?: ErrorInfo
}

/** The progress of a whole evacuation. */
export interface EvacuationProgress {
  id: string
  elapsedMs: number
  running: number
  moved: number
  failed: number
  bytes: number
  images: EvacuationImageProgress[]
}

/** What an evacuation needs from its node. */
export interface EvacuationDeps {
  images: () => ImageRecord[]
  /** Every peer this node knows (for `any`). */
  knownPeers: () => Promise<string[]>
  /** The peer ID of a peer given as an ID or a multiaddr (throws naming the value when it is neither). */
  peerIdOf: (to: string) => string
  capacity: (to: string, signal: AbortSignal) => Promise<NodeCapacity>
  migrate: (image: string, to: string, opts: MigrateOptions) => Promise<MigrationReport>
  /** Where reports go (`<dataDir>/evacuations`). */
  dir: string
  log: Logger
}

interface Job {
  rec: ImageRecord
  size: { memory: number, cache: number }
  state: EvacuationImageProgress
  tried: Set<string>
  result: EvacuatedImage
}

/**
 * Moves every image off this host to peers that can take it: asks each candidate what it can take
 * (free memory and disk after margins, its limits, what it already receives from here) over
 * `/shoal/capacity/1.0.0` — a peer whose allow-list does not hold this node refuses the question,
 * and so takes nothing — then runs up to `maxParallel` migrations at once, largest image first,
 * each to the fitting peer that receives least from here (ties: most free memory). Every
 * migration keeps its own downtime target; all of them pay one shared bandwidth budget
 * (`maxRate`) except in their pauses. An image whose migration fails while it stayed here
 * (running or stopped) is tried again on another peer, up to `maxAttempts`.
 */
export async function evacuate (deps: EvacuationDeps, opts: EvacuateOptions): Promise<EvacuationReport> {
  const started = performance.now()
  const id = randomBytes(8).toString('hex')
  const maxParallel = opts.maxParallel ?? DEFAULT_EVACUATE_PARALLEL
  if (!Number.isInteger(maxParallel) || maxParallel < 1) throw new InvalidArgumentError('maxParallel must be a whole number, 1 or more')
  const maxAttempts = opts.maxAttempts ?? DEFAULT_EVACUATE_ATTEMPTS
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1) throw new InvalidArgumentError('maxAttempts must be a whole number, 1 or more')
  if (opts.maxRate != null && !(opts.maxRate > 0)) throw new InvalidArgumentError('maxRate must be a positive number of bytes per second')
  if ((opts.to == null || opts.to.length === 0) && opts.any !== true) throw new InvalidArgumentError('say where the images may go: a list of peers (to) or any known peer (any)')
  if (opts.to != null && opts.to.length > 0 && opts.any === true) throw new InvalidArgumentError('give either a list of peers (to) or any, not both')
  const signal = opts.signal ?? new AbortController().signal
  const log = deps.log

  // The images: all of this host's, or the ones named (each must exist).
  const all = deps.images()
  const named = opts.images != null ? new Set(opts.images) : undefined
  for (const n of named ?? []) if (!all.some(r => r.spec.name === n)) throw new ShoalError(`no image ${n} on this node`, 'ERR_UNKNOWN_IMAGE')
  const chosen = all.filter(r => named == null || named.has(r.spec.name))
  const skipped = chosen.filter(r => r.state !== 'running' && r.state !== 'stopped').map(r => ({ image: r.spec.name, reason: `it is ${r.state}` }))
  const jobs: Job[] = chosen.filter(r => r.state === 'running' || r.state === 'stopped').map(rec => {
    const size = { memory: rec.spec.memory.size, cache: rec.spec.cache.size }
    return {
      rec, size, tried: new Set<string>(),
      state: { image: rec.spec.name, state: 'queued', attempt: 0, bytes: 0 },
      result: { image: rec.spec.name, ok: false, size: size.memory + size.cache, attempts: [], bytes: 0 }
    }
  })
  // Largest first: the longest migrations start early, the small ones fill in at the end.
  jobs.sort((a, b) => b.result.size - a.result.size)

  // The candidates, each asked once up front (unreachable or refusing peers are told in the report).
  const given = opts.any === true ? await deps.knownPeers() : opts.to!
  const candidates: EvacuationCandidate[] = []
  for (const to of given) {
    const peerId = deps.peerIdOf(to)
    if (candidates.some(c => c.peerId === peerId)) continue
    const c: EvacuationCandidate = { peerId, to }
    try {
      c.capacity = await deps.capacity(to, signal)
    } catch (err) {
      if (signal.aborted) throw err
      c.excluded = toErrorInfo(err)
    }
    candidates.push(c)
  }
  const usable = candidates.filter(c => c.excluded == null)
  const report: EvacuationReport = {
    id, ok: false, startedAt: new Date().toISOString(), totalMs: 0, bytes: 0, maxParallel,
    ...(opts.maxRate != null ? { maxRate: opts.maxRate } : {}),
    images: jobs.map(j => j.result), skipped, candidates
  }
  log.info('evacuation started', { evacuation: id, images: jobs.length, skipped: skipped.length, candidates: candidates.length, usable: usable.length, maxParallel })
  if (jobs.length > 0 && usable.length === 0) {
    const why = candidates.map(c => `${c.peerId}: ${c.excluded?.message ?? ''}`).join('; ')
    throw new ShoalError(`no peer can take images from this node${why !== '' ? ` (${why})` : ' (no peer is known)'}`, 'ERR_NO_TARGET')
  }

  const budget = opts.maxRate != null ? new TokenBucket(opts.maxRate) : undefined
  // One pause at a time: a migration switching over has the links and CPUs to itself.
  const gate = new SwitchoverGate()
  // What this evacuation sends each peer now, and the room it takes there.
  const inflight = new Map<string, { count: number, memory: number, cache: number }>()
  const running = new Map<Job, Promise<void>>()
  // Bytes of images this evacuation moved (or is moving) to each peer.
  const placed = new Map<string, number>()
  const queue = [...jobs]

  const progress = (): EvacuationProgress => ({
    id, elapsedMs: Math.round(performance.now() - started), running: running.size,
    moved: jobs.filter(j => j.state.state === 'moved').length,
    failed: jobs.filter(j => j.state.state === 'failed').length,
    bytes: jobs.reduce((s, j) => s + j.result.bytes + (j.state.state === 'migrating' ? j.state.bytes : 0), 0),
    images: jobs.map(j => ({ ...j.state }))
  })
  const ticker = setInterval(() => { opts.onProgress?.(progress()) }, PROGRESS_EVERY_MS)

  /** The peer to take a job now, or why none can (undefined reason: one may, later). */
  const place = async (job: Job): Promise<{ peer?: EvacuationCandidate, why?: string }> => {
    const reasons: string[] = []
    let fits: Array<{ c: EvacuationCandidate, cap: NodeCapacity, mine: number }> = []
    let later = false
    for (const c of usable) {
      if (job.tried.has(c.peerId)) { reasons.push(`${c.peerId}: tried`); continue }
      let cap: NodeCapacity
      try {
        cap = await deps.capacity(c.to, signal)
      } catch (err) {
        if (signal.aborted) throw err
        reasons.push(`${c.peerId}: ${(err as Error).message}`)
        continue
      }
      const mine = inflight.get(c.peerId) ?? { count: 0, memory: 0, cache: 0 }
      // Room this evacuation's running migrations will take there that the peer does not count yet.
      const pending = { memory: Math.max(0, mine.memory - cap.heldFromYou.memory), cache: Math.max(0, mine.cache - cap.heldFromYou.cache) }
      const slots = Math.min(cap.maxIncomingPerPeer - Math.max(mine.count, cap.incomingFromYou), cap.maxIncoming - cap.incoming - Math.max(0, mine.count - cap.incomingFromYou))
      const no = doesNotFit(cap, job.size, pending)
      if (no != null) {
        // Room that migrations in flight hold comes back if they fail: wait for them first.
        if (mine.count > 0 || cap.incoming > 0) later = true
        reasons.push(`${c.peerId}: ${no}`)
        continue
      }
      if (slots <= 0) { later = true; continue }
      fits.push({ c, cap, mine: mine.count })
    }
    // Fewest migrations from here first, then the least this evacuation moved there already (the
    // images spread over the targets), then the most free memory (by whole GiB: peers on equal
    // hardware keep the order they were given in).
    const moved = (p: string): number => placed.get(p) ?? 0
    fits = fits.sort((a, b) => a.mine - b.mine || moved(a.c.peerId) - moved(b.c.peerId) || Math.floor(b.cap.memoryFree / 2 ** 30) - Math.floor(a.cap.memoryFree / 2 ** 30))
    if (fits.length > 0) return { peer: fits[0]!.c }
    return later || running.size > 0 ? {} : { why: reasons.join('; ') }
  }

  const run = async (job: Job, c: EvacuationCandidate): Promise<void> => {
    const name = job.rec.spec.name
    job.tried.add(c.peerId)
    const mine = inflight.get(c.peerId) ?? { count: 0, memory: 0, cache: 0 }
    inflight.set(c.peerId, { count: mine.count + 1, memory: mine.memory + job.size.memory, cache: mine.cache + job.size.cache })
    placed.set(c.peerId, (placed.get(c.peerId) ?? 0) + job.result.size)
    const attempt: EvacuationAttempt = { peer: c.peerId, ok: false }
    job.result.attempts.push(attempt)
    Object.assign(job.state, { state: 'migrating', peer: c.peerId, attempt: job.result.attempts.length, bytes: 0, phase: 'handshake', round: 0, rate: 0, error: undefined })
    const t0 = performance.now()
    try {
      const r = await deps.migrate(name, c.to, {
        ...opts.migrate,
        // A stopped image arrives stopped, by pre-copy (no workload would read a missing block).
        ...(deps.images().find(x => x.spec.name === name)?.state === 'stopped' ? { cacheMode: 'precopy' as const } : {}),
        signal,
        ...(budget != null ? { sharedBudget: budget } : {}),
        switchoverGate: gate,
        onId: (mid) => { attempt.migration = mid; job.state.migration = mid },
        onProgress: (p) => { Object.assign(job.state, { phase: p.phase, round: p.round, bytes: p.bytes, rate: Math.round(p.rate) }) }
      })
      attempt.ok = true
      attempt.totalMs = Math.round(r.totalMs)
      job.result.bytes += r.bytes
      Object.assign(job.result, {
        ok: r.ok && r.verified, peer: c.peerId, totalMs: Math.round(r.totalMs), downtimeMs: r.downtimeMs, verified: r.verified,
        downtimeTargetMs: r.pause?.targetMs, withinTarget: r.pause?.met
      })
      Object.assign(job.state, { state: 'moved', phase: 'done' })
      log.info('evacuation: image moved', { evacuation: id, image: name, peer: c.peerId, migration: attempt.migration, downtimeMs: r.downtimeMs })
    } catch (err) {
      attempt.error = toErrorInfo(err)
      attempt.totalMs = Math.round(performance.now() - t0)
      const sent = (err as { report?: MigrationReport }).report?.bytes ?? job.state.bytes
      job.result.bytes += sent
      // Tried again elsewhere only when the image stayed here, untouched (running or stopped).
      const now = deps.images().find(r => r.spec.name === name)
      const again = !signal.aborted && errorCode(err) !== 'ERR_ABORTED' && now != null && (now.state === 'running' || now.state === 'stopped') &&
        job.result.attempts.length < maxAttempts && usable.some(u => !job.tried.has(u.peerId))
      log.warn('evacuation: migration failed', { evacuation: id, image: name, peer: c.peerId, migration: attempt.migration, error: attempt.error.code, retry: again })
      if (again) {
        Object.assign(job.state, { state: 'queued', error: attempt.error, bytes: 0 })
        queue.unshift(job)
      } else {
        Object.assign(job.state, { state: 'failed', error: attempt.error })
        job.result.error = attempt.error
      }
      placed.set(c.peerId, (placed.get(c.peerId) ?? 0) - job.result.size)
    } finally {
      const m = inflight.get(c.peerId)!
      inflight.set(c.peerId, { count: m.count - 1, memory: m.memory - job.size.memory, cache: m.cache - job.size.cache })
    }
  }

  try {
    while (queue.length > 0 || running.size > 0) {
      signal.throwIfAborted()
      // Start what fits, in order (largest first); a job no peer can take now waits for one that can.
      // At most EVACUATE_BULK_AT_ONCE bulk copies at a time: a migration starts once fewer are
      // in their first round (the copy of the whole image), so the links carry one big copy and
      // the small rounds, pauses and commits of the others, not several big copies that each last
      // longer and re-send more of what their workloads dirty meanwhile.
      for (let i = 0; i < queue.length && running.size < maxParallel && [...running.keys()].filter(inBulk).length < EVACUATE_BULK_AT_ONCE; i++) {
        const job = queue[i]!
        const { peer, why } = await place(job)
        if (peer != null) {
          queue.splice(i--, 1)
          const p = run(job, peer).finally(() => { running.delete(job) })
          running.set(job, p)
        } else if (why != null) {
          // Nothing runs and nobody can take it: it will not move.
          queue.splice(i--, 1)
          job.result.error = toErrorInfo(new ShoalError(`no peer can take image ${job.rec.spec.name}: ${why !== '' ? why : 'every peer was tried'}`, 'ERR_NO_TARGET'))
          Object.assign(job.state, { state: 'failed', error: job.result.error })
        }
      }
      if (running.size === 0) {
        if (queue.length === 0) break
        // Queued jobs and nothing running: only a peer's own incoming migrations hold the room.
        await new Promise(resolve => setTimeout(resolve, 1000))
        continue
      }
      await Promise.race([...running.values(), new Promise(resolve => setTimeout(resolve, SCHEDULE_EVERY_MS))])
    }
  } catch (err) {
    await Promise.allSettled([...running.values()])
    throw signal.aborted && !(err instanceof AbortedError) ? new AbortedError(`evacuation ${id} cancelled; images not moved yet run here as before`, { cause: err }) : err
  } finally {
    clearInterval(ticker)
  }
  report.totalMs = Math.round(performance.now() - started)
  report.bytes = jobs.reduce((s, j) => s + j.result.bytes, 0)
  report.ok = jobs.every(j => j.result.ok) && skipped.length === 0
  opts.onProgress?.(progress())
  try {
    mkdirSync(deps.dir, { recursive: true })
    const file = join(deps.dir, `${id}.json`)
    writeFileSync(`${file}.tmp`, JSON.stringify({ ...report, file }, null, 2))
    renameSync(`${file}.tmp`, file)
    report.file = file
  } catch (err) {
    log.warn('evacuation: report not written', { evacuation: id, error: (err as Error).message })
  }
  log.info('evacuation ended', { evacuation: id, ok: report.ok, moved: jobs.filter(j => j.result.ok).length, failed: jobs.filter(j => !j.result.ok).length, totalMs: report.totalMs })
  return report
}
