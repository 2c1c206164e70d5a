import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { MigrationReport } from '@shoal/core'
import { renderReportHtml } from '@shoal/node'
import type { MigrationRecord, MigrationSample } from '@shoal/node'
import { dumpDom, findChromium } from '../fixtures/chromium.js'
import { startNode } from '../fixtures/nodes.js'
import { tempDir } from '../fixtures/temp.js'

const MiB = 2 ** 20
const REPLICA_A = '12D3KooWReplicaAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1'
const REPLICA_B = '12D3KooWReplicaBbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2'
const ALL_CHARTS = ['chart-rounds', 'chart-lanes', 'chart-replicas', 'chart-dirty', 'chart-pause', 'chart-throttle']
const chromium = findChromium()
// In CI (.ci/run installs chromium) a missing browser is a failure, never a silent skip.
if (chromium == null && process.env.CI != null) throw new Error('CI is set but chromium is not on the PATH: .ci/run should have installed it')
const NO_CHROMIUM = 'chromium is not installed (Debian package `chromium`; .ci/run installs it)'

/** 12 progress samples, 250 ms apart, of a migration over two lanes with two replicas serving blocks. */
function samples (): MigrationSample[] {
  return Array.from({ length: 12 }, (_, i) => ({
    t: 250 * (i + 1),
    phase: i < 10 ? 'precopy' : 'switchover',
    round: i < 8 ? 1 : 2,
    bytes: i * 6 * MiB,
    rate: 24 * MiB,
    lanes: [{ id: 'lane-0', bytes: i * 4 * MiB, state: 'active' }, { id: 'lane-1', bytes: i * 2 * MiB, state: 'active', path: '/ip4/127.0.0.1 > /ip4/127.0.0.2' }],
    replicas: { [REPLICA_A]: i * MiB, [REPLICA_B]: i * 0.5 * MiB },
    ...(i > 9 ? { warnings: ['WARN_DOWNTIME_MISSED'] } : {})
  }))
}

/** A report as a post-copy migration with replicas, pacing and a missed pause target writes it. */
function report (): MigrationReport {
  const lane = (id: string, index: number, bytes: number): MigrationReport['lanes'][number] => ({ id, index, bytes, chunks: bytes / MiB, requeued: 0, rate: 0, state: 'closed' })
  return {
    image: 'vm-report',
    ok: true,
    verified: true,
    bytes: 66 * MiB,
    totalMs: 3210,
    downtimeMs: 187.4,
    rounds: [
      { round: 1, pages: 16384, blocks: 12, bytes: 60 * MiB, scanMs: 40, sendMs: 2100, final: false, bandwidth: 30 * MiB, predictedPauseMs: 260, throttle: 0 },
      { round: 2, pages: 1200, blocks: 2, bytes: 5 * MiB, scanMs: 12, sendMs: 300, final: false, dirtyRate: 2.4 * MiB, bandwidth: 17 * MiB, predictedPauseMs: 140, throttle: 0.25 },
      { round: 3, pages: 256, blocks: 0, bytes: 1 * MiB, scanMs: 9, sendMs: 80, final: true, dirtyRate: 3.2 * MiB, bandwidth: 12.5 * MiB }
    ],
    lanes: [lane('lane-0', 0, 44 * MiB), lane('lane-1', 1, 22 * MiB)],
    downtime: { pauseMs: 3, finalScanMs: 9, finalSendMs: 80, deviceStateMs: 20, verifyMs: 30, commitMs: 45 },
    pause: {
      targetMs: 150, actualMs: 187.4, predictedMs: 140, met: false, predicted: { dirtyMs: 70, fixedMs: 70 },
      parts: { pause: 3, 'final-scan': 9, 'final-send': 71, 'device-state': 20, verify: 30, commit: 54.4 }, missedBy: 37.4, culprit: 'final-send'
    },
    warnings: [{ code: 'WARN_DOWNTIME_MISSED', message: 'the pause took 187 ms, 37 ms over its 150 ms target; the final send ran longest over its share', part: 'final-send', overByMs: 37.4 }],
    convergence: { converged: true, targetMet: true, reason: 'predicted pause fits the target', maxThrottle: 0.25 },
    pacing: { baselineOpsPerSec: 5000, minOpsPerSec: 3900, backoffs: 2, lowestRate: 8 * MiB },
    cacheMode: 'postcopy',
    postcopy: { deferredBlocks: 37, deferredBytes: 37 * 256 * 1024 },
    cache: {
      volume: 'base', claimedBlocks: 48, sources: { [REPLICA_A]: { bytes: 8 * MiB, blocks: 32, corrupt: 0 }, [REPLICA_B]: { bytes: 4 * MiB, blocks: 16, corrupt: 1 } },
      dropped: {}, dedup: { zeroBytes: 0, duplicateBytes: 0, localBytes: 0 }, leftoverBlocks: 0, supersededBlocks: 0, ms: 900, done: true, sourceBlocks: 14
    }
  }
}

