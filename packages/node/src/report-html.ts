import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import type { MigrationReport, PausePart, RoundStats } from '@shoal/core'
import type { MigrationRecord, MigrationSample } from './migrations.js'

const MiB = 2 ** 20
/** Samples closer than this are merged for throughput: a phase-change sample a few ms after another would make a spike. */
const MIN_SAMPLE_GAP_MS = 200
/** The pause's parts in order, each with its colour (Chart.js's default palette has too few to tell nine bars apart). */
const PAUSE_PARTS: Array<[PausePart, string]> = [
  ['pause', '#4e79a7'], ['final-scan', '#f28e2b'], ['final-send', '#e15759'], ['device-state', '#76b7b2'], ['verify', '#59a14f'], ['commit', '#edc948']
]

/** A Chart.js configuration, as plain JSON (the page passes it to `new Chart` as it is). */
interface ChartConfig {
  type: 'bar' | 'line'
  data: { labels?: string[], datasets: Array<Record<string, unknown>> }
  options: Record<string, unknown>
}

/** One section of the page: a chart, or the sentence saying why there is none. */
interface Section { id: string, title: string, chart?: ChartConfig, empty?: string, after?: string }

let chartLibrary: string | undefined

/** Chart.js's UMD build, read once and made safe to inline: the page needs no network. */
function chartJs (): string {
  if (chartLibrary == null) {
    // The package exports only its entry points; the UMD build sits beside the CommonJS one.
    const main = createRequire(import.meta.url).resolve('chart.js')
    chartLibrary = readFileSync(join(dirname(main), 'chart.umd.js'), 'utf8').replace(/<\/script/gi, '<\\/script')
  }
  return chartLibrary
}

/** Escapes text for HTML. */
function esc (s: unknown): string {
  return String(s).replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!)
}

const round2 = (n: number): number => Math.round(n * 100) / 100
const mib = (bytes: number): string => `${(bytes / MiB).toFixed(1)} MiB`
const ms = (n: number | undefined): string => n == null ? '-' : `${n.toFixed(0)} ms`
/** Short label of a peer id: its last 8 characters. */
const shortPeer = (peer: string): string => peer.length > 10 ? `…${peer.slice(-8)}` : peer

