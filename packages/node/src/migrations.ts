import { randomBytes } from 'node:crypto'
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { AbortedError, InvalidArgumentError, ShoalError, toErrorInfo } from '@shoal/core'
import type { ErrorInfo, MigrationProgress, MigrationReport } from '@shoal/core'

/** Samples kept per migration at most (older ones are thinned to every other one). */
const MAX_SAMPLES = 2400
/** Past migrations kept on disk (the oldest are removed). */
const MAX_PAST = 200
/** A migration id: 16 hex digits. */
const ID_RULE = /^[0-9a-f]{16}$/

/** One progress snapshot of a migration, as kept for its report page. */
export interface MigrationSample {
  /** Milliseconds since the migration started. */
  t: number
  phase: MigrationProgress['phase']
  round: number
  /** Payload bytes acknowledged so far, and the recent rate (bytes per second). */
  bytes: number
  rate: number
  /** Per lane: acknowledged bytes and state. */
  lanes: Array<{ id: string, bytes: number, state: string, path?: string }>
  /** Per replica (peer id): bytes it served to the destination so far. */
  replicas?: Record<string, number>
  /** Codes of the warnings raised so far. */
  warnings?: string[]
}

/** What `shoal migrations` lists: one line per migration. */
export interface MigrationSummary {
  id: string
  direction: 'out'
  image: string
  /** The destination's peer id, and the address it was asked by. */
  peer: string
  to: string
  startedAt: string
  endedAt?: string
  state: 'running' | 'succeeded' | 'failed' | 'cancelled'
  /** Phase now (running) or last reached. */
  phase: MigrationProgress['phase']
  bytes: number
  totalMs?: number
  downtimeMs?: number
  verified?: boolean
  error?: ErrorInfo
}

/** A migration, whole: its summary, the options asked for, its report and its samples. */
export interface MigrationRecord extends MigrationSummary {
  options: Record<string, unknown>
  report?: MigrationReport
  samples: MigrationSample[]
}

/** Writes the HTML page of a finished migration (see report-html.ts). */
export type ReportRenderer = (record: MigrationRecord) => string

/** What a running migration tells the registry. */
export interface MigrationHandle {
  readonly id: string
  readonly signal: AbortSignal
  progress: (p: MigrationProgress) => void
  succeeded: (report: MigrationReport) => void
  failed: (err: unknown) => void
}

/** Told when a migration starts, makes progress and ends (metrics, logs). */
export interface MigrationListener {
  started?: (r: MigrationRecord) => void
  ended?: (r: MigrationRecord) => void
}

/**
 * The migrations out of this node: the running ones (with what cancels them) and the past ones,
 * each kept as `<dir>/<id>.json` with its report and its progress samples, and `<dir>/<id>.html`,
 * the page drawn from them. Ids are random 16-hex-digit strings; a prefix of 4+ digits finds one.
 */
export class Migrations {
  private readonly running = new Map<string, { record: MigrationRecord, abort: AbortController, started: number }>()
  private readonly listeners: MigrationListener[] = []

  constructor (private readonly dir: string, private readonly render?: ReportRenderer) {
    mkdirSync(dir, { recursive: true })
  }

  /** Adds a listener (metrics, logs). */
  listen (l: MigrationListener): void { this.listeners.push(l) }

  /** Registers a migration that starts now. */
  begin (image: string, peer: string, to: string, options: object): MigrationHandle {
    const id = randomBytes(8).toString('hex')
    const started = performance.now()
    const record: MigrationRecord = {
      id, direction: 'out', image, peer, to, startedAt: new Date().toISOString(), state: 'running', phase: 'handshake', bytes: 0, options: { ...options }, samples: []
    }
    const abort = new AbortController()
    this.running.set(id, { record, abort, started })
    for (const l of this.listeners) l.started?.(record)
    const end = (state: MigrationRecord['state'], report: MigrationReport | undefined, err?: unknown): void => {
      if (!this.running.has(id)) return
      this.running.delete(id)
      record.state = state
      record.endedAt = new Date().toISOString()
      if (report != null) {
        record.report = report
        record.bytes = report.bytes
        record.totalMs = report.totalMs
        if (report.downtimeMs != null) record.downtimeMs = report.downtimeMs
        record.verified = report.verified
      }
      if (err != null) record.error = toErrorInfo(err)
      this.persist(record)
      for (const l of this.listeners) l.ended?.(record)
    }
    return {
      id,
      signal: abort.signal,
      progress: (p) => {
        record.phase = p.phase
        record.bytes = p.bytes
        const replicas = p.cache == null ? undefined : Object.fromEntries(Object.entries(p.cache.sources).map(([k, s]) => [k, s.bytes]))
        const sample: MigrationSample = {
          t: Math.round(performance.now() - started), phase: p.phase, round: p.round, bytes: p.bytes, rate: Math.round(p.rate),
          lanes: p.lanes.map(l => ({ id: l.id, bytes: l.bytes, state: l.state, ...(l.localAddress != null ? { path: `${l.localAddress} > ${l.remoteAddress ?? '?'}` } : {}) })),
          ...(replicas != null ? { replicas } : {}),
          ...(p.warnings != null && p.warnings.length > 0 ? { warnings: p.warnings.map(w => w.code) } : {})
        }
        record.samples.push(sample)
        // Long migrations keep every other sample: the page stays small, the shape stays.
        if (record.samples.length > MAX_SAMPLES) record.samples = record.samples.filter((_, i) => i % 2 === 0)
      },
      succeeded: (report) => { end('succeeded', report) },
      failed: (err) => {
        const report = (err as { report?: MigrationReport }).report
        end(abort.signal.aborted ? 'cancelled' : 'failed', report, err)
      }
    }
  }