function record (over: Partial<MigrationRecord>): MigrationRecord {
  return {
    id: '0123456789abcdef', direction: 'out', image: 'vm-report', peer: '12D3KooWDestination', to: '/ip4/127.0.0.2/tcp/4001',
    startedAt: '2025-01-01T00:00:00.000Z', endedAt: '2025-01-01T00:00:03.210Z', state: 'succeeded', phase: 'done', bytes: 66 * MiB,
    options: { lanes: 2, downtimeTargetMs: 150 }, samples: samples(), ...over
  }
}

/** The text of a key figure's cell. */
function figure (html: string, key: string): string | undefined {
  return new RegExp(`<td data-key="${key}">([^<]*)</td>`).exec(html)?.[1]
}

/** The page's embedded data. */
function data (html: string): { charts: Record<string, unknown> } {
  const json = /<script type="application\/json" id="data">([^<]*)<\/script>/.exec(html)?.[1]
  expect(json).toBeDefined()
  return JSON.parse(json!) as { charts: Record<string, unknown> }
}

/** What the page reported after drawing, read back from Chromium's DOM. */
function renderCheck (dom: string): { rendered: number, charts: Record<string, { painted?: number, dataPixels?: number, dataUrl?: number, width?: number, error?: string }> } {
  const rendered = /<body[^>]*data-charts-rendered="(\d+)"/.exec(dom)?.[1]
  const check = /<pre id="render-check"[^>]*>([^<]*)<\/pre>/.exec(dom)?.[1]
  expect(rendered, 'the page never set data-charts-rendered').toBeDefined()
  expect(check).toBeDefined()
  return { rendered: Number(rendered), charts: JSON.parse(check!.replace(/&amp;/g, '&')) }
}

/** Every chart in `ids` drew: no error, a canvas of real size, its axes and, inside its plot area, its data. */
function expectPainted (dom: string, ids: string[]): void {
  const { rendered, charts } = renderCheck(dom)
  expect(Object.keys(charts).sort()).toEqual([...ids].sort())
  expect(rendered).toBe(ids.length)
  for (const id of ids) {
    const c = charts[id]!
    expect(c.error, id).toBeUndefined()
    expect(c.width, id).toBeGreaterThan(300)
    expect(c.painted, id).toBeGreaterThan(2000) // axes, labels, legend
    expect(c.dataPixels, id).toBeGreaterThan(300) // the datasets' colours inside the plot area
    expect(c.dataUrl, id).toBeGreaterThan(5000) // a blank canvas of that size encodes to far less
  }
}

