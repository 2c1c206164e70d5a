import { spawn, spawnSync } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { request } from 'node:http'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { exitCodeOf, NAME_RULE } from '@shoal/core'
import { loadOrCreateIdentity } from '@shoal/libp2p'
import { CONTROL_SOCKET } from '@shoal/node'
import { tempDir } from '../fixtures/temp.js'

const BIN = fileURLToPath(new URL('../../packages/cli/dist/bin.js', import.meta.url))
interface Run { code: number | null, out: string, err: string }
const shoal = (...args: string[]): Run => {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 })
  return { code: r.status, out: r.stdout, err: r.stderr }
}
/** Runs the CLI without blocking the test (the nodes it talks to are children of this process). */
const shoalAsync = async (...args: string[]): Promise<Run> => await new Promise((resolve) => {
  const p = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''; let err = ''
  p.stdout.setEncoding('utf8').on('data', (c: string) => { out += c })
  p.stderr.setEncoding('utf8').on('data', (c: string) => { err += c })
  p.once('exit', (code) => { resolve({ code, out, err }) })
})

/** A loopback TCP port nothing listens on (bound, then released). */
async function deadPort (): Promise<number> {
  const s = createServer()
  await new Promise<void>(resolve => s.listen(0, '127.0.0.1', resolve))
  const port = (s.address() as { port: number }).port
  await new Promise(resolve => s.close(resolve))
  return port
}

/** Calls a node's control API directly (the checks must hold for every client, not only the CLI). */
async function api (socket: string, method: string, path: string, body?: unknown): Promise<{ status: number, body: { error?: { code: string, message: string } } }> {
  return await new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, method, path, headers: { 'content-type': 'application/json' } }, (res) => {
      let buf = ''
      res.setEncoding('utf8').on('data', (c: string) => { buf += c }).on('end', () => { resolve({ status: res.statusCode ?? 0, body: JSON.parse(buf) }) })
    })
    req.on('error', reject)
    if (body !== undefined) req.write(JSON.stringify(body))
    req.end()
  })
}

