import type { ErrorInfo } from '@shoal/core'
import { InvalidArgumentError, NodeGoneError } from '@shoal/core'
import type { EvacuationProgress, EvacuationReport } from '@shoal/node'
import { resolvePeer } from '@shoal/node'
import { checkImageName } from '../args.js'
import { call, controlError, socketOf } from '../control-client.js'
import { formatBytes, formatMs, formatRate, formatTable, LiveLines } from '../format.js'

/** Options of `shoal evacuate`. */
export interface EvacuateCommandOptions {
  node: string
  /** Peers (the CLI's --to values, comma lists split). */
  to?: string[]
  any?: boolean
  maxParallel?: number
  maxRate?: number
  maxAttempts?: number
  images?: string[]
  lanes?: number
  downtimeTarget?: number
  cacheMode?: 'precopy' | 'postcopy'
  json?: boolean
  progressOut?: NodeJS.WriteStream
}

/** `shoal evacuate`: moves every image of the node to peers that can take it; one progress view, one summary. */
export async function runEvacuate (o: EvacuateCommandOptions): Promise<EvacuationReport> {
  const to = o.to ?? []
  if (to.length === 0 && o.any !== true) throw new InvalidArgumentError('say where the images may go: --to PEER[,PEER...] or --any')
  if (to.length > 0 && o.any === true) throw new InvalidArgumentError('give --to or --any, not both')
  for (const t of to) resolvePeer(t, '--to')
  const images = o.images ?? []
  for (const i of images) checkImageName(i)
  const out = o.progressOut ?? process.stderr
  const live = new LiveLines(out, 2000)
  let result: { type: string, report?: EvacuationReport, error?: ErrorInfo } | undefined
  const onInt = (): void => {
    out.write('\nshoal: evacuation cancelled; images not moved yet keep running here\n')
    process.exit(130)
  }
  process.once('SIGINT', onInt)
  try {
    await call(socketOf(o.node), 'POST', '/evacuate', {
      ...(to.length > 0 ? { to } : { any: true }),
      maxParallel: o.maxParallel, maxRate: o.maxRate, maxAttempts: o.maxAttempts, images: images.length > 0 ? images : undefined,
      lanes: o.lanes, downtimeTargetMs: o.downtimeTarget, cacheMode: o.cacheMode
    }, (v) => {
      if (v.type === 'progress') {
        if (o.json === true) return
        live.draw(progressLines(v.evacuation as EvacuationProgress))
      } else {
        result = v as typeof result
      }
    })
  } finally {
    process.off('SIGINT', onInt)
  }
  if (result == null) throw new NodeGoneError(`the node at ${socketOf(o.node)} ended the evacuation stream without a result (it crashed or was stopped; see its log)`)
  if (result.type === 'error') throw controlError(result.error, 'evacuation failed')
  const report = result.report!
  process.stdout.write(o.json === true ? JSON.stringify(report) + '\n' : formatEvacuation(report))
  // Some image not moved: the summary says which and why; the exit status says it too.
  if (!report.ok) process.exitCode = 1
  return report
}

/** One line for the whole, one per image. */
export function progressLines (p: EvacuationProgress): string[] {
  const head = `evacuation ${p.id.slice(0, 8)}  ${formatMs(p.elapsedMs)}  ${p.moved}/${p.images.length} moved  ${p.running} running  ${p.failed} failed  ${formatBytes(p.bytes)} sent`
  return [head, ...p.images.map(i => {
    const where = i.peer != null ? ` -> ${i.peer.slice(-8)}` : ''
    const detail = i.state === 'migrating'
      ? `${i.phase ?? ''} round ${i.round ?? 0}  ${formatBytes(i.bytes)}  ${formatRate(i.rate ?? 0)}`
      : i.state === 'failed' || (i.state === 'queued' && i.error != null) ? `${i.error?.code ?? ''}` : ''
    return `  ${i.image.padEnd(16)} ${i.state.padEnd(9)}${where}${i.attempt > 1 ? ` (attempt ${i.attempt})` : ''}  ${detail}`.trimEnd()
  })]
}

/** The summary: one row per image, then what was skipped and the peers that took nothing. */
export function formatEvacuation (r: EvacuationReport): string {
  const rows = r.images.map(i => [
    i.image, i.ok ? 'moved' : 'NOT MOVED', i.peer?.slice(-8) ?? '-', String(i.attempts.length), formatBytes(i.size),
    i.totalMs != null ? formatMs(i.totalMs) : '-',
    i.downtimeMs != null ? `${i.downtimeMs.toFixed(0)} ms${i.downtimeTargetMs != null ? ` / ${i.downtimeTargetMs} ms` : ''}${i.withinTarget === false ? ' MISSED' : ''}` : '-',
    i.verified == null ? '-' : i.verified ? 'yes' : 'NO', i.error != null ? `${i.error.code}: ${i.error.message}` : ''
  ])
  let s = `Evacuation ${r.id}: ${r.ok ? 'OK' : 'INCOMPLETE'} — ${r.images.filter(i => i.ok).length} of ${r.images.length} images moved in ${formatMs(r.totalMs)}, ${formatBytes(r.bytes)} sent, up to ${r.maxParallel} at once${r.maxRate != null ? ` under ${formatRate(r.maxRate)}` : ''}\n`
  s += formatTable(['IMAGE', 'STATE', 'TO', 'TRIES', 'SIZE', 'TOTAL', 'DOWNTIME / TARGET', 'VERIFIED', 'ERROR'], rows)
  for (const k of r.skipped) s += `skipped ${k.image}: ${k.reason}\n`
  for (const c of r.candidates.filter(c => c.excluded != null)) s += `peer ${c.peerId} took nothing: ${c.excluded!.message} (${c.excluded!.code})\n`
  if (r.file != null) s += `report: ${r.file}\n`
  return s
}
