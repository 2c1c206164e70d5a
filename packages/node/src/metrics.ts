import { createServer } from 'node:http'
import type { Server } from 'node:http'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { InvalidArgumentError } from '@shoal/core'
import type { MigrationRecord } from './migrations.js'

/** Bucket bounds (seconds) of the downtime histogram: 10 ms .. 30 s. */
const DOWNTIME_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30]
/** Bucket bounds (seconds) of the total-time histogram: 1 s .. 2 h. */
const TOTAL_BUCKETS = [1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200]
/** Bucket bounds (bytes per second) of the per-round dirty-rate and bandwidth histograms. */
const RATE_BUCKETS = [1e5, 1e6, 1e7, 3e7, 1e8, 3e8, 1e9, 3e9, 1e10]

/**
 * A node's Prometheus metrics (prom-client), on its own registry: migrations by outcome, downtime
 * and total-time histograms, bytes by lane (by local address) and by replica, rounds, dirty rate
 * and bandwidth per round, pacing back-offs, bytes served as a replica, admission refusals, plus
 * the process's default metrics and libp2p's own (its prometheus-metrics module registers here).
 * Names start with `shoal_`; labels have bounded values (outcomes, codes, addresses, peer ids).
 */
export class NodeMetrics {
  readonly registry = new Registry()
  private readonly migrations: Counter<'outcome'>
  private readonly running: Gauge
  private readonly downtime: Histogram
  private readonly total: Histogram
  private readonly laneBytes: Counter<'local'>
  private readonly replicaBytes: Counter<'replica'>
  private readonly rounds: Counter
  private readonly dirtyRate: Histogram
  private readonly bandwidth: Histogram
  private readonly backoffs: Counter
  private readonly served: Counter<'volume'>
  private readonly refusals: Counter<'code'>
  private readonly incoming: Counter<'outcome'>

  constructor () {
    const registers = [this.registry]
    collectDefaultMetrics({ register: this.registry, prefix: 'shoal_' })
    this.migrations = new Counter({ name: 'shoal_migrations_total', help: 'Migrations out of this node that ended, by outcome (succeeded, failed, cancelled).', labelNames: ['outcome'], registers })
    this.running = new Gauge({ name: 'shoal_migrations_running', help: 'Migrations out of this node running now.', registers })
    this.downtime = new Histogram({ name: 'shoal_migration_downtime_seconds', help: 'Pause of the workload (source paused to running on the destination) of succeeded migrations.', buckets: DOWNTIME_BUCKETS, registers })
    this.total = new Histogram({ name: 'shoal_migration_duration_seconds', help: 'Total time of migrations out, from start to end, whatever their outcome.', buckets: TOTAL_BUCKETS, registers })
    this.laneBytes = new Counter({ name: 'shoal_migration_lane_bytes_total', help: 'Payload bytes acknowledged on migration lanes, by local address of the lane.', labelNames: ['local'], registers })
    this.replicaBytes = new Counter({ name: 'shoal_migration_replica_bytes_total', help: 'Cache bytes the destinations of this node\'s migrations got from each replica.', labelNames: ['replica'], registers })
    this.rounds = new Counter({ name: 'shoal_migration_rounds_total', help: 'Pre-copy rounds run (the final round included).', registers })
    this.dirtyRate = new Histogram({ name: 'shoal_migration_dirty_rate_bytes_per_second', help: 'Dirty rate measured per pre-copy round.', buckets: RATE_BUCKETS, registers })
    this.bandwidth = new Histogram({ name: 'shoal_migration_round_bandwidth_bytes_per_second', help: 'Bandwidth achieved per pre-copy round.', buckets: RATE_BUCKETS, registers })
    this.backoffs = new Counter({ name: 'shoal_migration_pacing_backoffs_total', help: 'Times adaptive pacing cut a migration\'s rate because the workload slowed down.', registers })
    this.served = new Counter({ name: 'shoal_replica_served_bytes_total', help: 'Block bytes this node served to peers as a replica (or from a cache kept for a post-copy destination).', labelNames: ['volume'], registers })
    this.refusals = new Counter({ name: 'shoal_admission_refusals_total', help: 'Incoming migrations refused before anything was staged, by error code.', labelNames: ['code'], registers })
    this.incoming = new Counter({ name: 'shoal_incoming_migrations_total', help: 'Incoming migrations that ended, by outcome (committed, failed).', labelNames: ['outcome'], registers })
    this.running.set(0)
  }