  /** Running and past migrations, newest first. */
  list (): MigrationSummary[] {
    const out: MigrationSummary[] = [...this.running.values()].map(r => summary(r.record))
    for (const id of this.pastIds()) {
      try { out.push(summary(this.read(id))) } catch { /* a record being written or damaged: left out */ }
    }
    return out.sort((a, b) => b.startedAt.localeCompare(a.startedAt))
  }

  /** One migration by id (or a unique prefix of 4+ digits). */
  get (idOrPrefix: string): MigrationRecord {
    const id = this.resolve(idOrPrefix)
    const r = this.running.get(id)
    return r != null ? structuredClone(r.record) : this.read(id)
  }

  /** The files of a finished migration: its JSON record and its HTML page. */
  files (idOrPrefix: string): { json: string, html: string } {
    const id = this.resolve(idOrPrefix)
    if (this.running.has(id)) throw new InvalidArgumentError(`migration ${id} is still running; its report is written when it ends`)
    return { json: join(this.dir, `${id}.json`), html: join(this.dir, `${id}.html`) }
  }

  /** Cancels a running migration: the session aborts and the source resumes its workload. */
  cancel (idOrPrefix: string): MigrationSummary {
    const id = this.resolve(idOrPrefix)
    const r = this.running.get(id)
    if (r == null) throw new InvalidArgumentError(`migration ${id} is not running (it ${this.read(id).state})`)
    r.abort.abort(new AbortedError(`migration ${id} cancelled by the operator; the workload runs here as before`))
    return summary(r.record)
  }

  /** Number of migrations running now. */
  get size (): number { return this.running.size }

  private resolve (idOrPrefix: string): string {
    if (!/^[0-9a-f]{4,16}$/.test(idOrPrefix)) throw new InvalidArgumentError(`a migration id is 4 to 16 hex digits, not ${JSON.stringify(idOrPrefix)}`)
    const all = [...this.running.keys(), ...this.pastIds()].filter(id => id.startsWith(idOrPrefix))
    const unique = [...new Set(all)]
    if (unique.length === 0) throw new ShoalError(`no migration ${idOrPrefix} on this node (see \`shoal migrations\`)`, 'ERR_UNKNOWN_MIGRATION')
    if (unique.length > 1) throw new InvalidArgumentError(`migration id ${idOrPrefix} is ambiguous: ${unique.join(', ')}`)
    return unique[0]!
  }

  private pastIds (): string[] {
    return readdirSync(this.dir).filter(f => f.endsWith('.json')).map(f => f.slice(0, -5)).filter(id => ID_RULE.test(id))
  }

  private read (id: string): MigrationRecord {
    return JSON.parse(readFileSync(join(this.dir, `${id}.json`), 'utf8')) as MigrationRecord
  }

  /** Writes the record and its page (each atomically), then trims the oldest past migrations. */
  private persist (record: MigrationRecord): void {
    const write = (file: string, text: string): void => {
      const tmp = `${file}.tmp`
      writeFileSync(tmp, text)
      renameSync(tmp, file)
    }
    try {
      write(join(this.dir, `${record.id}.json`), JSON.stringify(record) + '\n')
      if (this.render != null) write(join(this.dir, `${record.id}.html`), this.render(record))
      const past = this.pastIds().map(id => ({ id, at: this.read(id).startedAt })).sort((a, b) => a.at.localeCompare(b.at))
      for (const old of past.slice(0, Math.max(0, past.length - MAX_PAST))) {
        rmSync(join(this.dir, `${old.id}.json`), { force: true })
        rmSync(join(this.dir, `${old.id}.html`), { force: true })
      }
    } catch {
      // A full disk must not turn a finished migration into a failed one: the report was returned.
    }
  }
}

function summary (r: MigrationRecord): MigrationSummary {
  const { options: _o, report: _r, samples: _s, ...rest } = r
  return rest
}
