#!/usr/bin/env node
import { Command, CommanderError, Option } from 'commander'
import { errorCode, exitCodeOf, InvalidArgumentError } from '@shoal/core'
import { collect, parseBlock, parseBlockSize, parseLanes, parsePositiveInt, parseRate, parseShare, parseSize } from './args.js'
import { runDemo } from './commands/demo.js'
import { runImageCheck, runImageCreate, runImageHot, runImageRemove, runImageStart, runVolumeImport, runVolumePull, runVolumeRemove } from './commands/image.js'
import { runMigrate } from './commands/migrate.js'
import { runNode } from './commands/node.js'
import { runStatus } from './commands/status.js'

const program = new Command('shoal')
  .description('Shoal: peer-to-peer live migration of workloads with big local state')
  // A bad option value gets one line naming the option and its rule, not the whole help; and
  // commander's errors come back here, to leave with the exit code of ERR_INVALID_ARGUMENT.
  .showHelpAfterError(false)
  .exitOverride()

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
  .option('--lanes <n>', 'data lanes (1..256)', parseLanes, 4)
  .option('--max-rounds <n>', 'pre-copy rounds before switching over anyway', parsePositiveInt)
  .option('--downtime-target <ms>', 'pause the planner aims for', parsePositiveInt)
  .option('--no-auto-converge', 'never throttle the workload, even if its dirty set stops shrinking')
  .option('--max-rate <bytes/s>', 'bandwidth cap over all lanes (e.g. 50M)', parseSize)
  .option('--lane-rate <bytes/s>', 'bandwidth cap per lane', parseSize)
  .option('--scan-cpu <share>', "share of a core each scanner may use while the workload runs (0..1]", parseShare)
  .option('--no-adaptive-pacing', "do not back off when the workload's ops/s drop")
  .option('--json', 'print the report as JSON', false)
  .action(async (image: string, o) => { await runMigrate(image, o) })

program.command('status')
  .description('show what a node hosts')
  .addOption(nodeOpt())
  .option('--json', 'print JSON', false)
  .action(async (o) => { await runStatus(o) })

const image = program.command('image').description('manage images on a node')
image.command('create <name>')
  .description('create an image: a synthetic workload (default) or a QEMU VM (--driver qemu)')
  .addOption(nodeOpt())
  .addOption(new Option('--driver <name>', 'what runs the workload').choices(['synthetic', 'qemu']).default('synthetic'))
  .option('--memory <size>', 'memory size (e.g. 256M)', parseSize, 64 * 2 ** 20)
  .option('--cache <size>', 'cache size (e.g. 1G)', parseSize, 256 * 2 ** 20)
  .option('--block-size <size>', 'cache block size (power of two, 4k..4M)', parseBlockSize)
  .option('--cache-volume <id>', 'the cache caches this volume (held by the node): it starts as a copy, with per-block metadata')
  .addOption(new Option('--tracker <kind>', "how migrations find changed pages: scan (any writer) or cooperative (the workload marks its writes); default: the driver's choice").choices(['scan', 'cooperative']))
  .addOption(new Option('--fill <kind>', 'initial content (qemu: of the cache disk)').choices(['zero', 'random']).default('zero'))
  .option('--rate <pages/s>', 'page writes per second (synthetic workload, or the test guest)', parseRate, 2000)
  .option('--record-rate <records/s>', 'cache records per second (synthetic workload, or the test guest)', parseRate, 200)
  .option('--kernel <path>', 'qemu: guest kernel')
  .option('--initrd <path>', 'qemu: guest initramfs')
  .option('--append <cmdline>', 'qemu: kernel command line (default console=ttyS0)')
  .option('--cpus <n>', 'qemu: vCPUs', parsePositiveInt)
  .addOption(new Option('--accel <kind>', 'qemu: accelerator (auto probes KVM by booting the kernel under it)').choices(['tcg', 'kvm', 'auto']))
  .option('--heartbeat <text>', 'qemu: text the guest prints on its serial console regularly (the arrival check waits for it)')
  .option('--qemu-binary <path>', 'qemu: QEMU binary (default qemu-system-x86_64)')
  .option('--test-guest', "qemu: run Shoal's test guest (built from Debian packages on first use)", false)
  .option('--config <json>', 'extra driver config as a JSON object')
  .action(async (name: string, o) => { await runImageCreate(name, o) })
image.command('check <name>')
  .description("ask the test guest of a running QEMU image to check every RAM stamp and disk record it wrote")
  .addOption(nodeOpt())
  .option('--json', 'print JSON', false)
  .action(async (name: string, o) => { await runImageCheck(name, o) })
image.command('start <name>')
  .description("start an image's workload")
  .addOption(nodeOpt())
  .action(async (name: string, o) => { await runImageStart(name, o) })

const volume = program.command('volume').description('replica volumes a node serves to allow-listed peers')
volume.command('import <id> <file>')
  .description('hash a volume file block by block and serve it as a replica')
  .addOption(nodeOpt())
  .option('--block-size <size>', 'block size (power of two, 4k..4M)', parseBlockSize)
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
image.command('rm <name>')
  .description("stop an image's workload and delete the image")
  .addOption(nodeOpt())
  .action(async (name: string, o) => { await runImageRemove(name, o) })
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
  .option('--lanes <n>', 'data lanes (1..256)', parseLanes, 4)
  .option('--keep', 'keep the temporary data directories', false)
  .option('--vm', "a QEMU VM (Shoal's test guest) instead of the synthetic workload; installs QEMU and builds the guest on first use", false)
  .action(async (o) => { await runDemo(o) })

program.parseAsync().catch((err: unknown) => {
  if (err instanceof CommanderError) {
    // Commander printed its one line already; help and --version are not failures.
    process.exitCode = err.exitCode === 0 ? 0 : exitCodeOf(InvalidArgumentError.code)
    return
  }
  // One line: the message and the stable code (docs/ERRORS.md says what to do about each).
  const code = errorCode(err)
  process.stderr.write(`shoal: ${err instanceof Error ? err.message : String(err)} (${code})\n`)
  process.exitCode = exitCodeOf(code)
})
