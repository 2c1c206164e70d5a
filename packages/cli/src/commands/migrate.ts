import type { ErrorInfo, MigrationProgress, MigrationReport } from '@shoal/core'
import { NodeGoneError } from '@shoal/core'
import { resolvePeer } from '@shoal/node'
import { call, controlError, socketOf } from '../control-client.js'
import { checkImageName } from '../args.js'
import { cacheLines, formatReport, laneLines, progressLine } from '../format.js'

/** Options of `shoal migrate`. */
export interface MigrateCommandOptions {
  to: string
  node: string
  lanes?: number
  maxRounds?: number
  downtimeTarget?: number
  autoConverge?: boolean
  maxRate?: number
  laneRate?: number
  scanCpu?: number
  adaptivePacing?: boolean
  json?: boolean
  /** Handle Ctrl-C here (default true); the demo handles it itself. */
  handleInterrupt?: boolean
  /** Where progress goes; default stderr. */
  progressOut?: NodeJS.WriteStream
}

/** `shoal migrate <image> --to <peer>`: runs a migration on a node, shows progress, prints the report. */
export async function runMigrate (image: string, o: MigrateCommandOptions): Promise<MigrationReport> {
  // Bad arguments are refused here, naming the flag, before the node is asked anything.
  checkImageName(image)
  resolvePeer(o.to, '--to')
  const socket = socketOf(o.node)
  const out = o.progressOut ?? process.stderr
  const tty = out.isTTY
  let lastPrint = 0
  let drawn = 0
  let result: { type: string, report?: MigrationReport, error?: ErrorInfo } | undefined
  // Ctrl-C hangs up on the node, which aborts the migration; the source keeps running.
  const onInt = (): void => {
    out.write('\nshoal: migration cancelled; the workload keeps running on the source\n')
    process.exit(130)
  }
  const warned = new Set<string>()
  if (o.handleInterrupt !== false) process.once('SIGINT', onInt)
  await call(socket, 'POST', '/migrate', {
    image, to: o.to, lanes: o.lanes, maxRounds: o.maxRounds, downtimeTargetMs: o.downtimeTarget, autoConverge: o.autoConverge,
    maxRate: o.maxRate, laneRate: o.laneRate, scanCpuShare: o.scanCpu, adaptivePacing: o.adaptivePacing
  }, (v) => {
    if (v.type === 'progress') {
      const p = v as unknown as MigrationProgress
      if (o.json === true) return
      // A warning is told once, the moment it arises (before the pause, when it still matters).
      for (const w of p.warnings ?? []) {
        if (warned.has(w.code + (w.area ?? ''))) continue
        warned.add(w.code + (w.area ?? ''))
        out.write(`${tty && drawn > 0 ? `\x1b[${drawn}F\x1b[J` : ''}shoal: warning: ${w.message} (${w.code})\n`)
        drawn = 0
      }
      const lines = [progressLine(p), ...laneLines(p), ...(p.cache != null ? cacheLines(p.cache) : [])]
      if (tty) {
        // Redraw the block in place: the bar, then one line per lane.
        out.write(`${drawn > 0 ? `\x1b[${drawn}F` : ''}${lines.map(l => `${l}\x1b[K`).join('\n')}\n`)
        drawn = lines.length
      } else if (Date.now() - lastPrint > 1000) { out.write(lines.join('\n') + '\n'); lastPrint = Date.now() }
    } else {
      result = v as typeof result
    }
  })
  process.off('SIGINT', onInt)
  if (result?.report != null) process.stdout.write((o.json === true ? JSON.stringify(result.report) : formatReport(result.report)) + '\n')
  if (result == null) throw new NodeGoneError(`the node at ${socket} ended the migration stream without a result (it crashed or was stopped; see its log)`)
  if (result.type === 'error') throw controlError(result.error, 'migration failed')
  return result.report!
}