/** No resource the page would fetch: everything it needs is inline. */
function expectNoNetwork (html: string): void {
  expect(html).not.toMatch(/<script[^>]+src=/i)
  expect(html).not.toMatch(/<link\b/i)
  expect(html).not.toMatch(/(src|href)\s*=\s*["']?(https?:)?\/\//i)
  expect(html).not.toMatch(/url\(\s*["']?(https?:)?\/\//i)
  expect(html).not.toMatch(/@import/i)
}

describe('migration report page', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  it('a succeeded migration: key figures, every chart\'s data, Chart.js inlined, nothing fetched', () => {
    const html = renderReportHtml(record({ report: report(), totalMs: 3210, downtimeMs: 187.4, verified: true }))
    expect(figure(html, 'image')).toBe('vm-report')
    expect(figure(html, 'outcome')).toBe('succeeded')
    expect(figure(html, 'downtime')).toBe('187 ms')
    expect(figure(html, 'downtime target')).toBe('150 ms: missed by 37 ms (final-send)')
    expect(figure(html, 'verified')).toBe('true')
    expect(figure(html, 'bytes sent')).toContain('66.0 MiB')
    expect(figure(html, 'rounds')).toBe('3')
    expect(figure(html, 'cache mode')).toBe('postcopy')
    expect(figure(html, 'post-copy deferred')).toBe('37 blocks (9.3 MiB)')
    expect(figure(html, 'warnings')).toContain('WARN_DOWNTIME_MISSED: the pause took 187 ms')
    expect(figure(html, 'replicas')).toContain('1 corrupt')
    expect(html).toContain('pacing back-offs: 2')
    expect(html).toContain('lowest rate set: 8.0 MiB/s')
    expect(html).toMatch(/Chart\.js v4\./)
    expectNoNetwork(html)

    const charts = data(html).charts as Record<string, { data: { labels?: string[], datasets: Array<{ label: string, data: unknown[] }> } }>
    expect(Object.keys(charts)).toEqual(ALL_CHARTS)
    for (const id of ALL_CHARTS) expect(html).toContain(`<canvas id="${id}">`)
    expect(charts['chart-rounds']!.data.labels).toEqual(['1', '2', '3 (final)'])
    expect(charts['chart-rounds']!.data.datasets[0]!.data).toEqual([60, 5, 1])
    // Lane 0 moved 4 MiB every 250 ms: 16 MiB/s; all lanes together 24 MiB/s.
    const lanes = charts['chart-lanes']!.data.datasets
    expect(lanes.map(d => d.label)).toEqual(['all lanes', 'lane lane-0', 'lane lane-1'])
    expect(lanes[1]!.data).toContainEqual({ x: 1, y: 16 })
    expect(lanes[0]!.data).toContainEqual({ x: 1, y: 24 })
    expect(charts['chart-replicas']!.data.datasets[0]!.data).toContainEqual({ x: 1, y: 4 })
    expect(charts['chart-dirty']!.data.datasets.map(d => d.data)).toEqual([[null, 2.4, 3.2], [30, 17, 12.5]])
    const pause = charts['chart-pause']!.data
    expect(pause.labels).toEqual(['actual', 'predicted', 'target'])
    expect(pause.datasets.find(d => d.label === 'final-send')!.data).toEqual([71])
    expect(pause.datasets.find(d => d.label === 'target')!.data).toEqual([null, null, 150])
    expect(charts['chart-throttle']!.data.datasets[0]!.data).toEqual([0, 25, 0])
  })

  it('a failed migration without a report, and one without samples, render without throwing; markup in messages stays text', () => {
    const failed = record({
      state: 'failed', phase: 'precopy', samples: samples().slice(0, 5),
      error: { code: 'ERR_PEER_GONE', name: 'PeerGoneError', message: 'the destination went away </script><script>alert(1)</script>' }
    })
    const html = renderReportHtml(failed)
    expect(figure(html, 'outcome')).toBe('failed')
    expect(figure(html, 'error')).toBe('ERR_PEER_GONE: the destination went away &lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;')
    expect(figure(html, 'downtime')).toBe('-')
    expect(figure(html, 'verified')).toBe('-')
    expect(figure(html, 'rounds')).toBe('-')
    expect(html.match(/<script/g)).toHaveLength(3) // the data, Chart.js, the page's own
    expect(Object.keys(data(html).charts)).toEqual(['chart-lanes', 'chart-replicas'])
    expect(html).toContain('id="chart-rounds-empty"')
    expect(html).toContain('id="chart-pause-empty"')
    expectNoNetwork(html)

    const bare = renderReportHtml(record({ state: 'failed', phase: 'handshake', bytes: 0, samples: [], endedAt: undefined, error: { code: 'ERR_UNAUTHORIZED_PEER', name: 'UnauthorizedPeerError', message: 'not allowed' } }))
    expect(figure(bare, 'total')).toBe('-')
    expect(figure(bare, 'warnings')).toBe('none')
    expect(data(bare).charts).toEqual({})
    for (const id of ALL_CHARTS) expect(bare).toContain(`id="${id}-empty"`)
  })

  it('headless Chromium draws every chart of a page with all of them, and of a failed migration\'s page', async ({ skip }) => {
    skip(chromium == null, NO_CHROMIUM)
    const dir = tempDir('report-page')
    cleanups.push(dir.cleanup)
    const full = join(dir.path, 'full.html')
    writeFileSync(full, renderReportHtml(record({ report: report() })))
    expectPainted(await dumpDom(chromium!, full), ALL_CHARTS)

    const failed = join(dir.path, 'failed.html')
    writeFileSync(failed, renderReportHtml(record({ state: 'failed', samples: samples().slice(0, 5), error: { code: 'ERR_PEER_GONE', name: 'PeerGoneError', message: 'gone' } })))
    const dom = await dumpDom(chromium!, failed)
    expectPainted(dom, ['chart-lanes', 'chart-replicas'])
    expect(dom).toContain('ERR_PEER_GONE')
  })

  it('a real migration between two nodes writes its page beside its JSON; Chromium draws its charts and shows its figures', async ({ skip }) => {
    const dataDir = tempDir('report-node')
    cleanups.push(dataDir.cleanup)
    const src = await startNode('127.0.0.1', cleanups, { dataDir: dataDir.path })
    const dst = await startNode('127.0.0.2', cleanups)
    dst.allowPeer(src.peerId)
    await src.createImage({ name: 'vm-page', memorySize: 64 * MiB, cacheSize: 16 * MiB, fill: 'random', config: { rate: 5000, recordRate: 500 } })
    await src.startImage('vm-page')
    await new Promise(resolve => setTimeout(resolve, 500))
    let id: string | undefined
    const report = await src.migrate('vm-page', dst.addrs()[0]!, { lanes: 2, onId: (i) => { id = i } })
    expect(report.ok).toBe(true)
    expect(id).toBeDefined()

    const page = join(dataDir.path, 'migrations', `${id!}.html`)
    expect(src.migrationFiles(id!)).toEqual({ json: join(dataDir.path, 'migrations', `${id!}.json`), html: page })
    expect(existsSync(page)).toBe(true)
    const html = readFileSync(page, 'utf8')
    expectNoNetwork(html)
    expect(figure(html, 'image')).toBe('vm-page')
    expect(figure(html, 'verified')).toBe('true')
    expect(figure(html, 'downtime')).toBe(`${report.downtimeMs!.toFixed(0)} ms`)
    // No replicas in this migration: a sentence, not an empty chart.
    expect(html).toContain('id="chart-replicas-empty"')
    const drawn = ALL_CHARTS.filter(c => c !== 'chart-replicas')
    expect(Object.keys(data(html).charts)).toEqual(drawn)

    skip(chromium == null, NO_CHROMIUM)
    const dom = await dumpDom(chromium!, page)
    expectPainted(dom, drawn)
    expect(dom).toContain('<td data-key="image">vm-page</td>')
    expect(dom).toContain(`<td data-key="downtime">${report.downtimeMs!.toFixed(0)} ms</td>`)
    expect(dom).toContain('<td data-key="verified">true</td>')
  })
})