/** The key figures, in the order a reader wants them. */
function figures (record: MigrationRecord): Array<[string, string]> {
  const r = record.report
  const totalMs = r?.totalMs ?? record.totalMs ?? (record.endedAt != null ? Date.parse(record.endedAt) - Date.parse(record.startedAt) : undefined)
  const pause = r?.pause
  const rows: Array<[string, string]> = [
    ['migration', record.id],
    ['image', record.image],
    ['to', `${record.to} (peer ${record.peer})`],
    ['outcome', record.state]
  ]
  if (record.error != null) rows.push(['error', `${record.error.code}: ${record.error.message}`])
  rows.push(
    ['started', record.startedAt],
    ['total', totalMs != null ? `${(totalMs / 1000).toFixed(2)} s` : '-'],
    ['downtime', ms(r?.downtimeMs ?? record.downtimeMs)],
    ['downtime target', pause == null
      ? '-'
      : `${ms(pause.targetMs)}: ${pause.met ? 'met' : `missed by ${ms(pause.missedBy ?? pause.actualMs - pause.targetMs)}${pause.culprit != null ? ` (${pause.culprit})` : ''}`}`],
    ['verified', r != null ? String(r.verified) : (record.verified != null ? String(record.verified) : '-')],
    ['bytes sent', `${mib(r?.bytes ?? record.bytes)} (${r?.bytes ?? record.bytes} bytes)`],
    ['rounds', r != null ? String(r.rounds.length) : '-'],
    ['cache mode', r?.cacheMode ?? '-']
  )
  if (r?.postcopy != null) rows.push(['post-copy deferred', `${r.postcopy.deferredBlocks} blocks (${mib(r.postcopy.deferredBytes)})`])
  const sources = Object.entries(r?.cache?.sources ?? {})
  if (sources.length > 0) rows.push(['replicas', sources.map(([p, s]) => `${shortPeer(p)}: ${mib(s.bytes)} in ${s.blocks} blocks${s.corrupt > 0 ? `, ${s.corrupt} corrupt` : ''}`).join('; ')])
  rows.push(['warnings', warnings(record)], ['options', Object.entries(record.options).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ') || '-'])
  return rows
}

/** The report's warnings as sentences; a migration that ended without a report has only their codes, from its samples. */
function warnings (record: MigrationRecord): string {
  const ws = record.report?.warnings
  if (ws != null && ws.length > 0) return ws.map(w => `${w.code}: ${w.message}`).join('; ')
  const codes = record.samples.at(-1)?.warnings ?? []
  return codes.length > 0 ? codes.join(', ') : 'none'
}

/** Bytes per second of each series between samples (at least {@link MIN_SAMPLE_GAP_MS} apart), in MiB/s over seconds. */
function throughput (samples: MigrationSample[], pick: (s: MigrationSample) => Record<string, number>): Map<string, Array<{ x: number, y: number }>> {
  const out = new Map<string, Array<{ x: number, y: number }>>()
  let prev = samples[0]
  for (const s of samples.slice(1)) {
    if (prev == null || (s.t - prev.t < MIN_SAMPLE_GAP_MS && s !== samples.at(-1)) || s.t <= prev.t) continue
    const before = pick(prev)
    for (const [key, bytes] of Object.entries(pick(s))) {
      const points = out.get(key) ?? []
      points.push({ x: round2(s.t / 1000), y: round2(Math.max(0, bytes - (before[key] ?? 0)) / ((s.t - prev.t) / 1000) / MiB) })
      out.set(key, points)
    }
    prev = s
  }
  return out
}

/** Common options: no animation (drawn at once, so a headless browser sees the final picture). */
function options (yTitle: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    animation: false,
    responsive: true,
    maintainAspectRatio: false,
    plugins: { legend: { position: 'bottom' } },
    ...extra,
    scales: { y: { beginAtZero: true, title: { display: true, text: yTitle } }, ...(extra.scales as object | undefined) }
  }
}

const timeAxis = { x: { type: 'linear', title: { display: true, text: 'seconds since start' } } }

/** Lines over time, one per series (the unnamed one, the total, dashed). */
function linesOverTime (series: Map<string, Array<{ x: number, y: number }>>, label: (key: string) => string): ChartConfig {
  const datasets = [...series].map(([key, data]) => ({ label: label(key), data, pointRadius: 0, borderWidth: 2, ...(key === '' ? { borderDash: [6, 4] } : {}) }))
  return { type: 'line', data: { datasets }, options: options('MiB/s', { scales: timeAxis }) }
}

/** A chart over the rounds, one label per round. */
function perRound (rounds: RoundStats[], type: ChartConfig['type'], datasets: Array<Record<string, unknown>>, yTitle: string, scales: Record<string, unknown> = {}): ChartConfig {
  const labels = rounds.map(x => x.final ? `${x.round} (final)` : String(x.round))
  return { type, data: { labels, datasets }, options: options(yTitle, { scales: { x: { title: { display: true, text: 'round' } }, ...scales } }) }
}

const msAxis = { ms: { position: 'right', beginAtZero: true, grid: { drawOnChartArea: false }, title: { display: true, text: 'ms' } } }
const perSecond = (n: number | undefined): number | null => n != null ? round2(n / MiB) : null

/** The page's sections, in order: rounds, lanes, replicas, dirty rate, pause, throttle and pacing. */
function sections (record: MigrationRecord): Section[] {
  const r = record.report
  const rounds = r?.rounds ?? []
  const target = r?.pause?.targetMs
  const lanes = throughput(record.samples, s => ({ '': s.bytes, ...Object.fromEntries(s.lanes.map(l => [l.id, l.bytes])) }))
  const replicas = throughput(record.samples, s => s.replicas ?? {})
  const byRound = (chart: () => ChartConfig): Pick<Section, 'chart' | 'empty'> =>
    rounds.length > 0 ? { chart: chart() } : { empty: 'No rounds were recorded: the migration ended before its first round.' }
  return [
    {
      id: 'chart-rounds',
      title: 'Rounds: bytes sent and duration',
      ...byRound(() => perRound(rounds, 'bar', [
        { label: 'MiB sent', data: rounds.map(x => round2(x.bytes / MiB)), yAxisID: 'y' },
        { type: 'line', label: 'round (ms)', data: rounds.map(x => x.sendMs), yAxisID: 'ms' },
        { type: 'line', label: 'scan (ms)', data: rounds.map(x => x.scanMs), yAxisID: 'ms', borderDash: [4, 3] }
      ], 'MiB', msAxis))
    },
    {
      id: 'chart-lanes',
      title: 'Throughput per lane',
      ...(lanes.size === 0 ? { empty: 'Too few progress samples were recorded to draw throughput.' } : { chart: linesOverTime(lanes, k => k === '' ? 'all lanes' : `lane ${k}`) })
    },
    {
      id: 'chart-replicas',
      title: 'Throughput per replica',
      ...(replicas.size === 0 ? { empty: 'No replica served this migration: the source sent every block itself.' } : { chart: linesOverTime(replicas, k => `replica ${shortPeer(k)}`) })
    },
    {
      id: 'chart-dirty',
      title: 'Dirty rate against bandwidth, per round',
      ...byRound(() => perRound(rounds, 'line', [
        { label: 'dirty rate (MiB/s)', data: rounds.map(x => perSecond(x.dirtyRate)), spanGaps: true },
        { label: 'bandwidth (MiB/s)', data: rounds.map(x => perSecond(x.bandwidth)), spanGaps: true }
      ], 'MiB/s'))
    },
    pauseSection(r),
    {
      id: 'chart-throttle',
      title: 'Throttle and predicted pause, per round',
      ...byRound(() => perRound(rounds, 'bar', [
        { label: 'throttle (%)', data: rounds.map(x => round2((x.throttle ?? 0) * 100)), yAxisID: 'y' },
        { type: 'line', label: 'predicted pause (ms)', data: rounds.map(x => x.predictedPauseMs ?? null), yAxisID: 'ms', spanGaps: true },
        ...(target != null ? [{ type: 'line', label: 'pause target (ms)', data: rounds.map(() => target), yAxisID: 'ms', borderDash: [6, 4], pointRadius: 0 }] : [])
      ], 'throttle %', { y: { beginAtZero: true, max: 100, title: { display: true, text: 'throttle %' } }, ...msAxis })),
      after: pacingList(r)
    }
  ]
}

/** The pause as one stacked bar of its parts, beside the prediction and the target when the report has its verdict. */
function pauseSection (r: MigrationReport | undefined): Section {
  const section = { id: 'chart-pause', title: 'The pause, part by part' }
  const parts = pauseParts(r)
  if (parts == null) return { ...section, empty: 'No pause: the migration ended before the switchover.' }
  const v = r?.pause
  const bar = (label: string, data: Array<number | null>, color: string): Record<string, unknown> => ({ label, data, stack: 'pause', backgroundColor: color, borderColor: color })
  const datasets = PAUSE_PARTS.map(([p, color]) => bar(p, [round2(parts[p])], color))
  if (v != null) {
    datasets.push(bar('predicted dirty part', [null, round2(v.predicted.dirtyMs)], '#9c755f'), bar('predicted fixed part', [null, round2(v.predicted.fixedMs)], '#ff9da7'),
      bar('target', [null, null, v.targetMs], '#b07aa1'))
  }
  return {
    ...section,
    chart: {
      type: 'bar',
      data: { labels: v != null ? ['actual', 'predicted', 'target'] : ['actual'], datasets },
      options: options('', { indexAxis: 'y', scales: { x: { stacked: true, beginAtZero: true, title: { display: true, text: 'ms' } }, y: { stacked: true } } })
    }
  }
}

/** The pause's parts: the verdict's, or, from an older report, derived from `downtime`. */
function pauseParts (r: MigrationReport | undefined): Record<PausePart, number> | undefined {
  if (r?.pause != null) return r.pause.parts
  const d = r?.downtime
  if (d == null) return undefined
  return { pause: d.pauseMs ?? 0, 'final-scan': d.finalScanMs, 'final-send': Math.max(0, d.finalSendMs - d.finalScanMs), 'device-state': d.deviceStateMs ?? 0, verify: d.verifyMs, commit: d.commitMs }
}

/** Pacing and convergence, as a list under the throttle chart. */
function pacingList (r: MigrationReport | undefined): string {
  const items: string[] = []
  const p = r?.pacing
  if (p != null) {
    items.push(`pacing back-offs: ${p.backoffs}`, `lowest rate set: ${p.lowestRate != null ? `${(p.lowestRate / MiB).toFixed(1)} MiB/s` : 'never cut'}`,
      `workload ops/s: ${p.baselineOpsPerSec.toFixed(0)} before, ${p.minOpsPerSec.toFixed(0)} at the lowest`)
  } else {
    items.push('pacing: off (the workload did not report its progress)')
  }
  const c = r?.convergence
  if (c != null) {
    items.push(`pre-copy ended: ${c.reason} (${c.converged ? 'converged' : 'did not converge'}, predicted pause ${c.targetMet ? 'within' : 'over'} the target), highest throttle ${(c.maxThrottle * 100).toFixed(0)} %`)
  }
  return `<ul id="pacing">${items.map(i => `<li>${esc(i)}</li>`).join('')}</ul>`
}

/** Draws every chart, then records in the page what it painted (a headless browser reads that back). */
const PAGE_SCRIPT = `
const data = JSON.parse(document.getElementById('data').textContent)
const check = {}
let drawn = 0
for (const [id, config] of Object.entries(data.charts)) {
  const canvas = document.getElementById(id)
  try {
    const chart = new Chart(canvas, config)
    const ctx = canvas.getContext('2d')
    const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data
    let painted = 0
    for (let i = 3; i < px.length; i += 4) if (px[i] > 0) painted++
    // Pixels of a dataset's colour in the plot area: axes, grid and text are grey, the legend is outside it.
    const a = chart.chartArea, k = chart.currentDevicePixelRatio
    const area = ctx.getImageData(a.left * k, a.top * k, (a.right - a.left) * k, (a.bottom - a.top) * k).data
    let dataPixels = 0
    for (let i = 0; i < area.length; i += 4) {
      if (area[i + 3] > 0 && Math.max(area[i], area[i + 1], area[i + 2]) - Math.min(area[i], area[i + 1], area[i + 2]) > 60) dataPixels++
    }
    check[id] = { width: canvas.width, height: canvas.height, painted, dataPixels, dataUrl: canvas.toDataURL().length }
    drawn++
  } catch (err) {
    check[id] = { error: String(err) }
  }
}
document.getElementById('render-check').textContent = JSON.stringify(check)
document.body.dataset.chartsRendered = String(drawn)
`

const STYLE = `body{font:14px/1.4 system-ui,sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;color:#222}
table{border-collapse:collapse}th,td{text-align:left;padding:.2rem .8rem .2rem 0;vertical-align:top}th{color:#666;font-weight:normal}
section{margin-top:2rem}.chart{position:relative;height:300px}.empty{color:#666;font-style:italic}`

/**
 * The page of a finished migration: one self-contained HTML file (Chart.js inlined, its data as
 * JSON, no network access needed to view it): the key figures, then a chart per aspect (rounds,
 * lanes, replicas, dirty rate against bandwidth, the pause's parts, throttle and pacing).
 */
export function renderReportHtml (record: MigrationRecord): string {
  const all = sections(record)
  const charts = Object.fromEntries(all.filter(s => s.chart != null).map(s => [s.id, s.chart]))
  const data = JSON.stringify({ id: record.id, image: record.image, state: record.state, charts }).replace(/</g, '\\u003c')
  const body = all.map(s => `<section><h2>${esc(s.title)}</h2>${s.chart != null
    ? `<div class="chart"><canvas id="${s.id}"></canvas></div>`
    : `<p class="empty" id="${s.id}-empty">${esc(s.empty)}</p>`}${s.after ?? ''}</section>`).join('\n')
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Shoal migration ${esc(record.id)}: ${esc(record.image)}</title>
<style>${STYLE}</style></head>
<body>
<h1>Migration of ${esc(record.image)}: ${esc(record.state)}</h1>
<table id="figures">${figures(record).map(([k, v]) => `<tr><th>${esc(k)}</th><td data-key="${esc(k)}">${esc(v)}</td></tr>`).join('')}</table>
${body}
<pre id="render-check" hidden></pre>
<script type="application/json" id="data">${data}</script>
<script>${chartJs()}</script>
<script>${PAGE_SCRIPT}</script>
</body></html>
`
}
