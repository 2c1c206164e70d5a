import { spawn, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import type { ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { tempDir } from '../fixtures/temp.js'

const BIN = fileURLToPath(new URL('../../packages/cli/dist/bin.js', import.meta.url))
const shoal = (...args: string[]): { code: number | null, out: string, err: string } => {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 })
  return { code: r.status, out: r.stdout, err: r.stderr }
}

describe('shoal CLI', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  it('rejects bad arguments with a clear message and a non-zero exit', () => {
    const cases: Array<[string[], RegExp]> = [
      [['migrate', 'vm1'], /required option '--to <peer>'/],
      [['migrate', 'vm1', '--to', 'x', '--lanes', '0'], /not a positive integer/],
      [['image', 'create', 'vm1', '--memory', 'lots'], /not a size/],
      [['image', 'create', 'vm1', '--fill', 'ones'], /Allowed choices are zero, random/],
      [['status', '--node', '/nonexistent/dir'], /no node control socket/],
      [['bogus'], /unknown command 'bogus'/],
      [['node', '--data-dir', '/tmp/shoal-never-created', '--listen', 'garbage'], /bad listen address "garbage"/],
      [['node', '--data-dir', '/tmp/shoal-never-created', '--listen', '/ip4/127.0.0.1/udp/5'], /expected \/ip4\/<address>\/tcp\/<port>/],
      [['node', '--data-dir', '/tmp/shoal-never-created', '--bootstrap', '/ip4/127.0.0.1/tcp/1'], /must end in \/p2p\/<peer id>/],
      [['node', '--data-dir', '/tmp/shoal-never-created', '--allow', 'nobody'], /not a peer ID: "nobody"/],
      [['node', '--data-dir', '/tmp/shoal-never-created', '--serve-rate', 'fast'], /not a size/],
      [['node', '--data-dir', '/tmp/shoal-never-created', '--serve-rate', '0'], /serveRate must be a positive number/],
      [['image', 'hot', 'vm1', 'x'], /"x" is not a block number/],
      [['volume', 'pull'], /missing required argument 'id'/],
      [['migrate', 'vm1', '--to', 'x', '--scan-cpu', '2'], /"2" is not a share in \(0, 1\]/],
      [['migrate', 'vm1', '--to', 'x', '--max-rate', 'fast'], /not a size/],
      [['image', 'create', 'vm1', '--tracker', 'magic'], /Allowed choices are scan, cooperative/]
    ]
    for (const [args, re] of cases) {
      const r = shoal(...args)
      expect(r.code, args.join(' ')).not.toBe(0)
      expect(r.err, args.join(' ')).toMatch(re)
    }
    // Bad arguments change nothing: no data directory, no identity.
    expect(existsSync('/tmp/shoal-never-created')).toBe(false)
  })

  it('runs a node, creates and starts an image, reports status, and refuses a bad migration target', async () => {
    const dir = tempDir('cli')
    const shm = tempDir('cli-shm', '/dev/shm')
    cleanups.push(dir.cleanup, shm.cleanup)
    const node: ChildProcess = spawn(process.execPath, [BIN, 'node', '--data-dir', dir.path, '--shm-dir', shm.path, '--listen', '/ip4/127.0.0.1/tcp/0'], { stdio: ['ignore', 'pipe', 'ignore'] })
    cleanups.push(async () => {
      if (node.exitCode == null) { const e = new Promise(resolve => node.once('exit', resolve)); node.kill('SIGTERM'); await e }
    })
    const listening = await new Promise<{ peerId: string }>((resolve) => {
      createInterface({ input: node.stdout! }).once('line', l => { resolve(JSON.parse(l) as { peerId: string }) })
    })
    expect(listening.peerId).toMatch(/^12D3KooW/)
    expect(shoal('image', 'create', 'vm1', '--node', dir.path, '--memory', '1M', '--cache', '1M').code).toBe(0)
    expect(shoal('image', 'start', 'vm1', '--node', dir.path).code).toBe(0)
    const status = JSON.parse(shoal('status', '--node', dir.path, '--json').out) as { peerId: string, images: Array<{ state: string, spec: { name: string } }> }
    expect(status.peerId).toBe(listening.peerId)
    expect(status.images.map(i => [i.spec.name, i.state])).toEqual([['vm1', 'running']])
    const again = shoal('image', 'create', 'vm1', '--node', dir.path, '--memory', '1M', '--cache', '1M')
    expect(again.code).not.toBe(0)
    expect(again.err).toMatch(/already exists/)
    const bad = shoal('migrate', 'vm1', '--node', dir.path, '--to', 'not-a-peer')
    expect(bad.code).not.toBe(0)
    expect(bad.err).toMatch(/bad --to "not-a-peer".*\(ERR_INVALID_ARGUMENT\)/)
    const unknown = shoal('migrate', 'nope', '--node', dir.path, '--to', listening.peerId)
    expect(unknown.err).toMatch(/no image named "nope".*ERR_UNKNOWN_IMAGE/)
    // Replica volumes and cache metadata: clear errors, nothing changed.
    const hot = shoal('image', 'hot', 'vm1', '0', '4', '--node', dir.path)
    expect(hot.err).toMatch(/caches no volume.*ERR_INVALID_IMAGE/)
    expect(shoal('image', 'create', 'vm2', '--node', dir.path, '--cache-volume', 'nope').err).toMatch(/no volume nope.*ERR_UNKNOWN_VOLUME/)
    expect(shoal('volume', 'rm', 'nope', '--node', dir.path).err).toMatch(/no volume nope.*ERR_UNKNOWN_VOLUME/)
    expect(shoal('volume', 'pull', 'base', '--node', dir.path, '--from', 'garbage').err).toMatch(/bad peer "garbage".*ERR_INVALID_ARGUMENT/)
    expect(shoal('volume', 'pull', 'base', '--node', dir.path, '--from', listening.peerId).err).toMatch(/no reachable peer holds volume base.*ERR_UNKNOWN_VOLUME/)
    expect(shoal('volume', 'import', 'bad/id', '/etc/hostname', '--node', dir.path).err).toMatch(/invalid volume id "bad\/id": it must be 1-128 characters.*ERR_INVALID_ARGUMENT/)
    // Nothing changed: the image still runs here.
    const after = JSON.parse(shoal('status', '--node', dir.path, '--json').out) as { images: Array<{ state: string }> }
    expect(after.images.map(i => i.state)).toEqual(['running'])
  })
})
