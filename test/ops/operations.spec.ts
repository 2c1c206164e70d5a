import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, existsSync, openSync, readFileSync, readSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { api, BIN, runNode, runNodeWith } from '../fixtures/node-process.js'
import type { NodeProc } from '../fixtures/node-process.js'
import { until } from '../fixtures/chaos.js'
import { parsePrometheus, sumOf } from '../fixtures/prometheus.js'
import { tempDir } from '../fixtures/temp.js'

const shoal = (...args: string[]): { code: number | null, out: string, err: string } => {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 })
  return { code: r.status, out: r.stdout, err: r.stderr }
}

/** A running `shoal migrate` process: its exit code and output once it ends. */
function migrateInBackground (args: string[], cleanups: Array<() => unknown>): Promise<{ code: number | null, out: string, err: string }> {
  const p = spawn(process.execPath, [BIN, 'migrate', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  cleanups.push(() => { if (p.exitCode == null) p.kill('SIGKILL') })
  let out = ''
  let err = ''
  p.stdout.on('data', (d: Buffer) => { out += d.toString() })
  p.stderr.on('data', (d: Buffer) => { err += d.toString() })
  return new Promise(resolve => { p.once('exit', (code) => { resolve({ code, out, err }) }) })
}

async function scrape (url: string): Promise<ReturnType<typeof parsePrometheus>> {
  const res = await fetch(url)
  expect(res.status).toBe(200)
  expect(res.headers.get('content-type')).toMatch(/^text\/plain/)
  return parsePrometheus(await res.text())
}

interface Summary { id: string, image: string, state: string, phase: string, error?: { code: string } }

describe('operating a node: config file, metrics, logs, migrations you can find and stop', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  /** Node B (plain flags) and node A (from a config file, metrics on), A allowed into B. */
  async function pair (aExtra: string[] = []): Promise<{ a: NodeProc, b: NodeProc, config: string }> {
    const [da, sa, db, sb] = [tempDir('ops-a'), tempDir('ops-a-shm', '/dev/shm'), tempDir('ops-b'), tempDir('ops-b-shm', '/dev/shm')]
    cleanups.push(da.cleanup, sa.cleanup, db.cleanup, sb.cleanup)
    const b = await runNode(db.path, sb.path, '127.0.0.1', cleanups)
    const cfg = tempDir('ops-cfg')
    cleanups.push(cfg.cleanup)
    const config = join(cfg.path, 'node.yaml')
    writeFileSync(config, [
      `data-dir: ${da.path}`,
      `shm-dir: ${sa.path}`,
      'listen: [/ip4/127.0.0.2/tcp/0]',
      'metrics: 127.0.0.1:0',
      'log-format: pretty # overridden by the flag below',
      'max-incoming: 2',
      'migrate:',
      '  downtime-target: 450',
      '  max-rate: 24M'
    ].join('\n') + '\n')
    const a = await runNodeWith(['--config', config, '--log-format', 'json', ...aExtra], da.path, sa.path, cleanups)
    expect((await api(b.dir, 'POST', '/allow', { peerId: a.peerId })).status).toBe(200)
    expect(shoal('image', 'create', 'vm', '--node', a.dir, '--memory', '64M', '--cache', '1M', '--rate', '500', '--fill', 'random').code).toBe(0)
    expect(shoal('image', 'start', 'vm', '--node', a.dir).code).toBe(0)
    return { a, b, config }
  }

  it('a node run from a config file is scraped during a migration; the migration is listed, its page written, its log lines carry its id', async () => {
    const { a, b, config } = await pair()
    expect(shoal('config', 'check', config).out).toMatch(/OK[\s\S]*migrate\.downtimeTargetMs: 450/)
    const url = a.listening.metrics as string
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/)
    const idle = await scrape(url)
    expect(sumOf(idle, 'shoal_migrations_running')).toBe(0)
    // libp2p's own metrics are on the same page.
    expect(idle.some(s => s.name.startsWith('libp2p_'))).toBe(true)

    const run = migrateInBackground(['vm', '--node', a.dir, '--to', `${b.addrs[0]!}`, '--json'], cleanups)
    let seenRunning = false
    let scrapes = 0
    const result = await Promise.race([run, (async () => {
      while (true) {
        const s = await scrape(url)
        scrapes++
        if (sumOf(s, 'shoal_migrations_running') === 1) seenRunning = true
        await new Promise(resolve => setTimeout(resolve, 150))
      }
    })()])
    expect(result.code, result.err).toBe(0)
    expect(seenRunning, `${scrapes} scrapes`).toBe(true)
    const report = JSON.parse(result.out) as { ok: boolean, bytes: number, downtimeMs: number, rounds: unknown[], pause: { targetMs: number } }
    expect(report.ok).toBe(true)
    // The config file's migration defaults applied (the request did not set them).
    expect(report.pause.targetMs).toBe(450)
    // The id was told on stderr, with how to cancel it.
    const id = /shoal: migration ([0-9a-f]{16})/.exec(result.err)?.[1]
    expect(id).toBeDefined()

    const after = await scrape(url)
    expect(sumOf(after, 'shoal_migrations_total', { outcome: 'succeeded' })).toBe(1)
    expect(sumOf(after, 'shoal_migrations_running')).toBe(0)
    expect(sumOf(after, 'shoal_migration_downtime_seconds_count')).toBe(1)
    expect(sumOf(after, 'shoal_migration_downtime_seconds_sum')).toBeCloseTo(report.downtimeMs / 1000, 3)
    expect(sumOf(after, 'shoal_migration_lane_bytes_total')).toBe(report.bytes)
    expect(sumOf(after, 'shoal_migration_rounds_total')).toBe(report.rounds.length)
    expect(sumOf(after, 'shoal_process_resident_memory_bytes')).toBeGreaterThan(0)

    // Listed, with its report and page.
    const list = JSON.parse(shoal('migrations', '--node', a.dir, '--json').out) as Summary[]
    expect(list.map(m => [m.id, m.image, m.state])).toEqual([[id, 'vm', 'succeeded']])
    expect(shoal('migrations', '--node', a.dir).out).toMatch(new RegExp(`${id!}\\s+vm\\s+succeeded`))
    const page = shoal('report', id!.slice(0, 6), '--node', a.dir)
    expect(page.code, page.err).toBe(0)
    expect(page.out.trim()).toBe(join(a.dir, 'migrations', `${id!}.html`))
    expect(readFileSync(page.out.trim(), 'utf8')).toContain('<html')
    const record = (await api(a.dir, 'GET', `/migrations/${id!}`)).body as { samples: unknown[], report: { ok: boolean }, options: Record<string, unknown> }
    expect(record.report.ok).toBe(true)
    expect(record.samples.length).toBeGreaterThan(0)
    expect(record.options).toMatchObject({ downtimeTargetMs: 450, maxRate: 24 * 2 ** 20 })

    // Peers, connected.
    const peers = JSON.parse(shoal('peers', '--node', a.dir, '--json').out) as Array<{ peerId: string, connected: boolean }>
    expect(peers.find(p => p.peerId === b.peerId)?.connected).toBe(true)

    // JSON log lines (the flag beat the file's `pretty`), the migration's own carrying its id.
    const lines = a.stderr().trim().split('\n').map(l => JSON.parse(l) as { level: string, msg: string, migration?: string })
    expect(lines.filter(l => l.msg === 'migration out').map(l => l.migration)).toEqual([id])
    expect(lines.find(l => l.msg === 'migration out ended')?.migration).toBe(id)
  })

  it('cancel stops a running migration: the workload stays on the source; unknown and malformed ids are told apart', async () => {
    const { a, b } = await pair()
    const run = migrateInBackground(['vm', '--node', a.dir, '--to', b.addrs[0]!, '--max-rate', '2M'], cleanups)
    const running = await until('the migration to run', async () => (JSON.parse(shoal('migrations', '--node', a.dir, '--json').out) as Summary[]).find(m => m.state === 'running'), 20_000)
    const c = shoal('cancel', running.id.slice(0, 8), '--node', a.dir)
    expect(c.code, c.err).toBe(0)
    expect(c.out).toMatch(new RegExp(`cancelling migration ${running.id} of vm`))
    const r = await run
    expect(r.code).not.toBe(0)
    expect(r.err).toMatch(/cancelled by the operator.*ERR_ABORTED/)
    const list = JSON.parse(shoal('migrations', '--node', a.dir, '--json').out) as Summary[]
    expect(list.map(m => [m.id, m.state, m.error?.code])).toEqual([[running.id, 'cancelled', 'ERR_ABORTED']])
    const status = (await api(a.dir, 'GET', '/status')).body as { images: Array<{ spec: { name: string }, state: string }> }
    expect(status.images.map(i => [i.spec.name, i.state])).toEqual([['vm', 'running']])
    expect(((await api(b.dir, 'GET', '/status')).body as { images: unknown[] }).images).toEqual([])
    // Cancelling it again, an unknown id, a malformed one: each its own error.
    expect(shoal('cancel', running.id, '--node', a.dir).err).toMatch(/is not running \(it cancelled\).*ERR_INVALID_ARGUMENT/)
    const unknown = shoal('cancel', 'abcdef01', '--node', a.dir)
    expect(unknown.err).toMatch(/no migration abcdef01 on this node.*ERR_UNKNOWN_MIGRATION/)
    expect(unknown.code).toBe(3)
    expect(shoal('report', 'zz', '--node', a.dir).err).toMatch(/a migration id is 4 to 16 hex digits.*ERR_INVALID_ARGUMENT/)
  })

  it('SIGTERM lets a running migration finish within --stop-grace, then the node exits', async () => {
    const { a, b } = await pair(['--stop-grace', '60'])
    const run = migrateInBackground(['vm', '--node', a.dir, '--to', b.addrs[0]!, '--max-rate', '12M', '--json'], cleanups)
    await until('pre-copy', async () => (JSON.parse(shoal('migrations', '--node', a.dir, '--json').out) as Summary[]).find(m => m.state === 'running' && m.phase === 'precopy'), 20_000)
    const exited = new Promise<number | null>(resolve => a.proc.once('exit', resolve))
    a.proc.kill('SIGTERM')
    const r = await run
    expect(r.code, r.err).toBe(0)
    expect((JSON.parse(r.out) as { ok: boolean }).ok).toBe(true)
    expect(await exited).toBe(0)
    const onB = ((await api(b.dir, 'GET', '/status')).body as { images: Array<{ spec: { name: string }, state: string }> }).images
    expect(onB.map(i => [i.spec.name, i.state])).toEqual([['vm', 'running']])
    expect(a.stderr()).toMatch(/stopping: waiting for migrations out to finish/)
  })
})