describe('shoal CLI: errors a user can act on', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  /** Starts `shoal node` with its own temp dirs; returns its peer id, address and data dir. */
  async function startNode (...extra: string[]): Promise<{ proc: ChildProcess, peerId: string, addr: string, dir: string, socket: string }> {
    const dir = tempDir('cli-err')
    const shm = tempDir('cli-err-shm', '/dev/shm')
    cleanups.push(dir.cleanup, shm.cleanup)
    const proc = spawn(process.execPath, [BIN, 'node', '--data-dir', dir.path, '--shm-dir', shm.path, '--listen', '/ip4/127.0.0.1/tcp/0', ...extra], { stdio: ['ignore', 'pipe', 'ignore'] })
    cleanups.push(async () => {
      if (proc.exitCode == null && proc.signalCode == null) { const e = new Promise(resolve => proc.once('exit', resolve)); proc.kill('SIGTERM'); await e }
    })
    const l = await new Promise<{ peerId: string, addrs: string[] }>((resolve, reject) => {
      proc.once('exit', (code) => { reject(new Error(`node exited with ${code}`)) })
      createInterface({ input: proc.stdout! }).once('line', line => { resolve(JSON.parse(line) as { peerId: string, addrs: string[] }) })
    })
    return { proc, peerId: l.peerId, addr: l.addrs[0]!, dir: dir.path, socket: join(dir.path, CONTROL_SOCKET) }
  }

  it('refuses bad values with one line naming the option and its rule, before asking any node', () => {
    const usage = exitCodeOf('ERR_INVALID_ARGUMENT')
    const cases: Array<[string[], RegExp]> = [
      // An image with 8 MiB blocks could never migrate (the codec refuses it): refused at create.
      [['image', 'create', 'vm1', '--block-size', '8M'], /option '--block-size <size>' argument '8M' is invalid\. the block size must be a power of two from 4 KiB to 4 MiB \(got 8 MiB\)/],
      [['volume', 'import', 'v1', '/etc/hostname', '--block-size', '3000'], /--block-size.*power of two from 4 KiB to 4 MiB \(got 3000 B\)/],
      [['migrate', 'vm1', '--to', 'x', '--lanes', '300'], /--lanes.*from 1 to 256 \(got 300\)/],
      [['image', 'create', 'vm1', '--memory', 'lots'], /option '--memory <size>' argument 'lots' is invalid/],
      [['image', 'create', 'vm1', '--memory', '4k'], /--memory must be at least 8 KiB for the synthetic workload.*\(ERR_INVALID_ARGUMENT\)/],
      [['image', 'create', 'vm1', '--memory', '5000'], /--memory must be a multiple of the page size \(4 KiB\) \(got 5000 B\).*\(ERR_INVALID_ARGUMENT\)/],
      [['image', 'create', 'vm1', '--cache', '100k', '--block-size', '64k'], /--cache must be a multiple of the block size \(64 KiB\) \(got 100 KiB\)/],
      [['image', 'create', 'bad/name'], /invalid image name "bad\/name": it must be 1-128 characters.*\(ERR_INVALID_ARGUMENT\)/],
      [['image', 'start', '.hidden'], /invalid image name "\.hidden".*not starting with a dot.*\(ERR_INVALID_ARGUMENT\)/],
      [['migrate', 'a b', '--to', 'x'], /invalid image name "a b".*\(ERR_INVALID_ARGUMENT\)/],
      [['volume', 'rm', '..'], /invalid volume id "\.\."/],
      [['migrate', 'vm1', '--to', 'garbage'], /bad --to "garbage": not a peer ID; expected a peer ID \(12D3KooW…\) or a multiaddr ending in \/p2p\/<peer id>.*\(ERR_INVALID_ARGUMENT\)/],
      [['migrate', 'vm1', '--to', '/ip4/127.0.0.1/tcp/1'], /bad --to .*does not end in \/p2p\/<peer id>/],
      [['migrate', 'vm1', '--to', '/ip4/nonsense'], /bad --to "\/ip4\/nonsense": not a valid multiaddr; expected/]
    ]
    for (const [args, re] of cases) {
      const r = shoal(...args, '--node', '/nonexistent/shoal-node')
      const what = args.join(' ')
      expect(r.err, what).toMatch(re)
      expect(r.code, what).toBe(usage)
      // One line, no help text, no parser internals (multibase, the workload's own flags).
      expect(r.err.trimEnd().split('\n'), what).toHaveLength(1)
      expect(r.err, what).not.toMatch(/Usage:|multibase|Non-base|--memory-size|ERR_INTERNAL/)
    }
  })

  it('a node refuses what the CLI refuses, with the same rules, naming the field', async () => {
    const a = await startNode()
    const tiny = await api(a.socket, 'POST', '/images', { name: 'tiny', memorySize: 4096, cacheSize: 0 })
    expect(tiny.status).toBe(400)
    expect(tiny.body.error?.code).toBe('ERR_INVALID_IMAGE')
    expect(tiny.body.error?.message).toMatch(/memory size must be at least 8 KiB for the synthetic workload/)
    expect(tiny.body.error?.message).not.toMatch(/--memory-size/)
    const big = await api(a.socket, 'POST', '/images', { name: 'big', memorySize: 2 ** 20, cacheSize: 2 ** 24, blockSize: 8 * 2 ** 20 })
    expect([big.status, big.body.error?.code]).toEqual([400, 'ERR_INVALID_ARGUMENT'])
    expect(big.body.error?.message).toMatch(/blockSize must be a power of two from 4 KiB to 4 MiB \(got 8 MiB\)/)
    const name = await api(a.socket, 'POST', '/images/bad%2Fname/start')
    expect([name.status, name.body.error?.code]).toEqual([400, 'ERR_INVALID_ARGUMENT'])
    expect(name.body.error?.message).toContain(NAME_RULE)
    const lanes = await api(a.socket, 'POST', '/migrate', { image: 'vm1', to: a.peerId, lanes: 1000 })
    expect([lanes.status, lanes.body.error?.code]).toEqual([400, 'ERR_INVALID_ARGUMENT'])
    // Nothing was created.
    const status = JSON.parse(shoal('status', '--node', a.dir, '--json').out) as { images: unknown[] }
    expect(status.images).toEqual([])
  })

  it('an unknown peer and an unreachable address are ERR_PEER_UNREACHABLE naming the peer and the addresses tried; nothing is left in known peers', async () => {
    const a = await startNode()
    expect(shoal('image', 'create', 'vm1', '--node', a.dir, '--memory', '1M', '--cache', '1M').code).toBe(0)
    const other = tempDir('cli-err-id')
    cleanups.push(other.cleanup)
    const stranger = (await loadOrCreateIdentity(other.path)).publicKey.toString()
    const peerExit = exitCodeOf('ERR_PEER_UNREACHABLE')

    const unknown = await shoalAsync('migrate', 'vm1', '--node', a.dir, '--to', stranger)
    expect(unknown.err).toMatch(new RegExp(`peer ${stranger} is unreachable: no address is known for it \\(give one: --to /ip4/.*\\(ERR_PEER_UNREACHABLE\\)`))
    expect(unknown.code).toBe(peerExit)

    const port = await deadPort()
    const dead = await shoalAsync('migrate', 'vm1', '--node', a.dir, '--to', `/ip4/127.0.0.1/tcp/${port}/p2p/${stranger}`)
    expect(dead.err).toMatch(new RegExp(`peer ${stranger} is unreachable at /ip4/127.0.0.1/tcp/${port} .*\\(ERR_PEER_UNREACHABLE\\)`))
    expect(dead.err).not.toMatch(/ERR_INTERNAL/)
    expect(dead.code).toBe(peerExit)

    const status = JSON.parse(shoal('status', '--node', a.dir, '--json').out) as { peers: Array<{ peerId: string }>, images: Array<{ state: string }> }
    expect(status.peers.map(p => p.peerId)).not.toContain(stranger)
    // The image was not touched.
    expect(status.images.map(i => i.state)).toEqual(['stopped'])
  })

  it('dials the address given in --to even when the peer is already connected, and forgets the address after a failed dial', async () => {
    const a = await startNode()
    const b = await startNode('--bootstrap', `${a.addr}`, '--allow', a.peerId)
    expect(shoal('image', 'create', 'vm1', '--node', a.dir, '--memory', '1M', '--cache', '1M').code).toBe(0)
    // Wait until b's bootstrap dial has connected the two nodes.
    const connected = async (): Promise<boolean> => {
      const s = JSON.parse((await shoalAsync('status', '--node', a.dir, '--json')).out) as { peers: Array<{ peerId: string, connected: boolean }> }
      return s.peers.some(p => p.peerId === b.peerId && p.connected)
    }
    for (let i = 0; i < 100 && !(await connected()); i++) await new Promise(resolve => setTimeout(resolve, 100))
    expect(await connected()).toBe(true)

    const port = await deadPort()
    const wrong = await shoalAsync('migrate', 'vm1', '--node', a.dir, '--to', `/ip4/127.0.0.1/tcp/${port}/p2p/${b.peerId}`)
    expect(wrong.err).toMatch(new RegExp(`peer ${b.peerId} is unreachable at /ip4/127.0.0.1/tcp/${port} .*\\(ERR_PEER_UNREACHABLE\\)`))
    const s = JSON.parse(shoal('status', '--node', a.dir, '--json').out) as { peers: Array<{ peerId: string, addrs: string[] }>, images: Array<{ state: string }> }
    const known = s.peers.find(p => p.peerId === b.peerId)
    expect(known?.addrs.join(' ') ?? '').not.toContain(`/tcp/${port}`)
    expect(s.images.map(i => i.state)).toEqual(['stopped'])
  })

  it('says the node went away (ERR_NODE_GONE) when its own node dies mid-command', async () => {
    const a = await startNode()
    const b = await startNode('--allow', a.peerId)
    expect(shoal('image', 'create', 'vm1', '--node', a.dir, '--memory', '64M', '--cache', '1M', '--fill', 'random').code).toBe(0)
    // A slow migration (1 MB/s) of a stopped image: no workload process outlives the node.
    const cli = spawn(process.execPath, [BIN, 'migrate', 'vm1', '--node', a.dir, '--to', `${b.addr}`, '--max-rate', '1M', '--lanes', '1'], { stdio: ['ignore', 'pipe', 'pipe'] })
    cleanups.push(() => { if (cli.exitCode == null) cli.kill('SIGKILL') })
    let err = ''
    cli.stderr.setEncoding('utf8')
    const progressed = new Promise<void>((resolve) => { cli.stderr.on('data', (c: string) => { err += c; if (/%|MB|round/i.test(err)) resolve() }) })
    const exited = new Promise<number | null>(resolve => cli.once('exit', resolve))
    await progressed
    a.proc.kill('SIGKILL')
    const code = await exited
    expect(err).toMatch(new RegExp(`the node at ${a.socket.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} went away.*\\(ERR_NODE_GONE\\)`))
    expect(err).not.toMatch(/shoal: aborted/)
    expect(code).toBe(exitCodeOf('ERR_NODE_GONE'))
    // The socket file the dead node left behind: a clear "nobody listens" error.
    const after = shoal('status', '--node', a.dir)
    expect(after.err).toMatch(/no node is listening on .*\(ERR_NO_NODE\)/)
  })
})
