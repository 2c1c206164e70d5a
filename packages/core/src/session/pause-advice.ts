import { stat } from 'node:fs/promises'
import { SCAN_ESTIMATE_HASH_BPS, SCAN_ESTIMATE_SHADOW_BPS } from '../constants.js'
import type { MigrationWarning, PausePart, PauseVerdict } from './report.js'

/** An area as the advice sees it. */
export interface AdvisedArea {
  name: 'memory' | 'cache'
  path: string
  size: number
  /** The tracker's mode: `shadow` and `hash` scan the area's data in every round, the pause's included. */
  mode: string
}

/** Trackers whose rounds cost what changed, per area, for the advice. */
const FASTER: Record<AdvisedArea['name'], string[]> = {
  // A workload that marks the pages it writes; a VM's RAM has no such interface.
  memory: ['cooperative'],
  // The workload's marks, or the hypervisor's dirty bitmaps of the disk (QEMU `diskTracker: dirty-bitmap`).
  cache: ['cooperative', 'dirty-bitmap']
}

const isScan = (a: AdvisedArea): boolean => a.mode === 'shadow' || a.mode === 'hash'

function warning (a: AdvisedArea, scanMs: number, basis: 'estimate' | 'measured', targetMs: number, dataBytes?: number): MigrationWarning {
  const what = dataBytes != null ? `${(dataBytes / 2 ** 20).toFixed(0)} MiB of data` : 'its data'
  return {
    code: 'WARN_TRACKER_TOO_SLOW',
    message: `the scan tracker reads the ${a.name}'s ${what} inside the pause: ~${Math.round(scanMs)} ms (${basis}) ` +
      `against a ${targetMs} ms downtime target; the ${FASTER[a.name].join(' or ')} tracker costs what changed instead`,
    area: a.name,
    tracker: `scan (${a.mode})`,
    suggested: FASTER[a.name],
    scanMs,
    basis,
    downtimeTargetMs: targetMs
  }
}

/**
 * Before the first round: warns for each scan-tracked area when the final scan of the image (its
 * allocated bytes — holes are not read — at a per-worker rate measured on this machine kind, over
 * all workers) plus the fixed part of the pause cannot fit the downtime target.
 */
export async function estimateScanWarnings (areas: readonly AdvisedArea[], workers: number, targetMs: number, fixedMs: number): Promise<MigrationWarning[]> {
  const scanned: Array<{ a: AdvisedArea, bytes: number, ms: number }> = []
  for (const a of areas.filter(isScan)) {
    if (a.size === 0) continue
    const st = await stat(a.path).catch(() => undefined)
    const bytes = Math.min(a.size, st != null ? st.blocks * 512 : a.size)
    const rate = a.mode === 'hash' ? SCAN_ESTIMATE_HASH_BPS : SCAN_ESTIMATE_SHADOW_BPS
    scanned.push({ a, bytes, ms: bytes / (rate * Math.max(1, workers)) * 1000 })
  }
  // Both areas are scanned at once on the same workers: their costs add up.
  const total = scanned.reduce((x, s) => x + s.ms, 0)
  // When the fixed part alone misses the target, no tracker would meet it: nothing to advise.
  if (total + fixedMs <= targetMs || fixedMs >= targetMs) return []
  // Name the areas that matter: those carrying at least a quarter of the scan.
  return scanned.filter(s => s.ms >= total / 4).map(s => warning(s.a, s.ms, 'estimate', targetMs, s.bytes))
}

/**
 * After a pre-copy round: warns for scan-tracked areas not warned about yet when the round's
 * measured scan of that area plus the fixed part exceeds the target (the final scan costs as much).
 */
export function measuredScanWarnings (areas: readonly AdvisedArea[], scanMsByArea: readonly number[], targetMs: number, fixedMs: number, already: readonly MigrationWarning[]): MigrationWarning[] {
  const total = Math.max(0, ...scanMsByArea)
  if (total + fixedMs <= targetMs || fixedMs >= targetMs) return []
  return areas.flatMap((a, i) => {
    const ms = scanMsByArea[i] ?? 0
    if (!isScan(a) || a.size === 0 || ms < total / 4 || already.some(w => w.code === 'WARN_TRACKER_TOO_SLOW' && w.area === a.name)) return []
    return [warning(a, ms, 'measured', targetMs)]
  })
}

/** What the pause's parts took, and what the planner predicted when it switched over. */
export interface PauseFigures {
  targetMs: number
  predictedMs: number
  fixedMs: number
  parts: Record<PausePart, number>
}

/**
 * Judges the pause: met or missed, and which part is to blame — the one that ran furthest over
 * what was expected of it (the dirty part against its prediction, each fixed part against its
 * share of the predicted fixed part).
 */
export function judgePause (f: PauseFigures): { verdict: PauseVerdict, warning?: MigrationWarning } {
  const p = f.parts
  const actualMs = p.pause + p['final-scan'] + p['final-send'] + p['device-state'] + p.verify + p.commit
  const dirtyMs = Math.max(0, f.predictedMs - f.fixedMs)
  const verdict: PauseVerdict = { targetMs: f.targetMs, actualMs, predictedMs: f.predictedMs, met: actualMs <= f.targetMs, predicted: { dirtyMs, fixedMs: f.fixedMs }, parts: { ...p } }
  if (verdict.met) return { verdict }
  // Expected share of each part: the dirty part split as measured (scan first, then send); the
  // fixed part split evenly over pause, device state, verify and commit.
  const fixedShare = f.fixedMs / 4
  const dirtyActual = p['final-scan'] + p['final-send']
  const expected: Record<PausePart, number> = {
    pause: fixedShare,
    'final-scan': dirtyActual > 0 ? dirtyMs * p['final-scan'] / dirtyActual : 0,
    'final-send': dirtyActual > 0 ? dirtyMs * p['final-send'] / dirtyActual : 0,
    'device-state': fixedShare,
    verify: fixedShare,
    commit: fixedShare
  }
  let culprit: PausePart = 'commit'
  let worst = -Infinity
  for (const part of Object.keys(p) as PausePart[]) {
    const over = p[part] - expected[part]
    if (over > worst) { worst = over; culprit = part }
  }
  verdict.missedBy = actualMs - f.targetMs
  verdict.culprit = culprit
  return {
    verdict,
    warning: {
      code: 'WARN_DOWNTIME_MISSED',
      message: `the pause took ${Math.round(actualMs)} ms against a target of ${f.targetMs} ms (predicted ${Math.round(f.predictedMs)} ms): ` +
        `${culprit} took ${Math.round(p[culprit])} ms, ${Math.round(worst)} ms more than expected`,
      part: culprit,
      overByMs: verdict.missedBy,
      downtimeTargetMs: f.targetMs
    }
  }
}