describe('shoal image verify', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  it('checks a cache against its volume and a stopped workload by its own check; a corrupt block or page fails it (exit 1)', async () => {
    const d = tempDir('verify')
    const s = tempDir('verify-shm', '/dev/shm')
    cleanups.push(d.cleanup, s.cleanup)
    const n = await runNode(d.path, s.path, '127.0.0.1', cleanups)
    const vol = join(d.path, 'base.vol')
    writeFileSync(vol, randomBytes(64 * 65536))
    expect(shoal('volume', 'import', 'base', vol, '--node', n.dir, '--block-size', '64k').code).toBe(0)
    expect(shoal('image', 'create', 'vm', '--node', n.dir, '--memory', '4M', '--cache-volume', 'base').code).toBe(0)
    const good = shoal('image', 'verify', 'vm', '--node', n.dir)
    expect(good.code, good.err).toBe(0)
    expect(good.out).toMatch(/vm: OK\n {2}cache-blocks: ok - 64 clean blocks match volume base[\s\S]*workload: ok - every page stamp and record verified/)
    const rec = ((await api(n.dir, 'GET', '/status')).body as { images: Array<{ spec: { memory: { path: string }, cache: { path: string } } }> }).images[0]!.spec
    // One byte of cache block 5 and one byte of a data page change behind the workload's back.
    const flip = (path: string, at: number): void => { const fd = openSync(path, 'r+'); const b = Buffer.alloc(1); readSync(fd, b, 0, 1, at); b[0] = b[0]! ^ 0xff; writeSync(fd, b, 0, 1, at); closeSync(fd) }
    flip(rec.cache.path, 5 * 65536 + 100)
    flip(rec.memory.path, 3 * 4096 + 17)
    const bad = shoal('image', 'verify', 'vm', '--node', n.dir, '--json')
    expect(bad.code).toBe(1)
    const v = JSON.parse(bad.out) as { ok: boolean, checks: Array<{ check: string, ok?: boolean, detail: string }> }
    expect(v.ok).toBe(false)
    expect(v.checks.find(c => c.check === 'cache-blocks')).toMatchObject({ ok: false, detail: expect.stringMatching(/1 of 64 clean blocks differ from volume base: blocks 5$/) })
    expect(v.checks.find(c => c.check === 'workload')).toMatchObject({ ok: false, detail: expect.stringMatching(/1 bad pages/) })
    // A running synthetic workload cannot check itself: told, not failed.
    expect(shoal('image', 'create', 'live', '--node', n.dir, '--memory', '4M', '--cache', '1M').code).toBe(0)
    expect(shoal('image', 'start', 'live', '--node', n.dir).code).toBe(0)
    const live = shoal('image', 'verify', 'live', '--node', n.dir)
    expect(live.code).toBe(0)
    expect(live.out).toMatch(/live: NOT CHECKED\n {2}workload: skipped - the workload runs: stop it/)
    expect(shoal('image', 'verify', 'nope', '--node', n.dir).err).toMatch(/ERR_UNKNOWN_IMAGE/)
  })
})

