import { closeSync, openSync, truncateSync, writeFileSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import { estimateScanWarnings, judgePause, measuredScanWarnings } from '@shoal/core'
import { tempDir } from '../fixtures/temp.js'

describe('pause advice', () => {
  const cleanups: Array<() => void> = []
  afterEach(() => { for (const c of cleanups.splice(0)) c() })

  it('warns up front for a scan-tracked area whose data cannot be scanned within the target, naming faster trackers', async () => {
    const dir = tempDir('advice')
    cleanups.push(dir.cleanup)
    const dense = `${dir.path}/dense`
    writeFileSync(dense, Buffer.alloc(64 * 2 ** 20, 1))
    const sparse = `${dir.path}/sparse`
    closeSync(openSync(sparse, 'w'))
    truncateSync(sparse, 16 * 2 ** 30)
    // 64 MiB by SHA-256 per unit on 1 worker: ~134 ms against a 100 ms target.
    const w = await estimateScanWarnings([{ name: 'cache', path: dense, size: 64 * 2 ** 20, mode: 'hash' }], 1, 100, 20)
    expect(w).toHaveLength(1)
    expect(w[0]).toMatchObject({ code: 'WARN_TRACKER_TOO_SLOW', area: 'cache', basis: 'estimate', suggested: ['cooperative', 'dirty-bitmap'] })
    // A 16 GiB cache that is all holes costs nothing to scan: holes are not read.
    expect(await estimateScanWarnings([{ name: 'cache', path: sparse, size: 16 * 2 ** 30, mode: 'hash' }], 1, 100, 20)).toEqual([])
    // Trackers that do not scan are never blamed; nor is any tracker when the fixed part alone misses.
    expect(await estimateScanWarnings([{ name: 'cache', path: dense, size: 64 * 2 ** 20, mode: 'cooperative' }], 1, 100, 20)).toEqual([])
    expect(await estimateScanWarnings([{ name: 'cache', path: dense, size: 64 * 2 ** 20, mode: 'hash' }], 1, 100, 150)).toEqual([])
  })

  it('warns after a round whose measured scan exceeds the target, once per area', () => {
    const areas = [{ name: 'memory' as const, path: '-', size: 1, mode: 'shadow' }, { name: 'cache' as const, path: '-', size: 1, mode: 'hash' }]
    const w = measuredScanWarnings(areas, [40, 11_300], 300, 20, [])
    expect(w.map(x => [x.area, x.basis])).toEqual([['cache', 'measured']])
    expect(measuredScanWarnings(areas, [40, 11_300], 300, 20, w)).toEqual([])
    expect(measuredScanWarnings(areas, [40, 200], 300, 20, [])).toEqual([])
  })

  it('names the part that missed the target: the demo pause of issue 10', () => {
    // downtime 720 ms against 300: final scan 50, final send 82 (32 after the scan), verify 8,
    // commit+resume 587; the planner predicted 289 with a fixed part of 20.
    const { verdict, warning } = judgePause({
      targetMs: 300, predictedMs: 289, fixedMs: 20,
      parts: { pause: 1, 'final-scan': 50, 'final-send': 32, 'device-state': 2, verify: 8, commit: 587 }
    })
    expect(verdict).toMatchObject({ met: false, culprit: 'commit', targetMs: 300, predictedMs: 289, predicted: { dirtyMs: 269, fixedMs: 20 } })
    expect(verdict.actualMs).toBe(680)
    expect(verdict.missedBy).toBe(380)
    expect(warning).toMatchObject({ code: 'WARN_DOWNTIME_MISSED', part: 'commit', overByMs: 380 })
    expect(warning!.message).toContain('commit')
    // A scan far over its prediction is named instead.
    expect(judgePause({ targetMs: 300, predictedMs: 100, fixedMs: 20, parts: { pause: 1, 'final-scan': 900, 'final-send': 10, 'device-state': 2, verify: 8, commit: 30 } }).verdict.culprit).toBe('final-scan')
    // A pause within its target: no culprit, no warning.
    const ok = judgePause({ targetMs: 300, predictedMs: 100, fixedMs: 20, parts: { pause: 1, 'final-scan': 50, 'final-send': 10, 'device-state': 2, verify: 8, commit: 30 } })
    expect(ok.verdict.met).toBe(true)
    expect(ok.verdict.culprit).toBeUndefined()
    expect(ok.warning).toBeUndefined()
  })
})
