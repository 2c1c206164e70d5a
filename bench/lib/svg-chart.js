// A small dependency-free SVG line chart for benchmark results: axes, ticks, labels, legend, title.
//
//   lineChart({
//     title, xLabel, yLabel,
//     x: { scale: 'linear' | 'log' | 'category', values?: [...] },   // category: evenly spaced values
//     y: { scale: 'linear' | 'log' },
//     series: [{ name, points: [{ x, y, hollow?, label? }] }],
//     notes: ['hollow marker = ...'],                                // extra legend lines
//     width, height
//   }) → SVG text
//
// Points with a null/undefined/non-finite y (or y ≤ 0 on a log axis) are left out; a series' line
// breaks there. `hollow` points are drawn as an open marker (e.g. "did not converge").

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf']
const MARKERS = ['circle', 'square', 'triangle', 'diamond']

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
const fmt = (v) => {
  if (v === 0) return '0'
  const a = Math.abs(v)
  if (a >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`
  if (a >= 1e3) return `${+(v / 1e3).toPrecision(3)}k`
  if (a >= 1) return String(+v.toPrecision(3))
  return String(+v.toPrecision(2))
}

/** "Nice" linear ticks covering [lo, hi]. */
function linearTicks (lo, hi, n = 6) {
  if (lo === hi) { lo -= 1; hi += 1 }
  const raw = (hi - lo) / n
  const mag = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => s >= raw)
  const start = Math.floor(lo / step) * step
  const end = Math.ceil(hi / step) * step
  const ticks = []
  for (let v = start; v <= end + step / 2; v += step) ticks.push(+v.toPrecision(12))
  return { lo: start, hi: end, ticks }
}

/** Decade ticks (with 2 and 5 when the range is short) covering [lo, hi] (both > 0). */
function logTicks (lo, hi) {
  const a = Math.floor(Math.log10(lo))
  const b = Math.ceil(Math.log10(hi))
  const e = b === a ? a + 1 : b
  const mult = e - a <= 3 ? [1, 2, 5] : [1]
  const ticks = []
  for (let k = a; k <= e; k++) for (const m of mult) { const v = m * 10 ** k; if (v >= 10 ** a && v <= 10 ** e) ticks.push(+v.toPrecision(12)) }
  return { lo: 10 ** a, hi: 10 ** e, ticks }
}

function marker (shape, cx, cy, r, color, hollow) {
  const style = hollow ? `fill="#fff" stroke="${color}" stroke-width="2"` : `fill="${color}" stroke="${color}" stroke-width="1"`
  switch (shape) {
    case 'square': return `<rect x="${cx - r}" y="${cy - r}" width="${2 * r}" height="${2 * r}" ${style}/>`
    case 'triangle': return `<polygon points="${cx},${cy - r * 1.2} ${cx - r * 1.1},${cy + r * 0.9} ${cx + r * 1.1},${cy + r * 0.9}" ${style}/>`
    case 'diamond': return `<polygon points="${cx},${cy - r * 1.3} ${cx + r * 1.1},${cy} ${cx},${cy + r * 1.3} ${cx - r * 1.1},${cy}" ${style}/>`
    default: return `<circle cx="${cx}" cy="${cy}" r="${r}" ${style}/>`
  }
}

/** Renders a line chart as an SVG document (a string). */
export function lineChart (opts) {
  const { title = '', xLabel = '', yLabel = '', series = [], notes = [] } = opts
  const width = opts.width ?? 760
  const height = opts.height ?? 480
  const xs = opts.x ?? { scale: 'linear' }
  const ys = opts.y ?? { scale: 'linear' }
  // Legend width from its longest line (about 6.6 px per character at 12 px).
  const legendW = Math.ceil(Math.max(160, ...series.map(s => String(s.name).length * 6.6 + 50), ...notes.map(n => String(n).length * 6 + 20)))
  const m = { top: 48, right: legendW + 20, bottom: 58, left: 72 }
  const pw = width - m.left - m.right
  const ph = height - m.top - m.bottom

  const usable = (p) => p.y != null && Number.isFinite(p.y) && !(ys.scale === 'log' && p.y <= 0) &&
    p.x != null && (xs.scale === 'category' || (Number.isFinite(p.x) && !(xs.scale === 'log' && p.x <= 0)))
  const pts = series.flatMap(s => s.points.filter(usable))

  // x mapping
  let xPos, xTicks
  if (xs.scale === 'category') {
    const cats = xs.values ?? [...new Set(series.flatMap(s => s.points.map(p => p.x)))]
    const step = pw / Math.max(1, cats.length)
    xPos = (v) => m.left + step * (cats.indexOf(v) + 0.5)
    xTicks = cats.map(c => ({ v: c, pos: xPos(c), label: typeof c === 'number' ? fmt(c) : String(c) }))
  } else {
    const vals = pts.map(p => p.x)
    const lo = vals.length ? Math.min(...vals) : (xs.scale === 'log' ? 1 : 0)
    const hi = vals.length ? Math.max(...vals) : (xs.scale === 'log' ? 10 : 1)
    const t = xs.scale === 'log' ? logTicks(lo, hi) : linearTicks(lo, hi)
    const f = xs.scale === 'log' ? Math.log10 : (v) => v
    xPos = (v) => m.left + (f(v) - f(t.lo)) / (f(t.hi) - f(t.lo)) * pw
    xTicks = t.ticks.map(v => ({ v, pos: xPos(v), label: fmt(v) }))
  }
  // y mapping
  const yv = pts.map(p => p.y)
  const ylo = yv.length ? Math.min(...yv) : (ys.scale === 'log' ? 1 : 0)
  const yhi = yv.length ? Math.max(...yv) : (ys.scale === 'log' ? 10 : 1)
  const yt = ys.scale === 'log' ? logTicks(ylo, yhi) : linearTicks(Math.min(0, ylo), yhi)
  const fy = ys.scale === 'log' ? Math.log10 : (v) => v
  const yPos = (v) => m.top + ph - (fy(v) - fy(yt.lo)) / (fy(yt.hi) - fy(yt.lo)) * ph

  const out = []
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`)
  out.push(`<rect width="${width}" height="${height}" fill="#fff"/>`)
  out.push(`<text x="${m.left + pw / 2}" y="26" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`)
  // grid and ticks
  for (const t of yt.ticks) {
    const y = yPos(t)
    out.push(`<line x1="${m.left}" y1="${y}" x2="${m.left + pw}" y2="${y}" stroke="#e5e5e5"/>`)
    out.push(`<line x1="${m.left - 5}" y1="${y}" x2="${m.left}" y2="${y}" stroke="#333"/>`)
    out.push(`<text x="${m.left - 8}" y="${y + 4}" text-anchor="end">${esc(fmt(t))}</text>`)
  }
  for (const t of xTicks) {
    out.push(`<line x1="${t.pos}" y1="${m.top}" x2="${t.pos}" y2="${m.top + ph}" stroke="#f0f0f0"/>`)
    out.push(`<line x1="${t.pos}" y1="${m.top + ph}" x2="${t.pos}" y2="${m.top + ph + 5}" stroke="#333"/>`)
    out.push(`<text x="${t.pos}" y="${m.top + ph + 19}" text-anchor="middle">${esc(t.label)}</text>`)
  }
  // axes
  out.push(`<line x1="${m.left}" y1="${m.top + ph}" x2="${m.left + pw}" y2="${m.top + ph}" stroke="#333"/>`)
  out.push(`<line x1="${m.left}" y1="${m.top}" x2="${m.left}" y2="${m.top + ph}" stroke="#333"/>`)
  out.push(`<text x="${m.left + pw / 2}" y="${height - 14}" text-anchor="middle" font-size="13">${esc(xLabel)}</text>`)
  out.push(`<text transform="translate(18 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle" font-size="13">${esc(yLabel)}</text>`)
  // series
  series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length]
    const shape = s.marker ?? MARKERS[i % MARKERS.length]
    const dash = s.dash != null ? ` stroke-dasharray="${s.dash}"` : ''
    let seg = []
    const flush = () => {
      if (seg.length > 1) out.push(`<polyline fill="none" stroke="${color}" stroke-width="2"${dash} points="${seg.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ')}"/>`)
      seg = []
    }
    for (const p of s.points) {
      if (!usable(p)) { flush(); continue }
      seg.push([xPos(p.x), yPos(p.y)])
    }
    flush()
    for (const p of s.points.filter(usable)) {
      out.push(`<g>${marker(shape, xPos(p.x), yPos(p.y), 5, color, p.hollow === true)}${p.label != null ? `<title>${esc(p.label)}</title>` : ''}</g>`)
    }
  })
  // legend
  const lx = m.left + pw + 24
  let ly = m.top + 6
  out.push(`<rect x="${lx - 10}" y="${ly - 14}" width="${legendW - 4}" height="${series.length * 20 + notes.length * 18 + 16}" fill="#fff" stroke="#ccc"/>`)
  series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length]
    const shape = s.marker ?? MARKERS[i % MARKERS.length]
    const dash = s.dash != null ? ` stroke-dasharray="${s.dash}"` : ''
    out.push(`<line x1="${lx}" y1="${ly}" x2="${lx + 28}" y2="${ly}" stroke="${color}" stroke-width="2"${dash}/>`)
    out.push(marker(shape, lx + 14, ly, 4.5, color, false))
    out.push(`<text x="${lx + 36}" y="${ly + 4}">${esc(s.name)}</text>`)
    ly += 20
  })
  for (const n of notes) {
    out.push(`<text x="${lx}" y="${ly + 4}" font-size="11" fill="#444">${esc(n)}</text>`)
    ly += 18
  }
  out.push('</svg>')
  return out.join('\n') + '\n'
}
