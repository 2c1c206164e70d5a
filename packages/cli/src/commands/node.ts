import { readFileSync } from 'node:fs'
import { InvalidArgumentError } from '@shoal/core'
import { createShoalNode, jsonLogger } from '@shoal/node'
import { createQemuDriver } from '@shoal/driver-qemu'
import { createSyntheticDriver } from '@shoal/driver-synthetic'

/** Options of `shoal node`. */
export interface NodeCommandOptions {
  dataDir: string
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
}

/** `shoal node`: runs a peer daemon until SIGINT/SIGTERM. Prints `{peerId, addrs}` on stdout once listening. */
export async function runNode (o: NodeCommandOptions): Promise<void> {
  const logger = jsonLogger('shoal')
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
    drivers: [createSyntheticDriver(), createQemuDriver({ logger })],
    logger
  })
  await node.start()
  process.stdout.write(JSON.stringify({ event: 'listening', peerId: node.peerId, addrs: node.addrs() }) + '\n')
  await new Promise<void>((resolve) => {
    const stop = (): void => { resolve() }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
  // A stop that hangs must not keep a stopped daemon around: give it a bound, then go.
  const stopped = await Promise.race([
    node.stop().then(() => true),
    new Promise<false>(resolve => { setTimeout(() => { resolve(false) }, STOP_TIMEOUT_MS).unref() })
  ])
  if (!stopped) logger.error('node did not stop within its bound; exiting anyway', { timeoutMs: STOP_TIMEOUT_MS })
  // Workloads left running hold pipes to this process: exit without waiting for them.
  if (!stopped || o.keepWorkloads === true) process.exit(stopped ? 0 : 1)
}

/** How long `shoal node` waits for a graceful stop after SIGINT/SIGTERM. */
const STOP_TIMEOUT_MS = 20_000

/** The swarm key file's bytes, or an error naming the file (the node checks its format). */
function readSwarmKey (path: string): Uint8Array {
  try {
    return readFileSync(path)
  } catch (err) {
    throw new InvalidArgumentError(`cannot read the swarm key ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err })
  }
}