describe('config files and request bodies are checked by schema, naming the key', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  it('shoal config check: accepts a good file, names unknown keys, wrong types and bad YAML', () => {
    const d = tempDir('cfg')
    cleanups.push(d.cleanup)
    const write = (name: string, text: string): string => { const p = join(d.path, name); writeFileSync(p, text); return p }
    const good = shoal('config', 'check', write('good.yaml', 'data-dir: /var/lib/shoal\nserve-rate: 50M\nallow: []\nmigrate:\n  cache-mode: postcopy\n'))
    expect(good.code, good.err).toBe(0)
    expect(good.out).toMatch(/serve-rate: 52428800/)
    const cases: Array<[string, RegExp]> = [
      ['max-incomming: 3\n', /unknown key "max-incomming"/],
      ['max-incoming: four\n', /max-incoming: .*expected number/i],
      ['serve-rate: fast\n', /serve-rate: .*"fast" is not a size/],
      ['migrate:\n  lanes: 0\n', /migrate\.lanes: /],
      ['migrate:\n  bogus: 1\n', /unknown key "migrate\.bogus"/],
      ['metrics: 0.0.0.0\n', /metrics: must be HOST:PORT/],
      ['listen: [a\n', /not valid YAML/],
      ['- just\n- a list\n', /expected object/i]
    ]
    for (const [text, re] of cases) {
      const r = shoal('config', 'check', write('bad.yaml', text))
      expect(r.code, text).toBe(2)
      expect(r.err, text).toMatch(re)
      expect(r.err, text).toMatch(/ERR_INVALID_ARGUMENT/)
    }
    expect(shoal('config', 'check', join(d.path, 'missing.yaml')).err).toMatch(/cannot read the config file .*ENOENT/)
    // A node refuses to start on a bad file, before it creates anything.
    const bad = shoal('node', '--config', write('node.yaml', `data-dir: ${join(d.path, 'never')}\nmdns: yes please\n`))
    expect(bad.code).toBe(2)
    expect(bad.err).toMatch(/mdns: /)
    expect(existsSync(join(d.path, 'never'))).toBe(false)
  })

  it('the control API answers an unknown key or a wrong type with 400 naming it', async () => {
    const d = tempDir('cfg-api')
    const s = tempDir('cfg-api-shm', '/dev/shm')
    cleanups.push(d.cleanup, s.cleanup)
    const n = await runNode(d.path, s.path, '127.0.0.1', cleanups)
    const cases: Array<[string, string, unknown, RegExp]> = [
      ['POST', '/migrate', { image: 'vm', to: n.peerId, lane: 2 }, /unknown key "lane"/],
      ['POST', '/migrate', { image: 'vm', to: n.peerId, autoConverge: 'yes' }, /autoConverge: .*expected boolean/i],
      ['POST', '/migrate', { image: 'vm', to: n.peerId, cacheMode: 'later' }, /cacheMode: /],
      ['POST', '/images', { name: 'vm', memorySize: '64M', cacheSize: 0 }, /memorySize: .*expected number/i],
      ['POST', '/images', { name: 'vm', memorySize: 1 << 20, cacheSize: 0, color: 'red' }, /unknown key "color"/],
      ['POST', '/allow', { peer: n.peerId }, /peerId: |unknown key "peer"/],
      ['POST', '/images/vm/hot', { from: -1, to: 2 }, /from: /]
    ]
    for (const [method, path, body, re] of cases) {
      const r = await api(d.path, method, path, body)
      expect(r.status, JSON.stringify(body)).toBe(400)
      expect(r.body.error.code).toBe('ERR_INVALID_ARGUMENT')
      expect(r.body.error.message, JSON.stringify(body)).toMatch(re)
    }
    expect(((await api(d.path, 'GET', '/status')).body as { images: unknown[] }).images).toEqual([])
  })
})