  migrationStarted (): void { this.running.inc() }

  /** Everything a finished migration out contributes. */
  migrationEnded (r: MigrationRecord): void {
    this.running.dec()
    this.migrations.inc({ outcome: r.state })
    const startedMs = Date.parse(r.startedAt)
    const endedMs = r.endedAt != null ? Date.parse(r.endedAt) : Date.now()
    this.total.observe(Math.max(0, endedMs - startedMs) / 1000)
    const report = r.report
    if (report == null) return
    if (r.state === 'succeeded' && report.downtimeMs != null) this.downtime.observe(report.downtimeMs / 1000)
    for (const l of report.lanes) if (l.bytes > 0) this.laneBytes.inc({ local: hostOf(l.localAddress) }, l.bytes)
    for (const [peer, s] of Object.entries(report.cache?.sources ?? {})) if (s.bytes > 0) this.replicaBytes.inc({ replica: peer }, s.bytes)
    this.rounds.inc(report.rounds.length)
    for (const round of report.rounds) {
      if (round.dirtyRate != null) this.dirtyRate.observe(round.dirtyRate)
      if (round.bandwidth != null) this.bandwidth.observe(round.bandwidth)
    }
    if ((report.pacing?.backoffs ?? 0) > 0) this.backoffs.inc(report.pacing!.backoffs)
  }

  blocksServed (volume: string, bytes: number): void { this.served.inc({ volume }, bytes) }
  admissionRefused (code: string): void { this.refusals.inc({ code }) }
  incomingEnded (committed: boolean): void { this.incoming.inc({ outcome: committed ? 'committed' : 'failed' }) }
}

/** The host part of a lane's local address (an IP, or the multiaddr's), bounded like the NICs. */
function hostOf (addr: string | undefined): string {
  if (addr == null) return 'unknown'
  const m = /\/ip[46]\/([^/]+)/.exec(addr) ?? /^\[?([0-9a-fA-F:.]+?)\]?:\d+$/.exec(addr)
  return m?.[1] ?? addr
}

/** Parses `HOST:PORT` for the metrics endpoint. */
export function parseHostPort (s: string): { host: string, port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+|localhost)):(\d{1,5})$/.exec(s)
  const port = Number(m?.[3])
  if (m == null || !(port >= 0 && port <= 65535)) throw new InvalidArgumentError(`metrics address must be HOST:PORT (an IP address or localhost, and a port), not ${JSON.stringify(s)}`)
  return { host: m[1] ?? m[2]!, port }
}

/** Serves `GET /metrics` (Prometheus text format) on `host:port`; anything else is a 404. */
export async function startMetricsServer (metrics: NodeMetrics, addr: { host: string, port: number }): Promise<{ server: Server, url: string }> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') { res.writeHead(404).end('see /metrics\n'); return }
    metrics.registry.metrics().then(text => {
      res.writeHead(200, { 'content-type': metrics.registry.contentType })
      res.end(text)
    }, (err: Error) => { res.writeHead(500).end(`${err.message}\n`) })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(addr.port, addr.host, () => { server.off('error', reject); resolve() })
  })
  const a = server.address()
  const port = typeof a === 'object' && a != null ? a.port : addr.port
  return { server, url: `http://${addr.host.includes(':') ? `[${addr.host}]` : addr.host}:${port}/metrics` }
}
