#!/usr/bin/env node
import { Command, Option } from 'commander'
import { collect, parseBlock, parsePositiveInt, parseRate, parseSize } from './args.js'
import { runDemo } from './commands/demo.js'
import { runImageCreate, runImageHot, runImageStart, runVolumeImport, runVolumePull, runVolumeRemove } from './commands/image.js'
import { runMigrate } from './commands/migrate.js'
import { runNode } from './commands/node.js'
import { runStatus } from './commands/status.js'

const program = new Command('shoal')
  .description('Shoal: peer-to-peer live migration of workloads with big local state')
  .showHelpAfterError()

const nodeOpt = (): Option => new Option('--node <dir>', 'data directory (or control socket) of the local node').default(process.env.SHOAL_NODE ?? '.shoal')

program.command('node')
  .description('run a peer daemon (one per host)')
  .requiredOption('--data-dir <dir>', 'identity, images and control socket live here')
  .option('--listen <multiaddr>', 'listen address (repeatable)', collect, [])
  .option('--allow <peerId>', 'peer allowed to migrate into this node (repeatable)', collect, [])
  .option('--bootstrap <multiaddr>', 'peer to connect to at start (repeatable)', collect, [])
  .option('--mdns', 'discover peers on the LAN by mDNS', false)
  .option('--shm-dir <dir>', 'directory for memory files (tmpfs)')
  .option('--workers <n>', 'tracker worker threads (default: cores)', parsePositiveInt)
  .option('--serve-rate <bytes/s>', 'cap on bytes per second served to peers pulling replica blocks (e.g. 50M)', parseSize)
  .action(async (o) => { await runNode(o) })

program.command('migrate <image>')
  .description('migrate an image live to another peer')
  .requiredOption('--to <peer>', 'peer ID or multiaddr ending in /p2p/<peer id>')
  .addOption(nodeOpt())
  .option('--lanes <n>', 'data lanes', parsePositiveInt, 4)
  .option('--max-rounds <n>', 'pre-copy rounds before switching over anyway', parsePositiveInt)
  .option('--downtime-target <ms>', 'pause the planner aims for', parsePositiveInt)
  .option('--json', 'print the report as JSON', false)
  .action(async (image: string, o) => { await runMigrate(image, o) })

program.command('status')
  .description('show what a node hosts')
  .addOption(nodeOpt())
  .option('--json', 'print JSON', false)
  .action(async (o) => { await runStatus(o) })

const image = program.command('image').description('manage images on a node')
image.command('create <name>')
  .description('create a synthetic workload image')
  .addOption(nodeOpt())
  .option('--memory <size>', 'memory size (e.g. 256M)', parseSize, 64 * 2 ** 20)
  .option('--cache <size>', 'cache size (e.g. 1G)', parseSize, 256 * 2 ** 20)
  .option('--block-size <size>', 'cache block size', parseSize)
  .option('--cache-volume <id>', 'the cache caches this volume (held by the node): it starts as a copy, with per-block metadata')
  .addOption(new Option('--fill <kind>', 'initial content').choices(['zero', 'random']).default('zero'))
  .option('--rate <pages/s>', 'page writes per second', parseRate, 2000)
  .option('--record-rate <records/s>', 'cache records per second', parseRate, 200)
  .action(async (name: string, o) => { await runImageCreate(name, o) })
image.command('start <name>')
  .description("start an image's workload")
  .addOption(nodeOpt())
  .action(async (name: string, o) => { await runImageStart(name, o) })

const volume = program.command('volume').description('replica volumes a node serves to allow-listed peers')
volume.command('import <id> <file>')
  .description('hash a volume file block by block and serve it as a replica')
  .addOption(nodeOpt())
  .option('--block-size <size>', 'block size (power of two, 4k..4M)', parseSize)
  .action(async (id: string, file: string, o) => { await runVolumeImport(id, file, o) })
volume.command('pull <id>')
  .description('become a replica: pull every block from the peers holding the volume, all at once')
  .addOption(nodeOpt())
  .option('--from <peers>', 'comma-separated peer IDs or multiaddrs to pull from (default: every known peer)', (v: string) => v.split(',').filter(x => x !== ''))
  .option('--json', 'print the report as JSON', false)
  .action(async (id: string, o) => { await runVolumePull(id, o) })
volume.command('rm <id>')
  .description('drop a replica volume and delete its blocks')
  .addOption(nodeOpt())
  .action(async (id: string, o) => { await runVolumeRemove(id, o) })
image.command('hot <name> <from> [to]')
  .description('mark cache blocks [from, to) of an image hot: a migration sends them early, from the source')
  .addOption(nodeOpt())
  .action(async (name: string, from: string, to: string | undefined, o) => { await runImageHot(name, parseBlock(from), to != null ? parseBlock(to) : undefined, o) })

program.command('demo')
  .description('three local peers, a live migration of a dirtying workload, and a report')
  .option('--memory <size>', 'memory size', parseSize, 256 * 2 ** 20)
  .option('--cache <size>', 'cache size', parseSize, 2 ** 30)
  .option('--rate <pages/s>', 'page writes per second while migrating', parseRate, 5000)
  .option('--record-rate <records/s>', 'cache records per second', parseRate, 200)
  .option('--lanes <n>', 'data lanes', parsePositiveInt, 4)
  .option('--keep', 'keep the temporary data directories', false)
  .action(async (o) => { await runDemo(o) })

program.parseAsync().catch((err: Error & { code?: string }) => {
  process.stderr.write(`shoal: ${err.message}${err.code != null && err.code.startsWith('ERR_') ? ` (${err.code})` : ''}\n`)
  process.exitCode = 1
})
