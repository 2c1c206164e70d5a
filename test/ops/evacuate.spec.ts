import { spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import type { EvacuationReport, MigrationSummary } from '@shoal/node'
import { api, BIN, runNode } from '../fixtures/node-process.js'
import type { NodeProc } from '../fixtures/node-process.js'
import { until } from '../fixtures/chaos.js'
import { tempDir } from '../fixtures/temp.js'

/** Runs the CLI to its end (async: the nodes it talks to run in this process's children). */
async function shoal (...args: string[]): Promise<{ code: number | null, out: string, err: string }> {
  const p = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  p.stdout.on('data', (d: Buffer) => { out += d.toString() })
  p.stderr.on('data', (d: Buffer) => { err += d.toString() })
  const code = await new Promise<number | null>(resolve => p.once('exit', resolve))
  return { code, out, err }
}

interface Status { images: Array<{ spec: { name: string }, state: string, from?: string }> }
const imagesOf = async (n: NodeProc): Promise<Array<[string, string]>> =>
  ((await api(n.dir, 'GET', '/status')).body as Status).images.map(i => [i.spec.name, i.state] as [string, string]).sort()

describe('shoal evacuate: every image off a host, placed where it fits, retried elsewhere', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  async function node (name: string, ip: string, extra: string[] = []): Promise<NodeProc> {
    const d = tempDir(`evac-${name}`)
    const s = tempDir(`evac-${name}-shm`, '/dev/shm')
    cleanups.push(d.cleanup, s.cleanup)
    return await runNode(d.path, s.path, ip, cleanups, extra)
  }
  async function image (n: NodeProc, name: string, memory: string, start = true): Promise<void> {
    const c = await shoal('image', 'create', name, '--node', n.dir, '--memory', memory, '--cache', '1M', '--rate', '300', '--fill', 'random')
    expect(c.code, c.err).toBe(0)
    if (start) expect((await shoal('image', 'start', name, '--node', n.dir)).code).toBe(0)
  }

  it('moves every image, skips a peer that refuses this host, retries an image a target refused on another, under one rate', async () => {
    const [a, b, c, d] = await Promise.all([node('a', '127.0.0.1'), node('b', '127.0.0.2'), node('c', '127.0.0.3'), node('d', '127.0.0.4')])
    // B and C allow A; D does not (it refuses the capacity question, so it gets nothing).
    for (const t of [b, c]) expect((await api(t.dir, 'POST', '/allow', { peerId: a.peerId })).status).toBe(200)
    // B already hosts an image named `big`: A's `big` (placed first: largest) is refused there at
    // the handshake and must be retried on C. B's own `big` must stay as it was.
    await image(b, 'big', '8M', false)
    await image(a, 'big', '48M')
    await image(a, 'small1', '16M')
    await image(a, 'small2', '16M', false)

    const r = await shoal('evacuate', '--node', a.dir, '--to', `${b.addrs[0]!},${c.addrs[0]!}`, '--to', d.addrs[0]!, '--max-parallel', '2', '--max-rate', '40M', '--json')
    expect(r.code, r.err).toBe(0)
    const report = JSON.parse(r.out) as EvacuationReport
    expect(report.ok).toBe(true)
    expect(report.maxParallel).toBe(2)
    expect(report.maxRate).toBe(40 * 2 ** 20)
    expect(report.images.map(i => i.image)).toEqual(['big', 'small1', 'small2'])
    for (const i of report.images) {
      expect(i, i.image).toMatchObject({ ok: true, verified: true })
      expect([b.peerId, c.peerId]).toContain(i.peer)
      expect(i.attempts.at(-1)).toMatchObject({ peer: i.peer, ok: true })
      expect(i.bytes).toBeGreaterThan(0)
    }
    const big = report.images[0]!
    expect(big.peer).toBe(c.peerId)
    expect(big.attempts.map(t => [t.peer, t.ok, t.error?.code])).toEqual([[b.peerId, false, 'ERR_IMAGE_EXISTS'], [c.peerId, true, undefined]])
    // D was asked and refused: it took nothing, and says why.
    expect(report.candidates.find(x => x.peerId === d.peerId)?.excluded?.code).toBe('ERR_UNAUTHORIZED_PEER')
    expect(report.candidates.find(x => x.peerId === b.peerId)?.capacity?.maxIncomingPerPeer).toBe(2)
    // Where everything is now.
    expect(await imagesOf(a)).toEqual([])
    const onB = await imagesOf(b)
    const onC = await imagesOf(c)
    expect(onB).toContainEqual(['big', 'stopped'])
    const moved = [...onB.filter(([n]) => n !== 'big'), ...onC].sort()
    // Running images run on their new host; the stopped one arrived stopped (nothing started it).
    expect(moved).toEqual([['big', 'running'], ['small1', 'running'], ['small2', 'stopped']])
    expect(await imagesOf(d)).toEqual([])
    // The summary was written; each migration is in the node's list (the refused one as failed).
    expect(report.file).toMatch(/evacuations\/[0-9a-f]{16}\.json$/)
    expect(JSON.parse(readFileSync(report.file!, 'utf8'))).toMatchObject({ id: report.id, ok: true })
    const list = (await api(a.dir, 'GET', '/migrations')).body as MigrationSummary[]
    expect(list.map(m => m.state).sort()).toEqual(['failed', 'succeeded', 'succeeded', 'succeeded'])
    expect(new Set(list.map(m => m.id))).toEqual(new Set(report.images.flatMap(i => i.attempts.map(t => t.migration))))

    // An empty host: nothing to do, said plainly (and the progress view went to stderr).
    const again = await shoal('evacuate', '--node', a.dir, '--to', b.addrs[0]!)
    expect(again.code, again.err).toBe(0)
    expect(again.out).toMatch(/Evacuation [0-9a-f]{16}: OK — 0 of 0 images moved/)
  })

  it('places by what each peer can take: an image no target has room for stays here, running, and the exit status says so', async () => {
    const b = await node('b2', '127.0.0.2', ['--max-memory', '32M'])
    // --any: the peers A knows; it learns B from its bootstrap list.
    const a = await node('a2', '127.0.0.1', ['--bootstrap', b.addrs[0]!])
    expect((await api(b.dir, 'POST', '/allow', { peerId: a.peerId })).status).toBe(200)
    await until('A to know B', async () => ((await api(a.dir, 'GET', '/peers')).body as Array<{ peerId: string }>).some(p => p.peerId === b.peerId) ? true : undefined)
    await image(a, 'huge', '48M')
    await image(a, 'fits', '16M')
    const r = await shoal('evacuate', '--node', a.dir, '--any')
    expect(r.code).toBe(1)
    expect(r.out).toMatch(/INCOMPLETE — 1 of 2 images moved/)
    expect(r.out).toMatch(/huge\s+NOT MOVED\s+-\s+0 .*ERR_NO_TARGET: no peer can take image huge: .*above the peer's maximum \(32 MiB\)/)
    expect(r.out).toMatch(/fits\s+moved/)
    expect(r.err).toMatch(/evacuation [0-9a-f]{8} .* moved/)
    expect(await imagesOf(a)).toEqual([['huge', 'running']])
    expect(await imagesOf(b)).toEqual([['fits', 'running']])
  })

  it('refuses bad requests before anything moves, naming the flag or key', async () => {
    const a = await node('a3', '127.0.0.1')
    await image(a, 'vm', '8M', false)
    const none = await shoal('evacuate', '--node', a.dir)
    expect(none.code).toBe(2)
    expect(none.err).toMatch(/--to PEER\[,PEER...\] or --any.*ERR_INVALID_ARGUMENT/)
    expect((await shoal('evacuate', '--node', a.dir, '--any', '--to', a.peerId)).err).toMatch(/--to or --any, not both/)
    expect((await shoal('evacuate', '--node', a.dir, '--to', 'garbage')).err).toMatch(/--to.*ERR_INVALID_ARGUMENT/)
    expect((await shoal('evacuate', '--node', a.dir, '--any', '--max-parallel', '0')).code).toBe(2)
    // No peer known: nothing can take it, told as such.
    const lonely = await shoal('evacuate', '--node', a.dir, '--any')
    expect(lonely.code).toBe(7)
    expect(lonely.err).toMatch(/no peer can take images from this node \(no peer is known\).*ERR_NO_TARGET/)
    const bad = await api(a.dir, 'POST', '/evacuate', { any: true, maxParalel: 2 })
    expect(bad.status).toBe(400)
    expect(bad.body.error.message).toMatch(/unknown key "maxParalel"/)
    expect((await api(a.dir, 'POST', '/evacuate', { to: [a.peerId], any: true })).status).toBe(400)
    expect(await imagesOf(a)).toEqual([['vm', 'stopped']])
    expect(existsSync(`${a.dir}/evacuations`)).toBe(false)
  })
})
