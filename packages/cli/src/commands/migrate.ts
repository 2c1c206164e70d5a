import type { ErrorInfo, MigrationProgress, MigrationReport } from '@shoal/core'
import { NodeGoneError } from '@shoal/core'
import { resolvePeer } from '@shoal/node'
import { call, controlError, socketOf } from '../control-client.js'
import { checkImageName } from '../args.js'
import { cacheLines, formatReport, laneLines, LiveLines, progressLine } from '../format.js'

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
  /** `precopy` (default) or `postcopy`. */
  cacheMode?: 'precopy' | 'postcopy'
  postcopyPrefetch?: boolean
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
  const live = new LiveLines(out)
  let result: { type: string, report?: MigrationReport, error?: ErrorInfo } | undefined
  // Ctrl-C hangs up on the node, which aborts the migration; the source keeps running.
  const onInt = (): void => {
    out.write('\nshoal: migration cancelled; the workload keeps running on the source\n')
    process.exit(130)
  }
  const warned = new Set<string>()
  let id: string | undefined
  if (o.handleInterrupt !== false) process.once('SIGINT', onInt)
  await call(socket, 'POST', '/migrate', {
    image, to: o.to, lanes: o.lanes, maxRounds: o.maxRounds, downtimeTargetMs: o.downtimeTarget, autoConverge: o.autoConverge,
    maxRate: o.maxRate, laneRate: o.laneRate, scanCpuShare: o.scanCpu, adaptivePacing: o.adaptivePacing, cacheMode: o.cacheMode, postcopyPrefetch: o.postcopyPrefetch
  }, (v) => {
    if (typeof v.id === 'string' && id == null) {
      id = v.id
      // Told on stderr in every mode: stdout stays the report alone (JSON with --json).
      live.note(`shoal: migration ${id} (\`shoal cancel ${id.slice(0, 8)}\` to cancel it, \`shoal report ${id.slice(0, 8)}\` for its page once it ends)`)
    }
    if (v.type === 'progress') {
      const p = v as unknown as MigrationProgress
      if (o.json === true) return
      // A warning is told once, the moment it arises (before the pause, when it still matters).
      for (const w of p.warnings ?? []) {
        if (warned.has(w.code + (w.area ?? ''))) continue
        warned.add(w.code + (w.area ?? ''))
        live.note(`shoal: warning: ${w.message} (${w.code})`)
      }
      // The bar, then one line per lane (and the cache's sources).
      live.draw([progressLine(p), ...laneLines(p), ...(p.cache != null ? cacheLines(p.cache) : [])])
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
