import type { CacheFetchStats, MigrationProgress, MigrationReport } from '@shoal/core'

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB']

/** 1536 → "1.5 KiB". */
export function formatBytes (n: number): string {
  let i = 0
  let v = n
  while (v >= 1024 && i < UNITS.length - 1) { v /= 1024; i++ }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${UNITS[i]}`
}

/** Bytes per second → "123.4 MB/s" (decimal, as network rates are quoted). */
export function formatRate (bps: number): string {
  return `${(bps / 1e6).toFixed(1)} MB/s`
}

/** Milliseconds → "850 ms" / "12.3 s". */
export function formatMs (ms: number): string {
  return ms < 1000 ? `${ms.toFixed(0)} ms` : `${(ms / 1000).toFixed(1)} s`
}

/** One line of progress: phase, round, bar, bytes, rate, ETA. */
export function progressLine (p: MigrationProgress, width = 24): string {
  const total = p.bytes + p.remaining
  const frac = total > 0 ? Math.min(1, p.bytes / total) : 0
  const fill = Math.round(frac * width)
  const bar = '#'.repeat(fill) + '-'.repeat(width - fill)
  const eta = p.etaMs != null ? ` ETA ${formatMs(p.etaMs)}` : ''
  const active = p.lanes.filter(l => l.state === 'active')
  return `${p.phase.padEnd(10)} round ${String(p.round).padStart(2)} [${bar}] ${formatBytes(p.bytes).padStart(10)} ${formatRate(p.rate).padStart(11)}${eta} lanes ${active.length}/${p.lanes.length}`
}

/** Per-lane health, one line each: address pair, state, bytes, current rate. */
export function laneLines (p: MigrationProgress): string[] {
  return p.lanes.map(l => `  lane ${String(l.index).padStart(2)} ${l.id.padEnd(28)} ${l.state.padEnd(6)} ${formatBytes(l.bytes).padStart(10)} ${formatRate(l.rate).padStart(11)}${l.error != null ? `  ${l.error}` : ''}`)
}

/** Where a cache's clean blocks came from besides the source: one line per replica, then dedup. */
export function cacheLines (c: CacheFetchStats, indent = '  '): string[] {
  const fetched = Object.values(c.sources).reduce((a, s) => a + s.bytes, 0)
  const d = c.dedup
  const lines = [`${indent}cache ${c.volume}: ${c.claimedBlocks} clean blocks left to others, ${formatBytes(fetched)} from ${Object.keys(c.sources).length} replicas` +
    `${c.done ? '' : ' so far'} in ${formatMs(c.ms)}; dedup saved ${formatBytes(d.zeroBytes + d.duplicateBytes + d.localBytes)} ` +
    `(zero ${formatBytes(d.zeroBytes)}, repeats ${formatBytes(d.duplicateBytes)}, local ${formatBytes(d.localBytes)})` +
    (c.done ? `; ${c.leftoverBlocks} blocks left for the source` : '')]
  for (const [peer, s] of Object.entries(c.sources)) {
    const dropped = c.dropped[peer]
    lines.push(`${indent}  replica ${shortPeer(peer)} ${formatBytes(s.bytes).padStart(10)} ${String(s.blocks).padStart(6)} blocks${s.corrupt > 0 ? `, ${s.corrupt} corrupt (discarded)` : ''}${dropped != null ? `, dropped: ${dropped}` : ''}`)
  }
  return lines
}

function shortPeer (p: string): string { return p.length > 16 ? `${p.slice(0, 6)}…${p.slice(-6)}` : p }

/** The human-readable report printed after a migration. */
export function formatReport (r: MigrationReport): string {
  const lines: string[] = []
  lines.push(`Migration of ${r.image}: ${r.ok ? 'OK' : 'FAILED'}`)
  if (r.error != null) lines.push(`  error:        ${r.error.message} (${r.error.code})${r.sourceResumed === true ? '; source workload resumed' : ''}`)
  lines.push(`  total time:   ${formatMs(r.totalMs)}`)
  if (r.downtimeMs != null) {
    const d = r.downtime
    lines.push(`  downtime:     ${formatMs(r.downtimeMs)}` + (d != null ? ` (final scan ${formatMs(d.finalScanMs)}, final send ${formatMs(d.finalSendMs)}, verify ${formatMs(d.verifyMs)}, commit+resume ${formatMs(d.commitMs)})` : ''))
  }
  if (r.pause != null) {
    const v = r.pause
    const parts = (Object.entries(v.parts) as Array<[string, number]>).filter(([, ms]) => ms > 0).map(([k, ms]) => `${k} ${formatMs(ms)}`).join(', ')
    lines.push(v.met
      ? `  pause:        within its ${formatMs(v.targetMs)} target (predicted ${formatMs(v.predictedMs)})`
      : `  pause:        MISSED its ${formatMs(v.targetMs)} target by ${formatMs(v.missedBy ?? v.actualMs - v.targetMs)} (predicted ${formatMs(v.predictedMs)}); furthest over: ${v.culprit ?? '?'} — ${parts}`)
  }
  for (const w of r.warnings ?? []) lines.push(`  warning:      ${w.message} (${w.code})`)
  lines.push(`  sent:         ${formatBytes(r.bytes)} at ${formatRate(r.bytes / (r.totalMs / 1000))} average`)
  lines.push(`  verification: ${r.verified ? 'digests match' : 'not verified'}${r.memoryDigest != null ? ` (memory ${r.memoryDigest.slice(0, 16)}…, cache ${r.cacheDigest?.slice(0, 16) ?? ''}…)` : ''}`)
  lines.push('  rounds:')
  for (const x of r.rounds) {
    const extra = [
      x.dirtyRate != null ? `dirtied ${formatRate(x.dirtyRate)}` : '',
      x.predictedPauseMs != null && !x.final ? `predicted pause ${formatMs(x.predictedPauseMs)}` : '',
      (x.throttle ?? 0) > 0 ? `throttle ${Math.round(x.throttle! * 100)}%` : ''
    ].filter(e => e !== '').join(', ')
    lines.push(`    ${String(x.round).padStart(2)}${x.final ? ' (paused)' : '         '} ${String(x.pages).padStart(8)} pages ${String(x.blocks).padStart(6)} blocks ${formatBytes(x.bytes).padStart(10)}  scan ${formatMs(x.scanMs).padStart(7)}  send ${formatMs(x.sendMs).padStart(7)}${extra !== '' ? `  (${extra})` : ''}`)
  }
  if (r.convergence != null) {
    const c = r.convergence
    lines.push(`  convergence:  ${c.converged ? `converged (${c.reason})` : `not converged (${c.reason})`}${c.targetMet ? '' : ', predicted pause above the target'}${c.maxThrottle > 0 ? `, auto-converge throttled the workload up to ${Math.round(c.maxThrottle * 100)}%` : ''}`)
  }
  if (r.pacing != null) {
    const p = r.pacing
    lines.push(`  pacing:       workload ${p.baselineOpsPerSec.toFixed(0)} ops/s before, lowest ${p.minOpsPerSec.toFixed(0)} during; ${p.backoffs} back-offs${p.lowestRate != null ? ` (down to ${formatRate(p.lowestRate)})` : ''}`)
  }
  if (r.postcopy != null) {
    lines.push(`  post-copy:    ${r.postcopy.deferredBlocks} cache blocks (${formatBytes(r.postcopy.deferredBytes)}) were still to come at the switchover; they stream in from the replicas and from this node, which keeps its copy until the destination has them all (\`shoal status\` there shows the progress)`)
  }
  if (r.cache != null) {
    lines.push(`  cache:        ${r.cache.sourceBlocks} blocks sent by the source (hot, dirty, or not found elsewhere)`)
    lines.push(...cacheLines(r.cache, '    '))
  }
  if (r.controlMoves != null) lines.push(`  control:      moved to ${r.controlMoves.join(', then ')} (its lane broke or went silent)`)
  lines.push('  lanes:')
  for (const l of r.lanes) {
    lines.push(`    ${String(l.index).padStart(2)} ${l.id.padEnd(28)} ${formatBytes(l.bytes).padStart(10)} ${String(l.chunks).padStart(6)} chunks  ${l.state}${l.requeued > 0 ? ` (${l.requeued} chunks re-queued)` : ''}${l.error != null ? `: ${l.error}` : ''}`)
  }
  return lines.join('\n')
}

/** A table of plain columns, each as wide as its widest cell, two spaces apart. */
export function formatTable (head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map(r => (r[i] ?? '').length)))
  const line = (r: string[]): string => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()
  return [line(head), ...rows.map(line)].join('\n') + '\n'
}

/**
 * A block of progress lines: redrawn in place on a terminal, else printed at most every
 * `everyMs`; a note (an id, a warning) goes above it once.
 */
export class LiveLines {
  private drawn = 0
  private lastPrint = 0
  constructor (private readonly out: NodeJS.WriteStream, private readonly everyMs = 1000) {}

  draw (lines: string[]): void {
    if (this.out.isTTY) {
      this.out.write(`${this.drawn > 0 ? `\x1b[${this.drawn}F` : ''}${lines.map(l => `${l}\x1b[K`).join('\n')}\n`)
      this.drawn = lines.length
    } else if (Date.now() - this.lastPrint > this.everyMs) {
      this.out.write(lines.join('\n') + '\n')
      this.lastPrint = Date.now()
    }
  }

  note (line: string): void {
    this.out.write(`${this.out.isTTY && this.drawn > 0 ? `\x1b[${this.drawn}F\x1b[J` : ''}${line}\n`)
    this.drawn = 0
  }
}
