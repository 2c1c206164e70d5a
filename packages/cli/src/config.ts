import { readFileSync } from 'node:fs'
import { parse as parseYaml, YAMLParseError } from 'yaml'
import { z } from 'zod'
import { InvalidArgumentError } from '@shoal/core'
import { describeIssues, migrateOptions } from '@shoal/node'
import type { MigrateOptions } from '@shoal/node'
import { parseSize } from './args.js'

/**
 * `shoal node --config FILE`: a YAML file (JSON is YAML too) whose keys are the flags of
 * `shoal node` without their dashes prefix (`data-dir`, `max-incoming`, ...), plus `migrate:`,
 * defaults for the migrations this node starts. Checked by a zod schema: an unknown key or a
 * wrong type is an error naming the key. Flags given on the command line override the file.
 */

/** A size: a number of bytes or a string like "64k", "256M", "1G". */
const size = z.union([z.number().int().min(0), z.string()]).transform((v, ctx) => {
  if (typeof v === 'number') return v
  try {
    return parseSize(v)
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message })
    return z.NEVER
  }
})
const positiveInt = z.number().int().min(1)
const hostPort = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[0-9.]+|localhost):\d{1,5}$/, 'must be HOST:PORT (an IP address or localhost, and a port)')

/** Defaults for migrations out of this node (the request's own values win). */
const migrateDefaults = z.strictObject({
  lanes: positiveInt.max(256).optional(),
  'max-rounds': positiveInt.optional(),
  'downtime-target': positiveInt.optional(),
  'max-rate': size.optional(),
  'lane-rate': size.optional(),
  'scan-cpu': z.number().gt(0).max(1).optional(),
  'auto-converge': z.boolean().optional(),
  'adaptive-pacing': z.boolean().optional(),
  'cache-mode': z.enum(['precopy', 'postcopy']).optional(),
  'postcopy-prefetch': z.boolean().optional()
})

/** The config file of `shoal node`. */
export const nodeConfigSchema = z.strictObject({
  'data-dir': z.string().min(1).optional(),
  listen: z.array(z.string()).optional(),
  allow: z.array(z.string()).optional(),
  bootstrap: z.array(z.string()).optional(),
  mdns: z.boolean().optional(),
  'shm-dir': z.string().min(1).optional(),
  workers: positiveInt.optional(),
  'data-workers': z.number().int().min(0).max(256).optional(),
  'serve-rate': size.optional(),
  'block-request-rate': positiveInt.optional(),
  'max-memory': size.optional(),
  'max-cache': size.optional(),
  'max-incoming': positiveInt.optional(),
  'max-incoming-per-peer': positiveInt.optional(),
  'space-margin': size.optional(),
  'swarm-key': z.string().min(1).optional(),
  'keep-workloads': z.boolean().optional(),
  'stop-grace': z.number().min(0).optional().describe('seconds running migrations out get to finish on SIGTERM'),
  metrics: hostPort.optional(),
  'log-format': z.enum(['json', 'pretty']).optional(),
  'log-level': z.enum(['debug', 'info', 'warn', 'error']).optional(),
  migrate: migrateDefaults.optional()
})

export type NodeConfig = z.output<typeof nodeConfigSchema>

/** Reads and checks a config file; the error names the file and every key at fault. */
export function loadNodeConfig (path: string): NodeConfig {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new InvalidArgumentError(`cannot read the config file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err })
  }
  let doc: unknown
  try {
    doc = parseYaml(text, { uniqueKeys: true })
  } catch (err) {
    const where = err instanceof YAMLParseError && err.linePos != null ? ` (line ${err.linePos[0].line})` : ''
    throw new InvalidArgumentError(`config file ${path} is not valid YAML${where}: ${(err as Error).message.split('\n')[0]!}`, { cause: err })
  }
  // An empty file is an empty config.
  const r = nodeConfigSchema.safeParse(doc ?? {})
  if (!r.success) throw new InvalidArgumentError(`config file ${path}: ${describeIssues(r.error)}`)
  return r.data
}

/** The file's migration defaults as the node's migrate options (checked again by the node's own schema). */
export function migrateDefaultsOf (c: NodeConfig): MigrateOptions {
  const m = c.migrate
  if (m == null) return {}
  const out = {
    lanes: m.lanes, maxRounds: m['max-rounds'], downtimeTargetMs: m['downtime-target'], maxRate: m['max-rate'], laneRate: m['lane-rate'],
    scanCpuShare: m['scan-cpu'], autoConverge: m['auto-converge'], adaptivePacing: m['adaptive-pacing'], cacheMode: m['cache-mode'], postcopyPrefetch: m['postcopy-prefetch']
  }
  const defined = Object.fromEntries(Object.entries(out).filter(([, v]) => v !== undefined))
  return migrateOptions.parse(defined)
}
