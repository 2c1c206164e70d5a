// Helpers shared by the benchmarks: forked peers, temp dirs, a TCP baseline, tables, JSON output.
import { fork, spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { createServer, connect } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
export const resultsDir = join(here, '..', 'results')

/** Forks a peer process; returns an RPC function and a cleanup. */
export function forkPeer (execArgv = []) {
  const child = fork(join(here, 'peer.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv })
  let next = 1
  const waiting = new Map()
  child.on('message', (m) => { const w = waiting.get(m.id); waiting.delete(m.id); if (m.ok) w.resolve(m.value); else w.reject(new Error(m.error)) })
  child.on('exit', (code) => { for (const w of waiting.values()) w.reject(new Error(`peer exited ${code}`)) })
  const rpc = (cmd, args) => new Promise((resolve, reject) => { const id = next++; waiting.set(id, { resolve, reject }); child.send({ id, cmd, args }) })
  return { rpc, child, kill: () => { if (child.exitCode == null) child.kill('SIGKILL') } }
}

/** A temp dir removed at exit (also on failure). */
export function tempDir (prefix, base = tmpdir()) {
  const p = mkdtempSync(join(base, `shoal-bench-${prefix}-`))
  process.on('exit', () => rmSync(p, { recursive: true, force: true }))
  return p
}

/** Plain node:net single TCP stream between two processes: MB/s for `bytes` in 1 MiB writes. */
export async function tcpBaseline (bytes, host = '127.0.0.1') {
  const script = `
    const net = require('node:net'); const [host, port, total] = process.argv.slice(1);
    const buf = Buffer.alloc(1 << 20, 7); let sent = 0;
    const s = net.connect(Number(port), host, () => {
      const pump = () => { while (sent < Number(total)) { sent += buf.length; if (!s.write(buf)) { s.once('drain', pump); return } } s.end() };
      pump() })`
  const server = createServer()
  await new Promise(resolve => server.listen(0, host, resolve))
  const port = server.address().port
  const done = new Promise((resolve) => {
    server.on('connection', (sock) => {
      let got = 0; const t0 = performance.now()
      sock.on('data', (d) => { got += d.length })
      sock.on('end', () => resolve({ got, ms: performance.now() - t0 }))
    })
  })
  const child = spawn(process.execPath, ['-e', script, host, String(port), String(bytes)], { stdio: 'inherit' })
  const { got, ms } = await done
  child.kill()
  server.close()
  return got / (ms / 1000) / 1e6
}

/** Median and spread of numbers. */
export function stats (xs) {
  const s = [...xs].sort((a, b) => a - b)
  const med = s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
  return { median: med, min: s[0], max: s[s.length - 1] }
}

/** Prints an aligned table. */
export function printTable (rows) {
  const cols = Object.keys(rows[0])
  const w = cols.map(c => Math.max(c.length, ...rows.map(r => String(r[c]).length)))
  const line = (vals) => vals.map((v, i) => String(v).padStart(w[i])).join('  ')
  console.log(line(cols))
  console.log(w.map(n => '-'.repeat(n)).join('  '))
  for (const r of rows) console.log(line(cols.map(c => r[c])))
}

/** Writes bench/results/<name>.json. */
export function writeResults (name, data) {
  mkdirSync(resultsDir, { recursive: true })
  const path = join(resultsDir, `${name}.json`)
  writeFileSync(path, JSON.stringify(data, null, 2) + '\n')
  console.log(`\nwrote ${path}`)
}
