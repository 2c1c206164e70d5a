import { readFileSync } from 'node:fs'
import { InvalidArgumentError } from '@shoal/core'
import { createShoalNode, pinoLogger } from '@shoal/node'
import { createQemuDriver } from '@shoal/driver-qemu'
import { createSyntheticDriver } from '@shoal/driver-synthetic'
import { loadNodeConfig, migrateDefaultsOf } from '../config.js'
import type { NodeConfig } from '../config.js'

/** Options of `shoal node`. */
export interface NodeCommandOptions {
  config?: string
  dataDir?: string
  listen: string[]
  allow: string[]
  bootstrap: string[]
  mdns: boolean
  shmDir?: string
  workers?: number
  dataWorkers?: number
  serveRate?: number
  blockRequestRate?: number
  maxMemory?: number
  maxCache?: number
  maxIncoming?: number
  maxIncomingPerPeer?: number
  spaceMargin?: number
  swarmKey?: string
  keepWorkloads?: boolean
  stopGrace?: number
  metrics?: string
  logFormat?: 'json' | 'pretty'
  logLevel?: 'debug' | 'info' | 'warn' | 'error'
}

/** The config file's key of each option of `shoal node` (the flag without its dashes). */
const FILE_KEYS: Partial<Record<keyof NodeCommandOptions, keyof NodeConfig>> = {
  dataDir: 'data-dir', listen: 'listen', allow: 'allow', bootstrap: 'bootstrap', mdns: 'mdns', shmDir: 'shm-dir', workers: 'workers',
  dataWorkers: 'data-workers', serveRate: 'serve-rate', blockRequestRate: 'block-request-rate', maxMemory: 'max-memory', maxCache: 'max-cache',
  maxIncoming: 'max-incoming', maxIncomingPerPeer: 'max-incoming-per-peer', spaceMargin: 'space-margin', swarmKey: 'swarm-key',
  keepWorkloads: 'keep-workloads', stopGrace: 'stop-grace', metrics: 'metrics', logFormat: 'log-format', logLevel: 'log-level'
}

/** The options in effect: the config file's values, overridden by every flag given on the command line. */
export function mergeConfig (flags: NodeCommandOptions, fromCli: (key: string) => boolean, file: NodeConfig | undefined): NodeCommandOptions {
  if (file == null) return flags
  const out: Record<string, unknown> = { ...flags }
  for (const [opt, key] of Object.entries(FILE_KEYS)) {
    if (fromCli(opt)) continue
    const v = file[key!]
    if (v !== undefined) out[opt] = v
  }
  return out as unknown as NodeCommandOptions
}

/** `shoal config check FILE`: the settings a config file makes, or the keys at fault. */
export function runConfigCheck (file: string, o: { json?: boolean }): void {
  const c = loadNodeConfig(file)
  const defaults = migrateDefaultsOf(c)
  if (o.json === true) { process.stdout.write(JSON.stringify({ node: c, migrateDefaults: defaults }) + '\n'); return }
  const lines = [`${file}: OK`]
  for (const [k, v] of Object.entries(c)) if (k !== 'migrate') lines.push(`  ${k}: ${JSON.stringify(v)}`)
  for (const [k, v] of Object.entries(defaults)) lines.push(`  migrate.${k}: ${JSON.stringify(v)}`)
  if (c['data-dir'] == null) lines.push('  (no data-dir: give --data-dir when starting the node)')
  process.stdout.write(lines.join('\n') + '\n')
}

/** `shoal node`: runs a peer daemon until SIGINT/SIGTERM. Prints `{peerId, addrs}` on stdout once listening. */
export async function runNode (flags: NodeCommandOptions, fromCli: (key: string) => boolean = () => true): Promise<void> {
  const file = flags.config != null ? loadNodeConfig(flags.config) : undefined
  const o = mergeConfig(flags, fromCli, file)
  if (o.dataDir == null) throw new InvalidArgumentError('a data directory is needed: --data-dir DIR, or data-dir in the --config file')
  const logger = pinoLogger('shoal', { ...(o.logFormat != null ? { format: o.logFormat } : {}), ...(o.logLevel != null ? { level: o.logLevel } : {}) })
  const node = await createShoalNode({
    dataDir: o.dataDir,
    listen: o.listen.length > 0 ? o.listen : ['/ip4/127.0.0.1/tcp/0'],
    allow: o.allow,
    bootstrap: o.bootstrap,
    mdns: o.mdns,
    shmDir: o.shmDir,
    workers: o.workers,
    dataWorkers: o.dataWorkers,
    serveRate: o.serveRate,
    blockRequestRate: o.blockRequestRate,
    admission: { maxMemoryBytes: o.maxMemory, maxCacheBytes: o.maxCache, maxIncoming: o.maxIncoming, maxIncomingPerPeer: o.maxIncomingPerPeer, spaceMarginBytes: o.spaceMargin },
    ...(o.swarmKey != null ? { privateNetworkKey: readSwarmKey(o.swarmKey) } : {}),
    keepWorkloadsOnStop: o.keepWorkloads === true,
    ...(o.stopGrace != null ? { stopGraceMs: o.stopGrace * 1000 } : {}),
    ...(o.metrics != null ? { metrics: o.metrics } : {}),
    ...(file != null ? { migrateDefaults: migrateDefaultsOf(file) } : {}),
    drivers: [createSyntheticDriver(), createQemuDriver({ logger })],
    logger
  })
  await node.start()
  process.stdout.write(JSON.stringify({ event: 'listening', peerId: node.peerId, addrs: node.addrs(), ...(node.metricsUrl != null ? { metrics: node.metricsUrl } : {}) }) + '\n')
  await new Promise<void>((resolve) => {
    const stop = (): void => { resolve() }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
  // A stop that hangs must not keep a stopped daemon around: give it a bound, then go.
  const stopped = await Promise.race([
    node.stop().then(() => true),
    new Promise<false>(resolve => { setTimeout(() => { resolve(false) }, STOP_TIMEOUT_MS + (o.stopGrace ?? 0) * 1000).unref() })
  ])
  if (!stopped) logger.error('node did not stop within its bound; exiting anyway', { timeoutMs: STOP_TIMEOUT_MS })
  // Workloads left running hold pipes to this process: exit without waiting for them.
  if (!stopped || o.keepWorkloads === true) process.exit(stopped ? 0 : 1)
}

/** How long `shoal node` waits for a graceful stop after SIGINT/SIGTERM (beyond the migrations' grace). */
const STOP_TIMEOUT_MS = 20_000

/** The swarm key file's bytes, or an error naming the file (the node checks its format). */
function readSwarmKey (path: string): Uint8Array {
  try {
    return readFileSync(path)
  } catch (err) {
    throw new InvalidArgumentError(`cannot read the swarm key ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err })
  }
}
