// Prints the top self-time functions of a .cpuprofile: node bench/lanes-raw/prof-top.mjs file [n]
import { readFileSync } from 'node:fs'
const prof = JSON.parse(readFileSync(process.argv[2], 'utf8'))
const n = Number(process.argv[3] ?? 25)
const byId = new Map(prof.nodes.map(x => [x.id, x]))
const self = new Map()
const dt = prof.timeDeltas
for (let i = 0; i < prof.samples.length; i++) {
  const node = byId.get(prof.samples[i])
  const cf = node.callFrame
  const key = `${cf.functionName || '(anon)'} ${cf.url.split('/node_modules/').pop().replace(/^.*\.pnpm\//, '')}:${cf.lineNumber + 1}`
  self.set(key, (self.get(key) ?? 0) + (dt[i] ?? 0))
}
const total = [...self.values()].reduce((a, b) => a + b, 0)
const idle = [...self.entries()].filter(([k]) => k.startsWith('(idle)')).reduce((a, [, v]) => a + v, 0)
console.log(`total ${(total / 1e6).toFixed(2)} s, idle ${(idle / 1e6).toFixed(2)} s`)
for (const [k, v] of [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, n)) {
  console.log(`${(100 * v / (total - idle)).toFixed(1).padStart(5)}%  ${(v / 1e3).toFixed(0).padStart(6)} ms  ${k}`)
}

// self time grouped by package / area
const groups = new Map()
for (const [k, v] of self) {
  if (k.startsWith('(idle)')) continue
  const m = k.match(/(@[^/]+\/[^/@]+|[a-z0-9-]+)@[0-9]/) ?? k.match(/node_modules\/(@[^/]+\/[^/]+|[^/]+)/)
  const g = k.startsWith('(') ? k.split(' ')[0] : m != null ? m[1] : k.includes('node:') ? 'node:' + (k.match(/node:([a-z_/]+)/)?.[1] ?? '') : k.includes('/packages/') ? 'shoal:' + k.split('/packages/')[1].split('/')[0] : k.split(' ')[0]
  groups.set(g, (groups.get(g) ?? 0) + v)
}
console.log('-- by area')
for (const [k, v] of [...groups.entries()].sort((a, b) => b[1] - a[1]).slice(0, 14)) console.log(`${(v / 1e3).toFixed(0).padStart(6)} ms  ${k}`)
